"""An Alibaba fleet's load balancer: an ALB across the fleet's zones, the server group it routes to on the agent's
readiness, the HTTP listener, and with a certificate an HTTPS listener (TLS 1.2+) and a rule redirecting HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_alicloud as ali
import pulumi_random as random

from spotstack.components import node
from spotstack.components.alicloud import gateway
from spotstack.components.spec import FleetSpec

TLS_POLICY = "tls_cipher_policy_1_2_strict_with_1_3"
"""ALB's predefined policy for TLS 1.2 (ECDHE ciphers only) and TLS 1.3."""


@dataclass
class LoadBalancer:
    alb: ali.alb.LoadBalancer
    servers: ali.alb.ServerGroup
    listener: ali.alb.Listener
    https_listener: ali.alb.Listener | None
    gateway_servers: ali.alb.ServerGroup | None = None


def declare(
    name: str,
    spec: FleetSpec,
    vpc_id: pulumi.Input[str],
    vswitches: list[pulumi.Input[str]],
    certificate: pulumi.Input[str] | None,
    child: pulumi.ResourceOptions,
) -> LoadBalancer:
    """With `service.gateway` the listeners forward to the gateways' server group; the nodes' server group stays
    on the listener through a rule no client request matches (a secret header), so that the ALB keeps
    health-checking the nodes (the controller reads their health)."""
    svc = spec.service
    # An ALB, not a CLB: ESS tracks per-server QPS (LoadBalancerRealServerAverageQps) only for ALB server
    # groups, and an ALB spans the fleet's zones (one vSwitch per zone; ALB requires two or more).
    alb = ali.alb.LoadBalancer(
        f"{name}-alb",
        load_balancer_name=f"{name}-alb",
        vpc_id=vpc_id,
        address_type="Internet" if svc.public else "Intranet",
        address_allocated_mode="Dynamic",
        load_balancer_edition="Standard",
        load_balancer_billing_config=ali.alb.LoadBalancerLoadBalancerBillingConfigArgs(pay_type="PayAsYouGo"),
        zone_mappings=[
            ali.alb.LoadBalancerZoneMappingArgs(zone_id=z, vswitch_id=v)
            for z, v in zip(spec.zones, vswitches, strict=True)
        ],
        tags={**spec.tags, node.FLEET_TAG: name},
        opts=child,
    )
    servers = ali.alb.ServerGroup(
        f"{name}-servers",
        server_group_name=f"{name}-replicas",
        server_group_type="Instance",
        protocol="HTTP",
        vpc_id=vpc_id,
        # Route on the agent's readiness (off while draining or loading the model); ESS judges the
        # instance itself on ECS status, so a drain never gets a node replaced.
        health_check_config=health_check(svc.readiness_path, node.AGENT_PORT),
        sticky_session_config=ali.alb.ServerGroupStickySessionConfigArgs(sticky_session_enabled=False),
        tags={**spec.tags, node.FLEET_TAG: name},
        opts=child,
    )
    gateways = gateway.server_group(name, spec, vpc_id, child) if svc.gateway else None
    front = gateways if gateways is not None else servers
    forward = ali.alb.ListenerDefaultActionArgs(
        type="ForwardGroup",
        forward_group_config=ali.alb.ListenerDefaultActionForwardGroupConfigArgs(
            server_group_tuples=[
                ali.alb.ListenerDefaultActionForwardGroupConfigServerGroupTupleArgs(server_group_id=front.id)
            ]
        ),
    )
    listener = ali.alb.Listener(
        f"{name}-http",
        load_balancer_id=alb.id,
        listener_protocol="HTTP",
        listener_port=80,
        default_actions=[forward],
        request_timeout=spec.service.max_request_s,  # default 60 s: a longer answer gets 504
        opts=child,
    )
    https_listener: ali.alb.Listener | None = None
    if certificate is not None:
        https_listener = ali.alb.Listener(
            f"{name}-https",
            load_balancer_id=alb.id,
            listener_protocol="HTTPS",
            listener_port=443,
            certificates=ali.alb.ListenerCertificatesArgs(certificate_id=certificate),
            # TLS 1.2 with forward secrecy only, and 1.3: ALB's predefined strict policy.
            security_policy_id=TLS_POLICY,
            default_actions=[forward],
            request_timeout=spec.service.max_request_s,
            opts=child,
        )
        # An HTTP listener's default action can only forward: a rule matching every path redirects instead.
        ali.alb.Rule(
            f"{name}-http-redirect",
            rule_name=f"{name}-https-redirect",
            listener_id=listener.id,
            priority=1,
            rule_conditions=[
                ali.alb.RuleRuleConditionArgs(
                    type="Path", path_config=ali.alb.RuleRuleConditionPathConfigArgs(values=["/*"])
                )
            ],
            rule_actions=[
                ali.alb.RuleRuleActionArgs(
                    order=1,
                    type="Redirect",
                    redirect_config=ali.alb.RuleRuleActionRedirectConfigArgs(
                        protocol="HTTPS", port="443", http_code="301"
                    ),
                )
            ],
            opts=child,
        )
    if gateways is not None:
        secret = random.RandomPassword(f"{name}-health-only", length=32, special=False, opts=child)
        ali.alb.Rule(
            f"{name}-nodes-health-only",
            rule_name=f"{name}-nodes-health-only",
            listener_id=(https_listener or listener).id,
            priority=2,
            rule_conditions=[
                ali.alb.RuleRuleConditionArgs(
                    type="Header",
                    header_config=ali.alb.RuleRuleConditionHeaderConfigArgs(
                        key="X-Spotstack-Health-Only", values=[secret.result]
                    ),
                )
            ],
            rule_actions=[
                ali.alb.RuleRuleActionArgs(
                    order=1,
                    type="ForwardGroup",
                    forward_group_config=ali.alb.RuleRuleActionForwardGroupConfigArgs(
                        server_group_tuples=[
                            ali.alb.RuleRuleActionForwardGroupConfigServerGroupTupleArgs(server_group_id=servers.id)
                        ]
                    ),
                )
            ],
            opts=child,
        )
    return LoadBalancer(alb, servers, listener, https_listener, gateways)


def health_check(path: str, port: int) -> ali.alb.ServerGroupHealthCheckConfigArgs:
    """An ALB server group's HTTP check of `path` on `port`, every 2 s, 2 answers to change state."""
    return ali.alb.ServerGroupHealthCheckConfigArgs(
        health_check_enabled=True,
        health_check_protocol="HTTP",
        health_check_method="GET",
        health_check_path=path,
        health_check_connect_port=port,
        health_check_codes=["http_2xx"],
        health_check_interval=2,
        health_check_timeout=2,
        healthy_threshold=2,
        unhealthy_threshold=2,
    )
