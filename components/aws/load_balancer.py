"""An AWS fleet's front: the security groups (the LB takes `allowed_cidrs`; nodes take service and readiness
traffic from the LB only, peer-cache traffic from each other), the ALB, the target group that routes on the agent's
readiness and keeps a leaving target's requests for the drain timeout, the HTTP listener, and with a certificate
the HTTPS listener (TLS 1.2/1.3) while HTTP redirects. With `service.gateway`, the listeners forward to the
gateways' target group instead, and nodes take service and readiness traffic from the gateways too."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from spotstack.components.aws import node
from spotstack.components.gateway import GATEWAY_PORT
from spotstack.components.spec import FleetSpec

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass
class LoadBalancer:
    security_group: aws.ec2.SecurityGroup
    node_security_group: aws.ec2.SecurityGroup
    alb: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    listener: aws.lb.Listener
    https_listener: aws.lb.Listener | None
    gateway_security_group: aws.ec2.SecurityGroup | None = None
    gateway_target_group: aws.lb.TargetGroup | None = None


def declare(
    name: str,
    spec: FleetSpec,
    vpc_id: pulumi.Input[str],
    subnet_ids: pulumi.Input[list[str]],
    certificate: pulumi.Input[str] | None,
    child: pulumi.ResourceOptions,
) -> LoadBalancer:
    svc = spec.service
    # Security: the LB takes the world (or allowed CIDRs); nodes take service and readiness
    # traffic only from the LB, and peer-cache traffic only from each other.
    region = spec.region
    lb_sg = aws.ec2.SecurityGroup(
        f"{name}-lb-sg", region=region, vpc_id=vpc_id, description=f"{name} load balancer", opts=child
    )
    node_sg = aws.ec2.SecurityGroup(
        f"{name}-node-sg", region=region, vpc_id=vpc_id, description=f"{name} GPU nodes", opts=child
    )
    for i, cidr in enumerate(svc.allowed_cidrs):
        # With a certificate, 80 stays open for the redirect to 443.
        for suffix, port in [("", 80)] + ([("-https", 443)] if certificate is not None else []):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-lb-in-{i}{suffix}",
                region=spec.region,
                security_group_id=lb_sg.id,
                cidr_ipv4=cidr,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                opts=child,
            )
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-lb-out",
        region=spec.region,
        security_group_id=lb_sg.id,
        referenced_security_group_id=node_sg.id,
        ip_protocol="tcp",
        from_port=0,
        to_port=65535,
        opts=child,
    )
    for port_name, port in (("service", svc.port), ("readiness", node.AGENT_PORT)):
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-node-in-{port_name}",
            region=spec.region,
            security_group_id=node_sg.id,
            referenced_security_group_id=lb_sg.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            opts=child,
        )
    gw_sg = _gateway_security_group(name, spec, vpc_id, lb_sg, node_sg, child) if svc.gateway else None
    if spec.model_cache is not None:
        peer = spec.model_cache.peer_port
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-node-in-peers",
            region=spec.region,
            security_group_id=node_sg.id,
            referenced_security_group_id=node_sg.id,
            ip_protocol="tcp",
            from_port=peer,
            to_port=peer,
            opts=child,
        )
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-node-out",
        region=spec.region,
        security_group_id=node_sg.id,
        cidr_ipv4="0.0.0.0/0",
        ip_protocol="-1",
        opts=child,
    )

    lb = aws.lb.LoadBalancer(
        f"{name}-alb",
        region=spec.region,
        load_balancer_type="application",
        internal=not svc.public,
        security_groups=[lb_sg.id],
        subnets=subnet_ids,
        # A request that computes before it answers (no bytes for a while) must outlast the longest generation.
        idle_timeout=svc.max_request_s,
        opts=child,
    )
    tg = aws.lb.TargetGroup(
        f"{name}-tg",
        region=spec.region,
        port=svc.port,
        protocol="HTTP",
        target_type="instance",
        vpc_id=vpc_id,
        # The ALB keeps a deregistered target's open requests this long: the drain timeout.
        deregistration_delay=svc.drain_timeout,
        health_check=_ready_check(svc.readiness_path, str(node.AGENT_PORT)),
        opts=child,
    )
    gw_tg = _gateway_target_group(name, spec, vpc_id, child) if svc.gateway else None
    front = gw_tg if gw_tg is not None else tg
    forward = aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=front.arn)
    redirect = aws.lb.ListenerDefaultActionArgs(
        type="redirect",
        redirect=aws.lb.ListenerDefaultActionRedirectArgs(protocol="HTTPS", port="443", status_code="HTTP_301"),
    )
    listener = aws.lb.Listener(
        f"{name}-http",
        region=spec.region,
        load_balancer_arn=lb.arn,
        port=80,
        protocol="HTTP",
        default_actions=[forward if certificate is None else redirect],
        opts=child,
    )
    https_listener: aws.lb.Listener | None = None
    if certificate is not None:
        https_listener = aws.lb.Listener(
            f"{name}-https",
            region=spec.region,
            load_balancer_arn=lb.arn,
            port=443,
            protocol="HTTPS",
            certificate_arn=certificate,
            # TLS 1.3 and 1.2 only, forward secrecy: AWS's recommended policy for ALBs.
            ssl_policy=TLS_POLICY,
            default_actions=[forward],
            opts=child,
        )
    if gw_tg is not None:
        # The nodes' target group stays with the load balancer, which health-checks its targets only while a
        # listener routes to it (the controller reads their health): a rule no client request matches, a header
        # whose value is a secret kept in the stack's state.
        secret = random.RandomPassword(f"{name}-health-only", length=32, special=False, opts=child)
        aws.lb.ListenerRule(
            f"{name}-nodes-health-only",
            region=spec.region,
            listener_arn=(https_listener or listener).arn,
            priority=1,
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(
                        http_header_name="X-Spotstack-Health-Only", values=[secret.result]
                    )
                )
            ],
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=tg.arn)],
            opts=child,
        )
    return LoadBalancer(lb_sg, node_sg, lb, tg, listener, https_listener, gw_sg, gw_tg)


def _gateway_security_group(
    name: str,
    spec: FleetSpec,
    vpc_id: pulumi.Input[str],
    lb_sg: aws.ec2.SecurityGroup,
    node_sg: aws.ec2.SecurityGroup,
    child: pulumi.ResourceOptions,
) -> aws.ec2.SecurityGroup:
    """The gateways take the load balancer's traffic; the nodes take the gateways' (service and readiness)."""
    region = spec.region
    gw_sg = aws.ec2.SecurityGroup(
        f"{name}-gateway-sg", region=region, vpc_id=vpc_id, description=f"{name} gateways", opts=child
    )
    _allow(f"{name}-gateway-in", region, gw_sg, lb_sg, GATEWAY_PORT, child)
    _allow(f"{name}-lb-out-gateways", region, lb_sg, gw_sg, GATEWAY_PORT, child, egress=True)
    for port_name, port in (("service", spec.service.port), ("readiness", node.AGENT_PORT)):
        _allow(f"{name}-node-in-gateway-{port_name}", region, node_sg, gw_sg, port, child)
    # To the nodes, and to the EC2 API (finding the nodes), SSM (its keys) and S3 (the package at boot).
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-gateway-out", region=region, security_group_id=gw_sg.id, cidr_ipv4="0.0.0.0/0", ip_protocol="-1",
        opts=child,
    )  # fmt: skip
    return gw_sg


def _gateway_target_group(
    name: str, spec: FleetSpec, vpc_id: pulumi.Input[str], child: pulumi.ResourceOptions
) -> aws.lb.TargetGroup:
    return aws.lb.TargetGroup(
        f"{name}-gateway-tg",
        region=spec.region,
        port=GATEWAY_PORT,
        protocol="HTTP",
        target_type="instance",
        vpc_id=vpc_id,
        # A gateway leaving (scale-in, a new template) finishes its streams: as long as the longest request.
        deregistration_delay=min(3600, spec.service.max_request_s),
        health_check=_ready_check("/ready", "traffic-port"),
        opts=child,
    )


def _allow(
    rname: str,
    region: str,
    sg: aws.ec2.SecurityGroup,
    other: aws.ec2.SecurityGroup,
    port: int,
    child: pulumi.ResourceOptions,
    egress: bool = False,
) -> None:
    """One TCP port between two security groups: into `sg` from `other` (or, `egress`, out of `sg` to it)."""
    rule = aws.vpc.SecurityGroupEgressRule if egress else aws.vpc.SecurityGroupIngressRule
    rule(
        rname,
        region=region,
        security_group_id=sg.id,
        referenced_security_group_id=other.id,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        opts=child,
    )


def _ready_check(path: str, port: str) -> aws.lb.TargetGroupHealthCheckArgs:
    """A target group's readiness check: every 5 s, 2 answers to change state."""
    return aws.lb.TargetGroupHealthCheckArgs(
        path=path,
        port=port,
        protocol="HTTP",
        matcher="200",
        interval=5,
        timeout=2,
        healthy_threshold=2,
        unhealthy_threshold=2,
    )
