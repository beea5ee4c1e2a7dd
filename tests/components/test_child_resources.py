"""A program of one's own attaches to the fleet's child resources (as with pulumi-eks): an alarm on the main
group, an ingress rule on the node security group, an alias record on the load balancer — wired through the
component's attributes, no `.apply`, no names guessed."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
from spotstack.components.plan.engine import run_offline
from spotstack.components.validate import validate_fleets
from tests.components.test_gcp_alicloud import one
from tests.conftest import base_fleet


def program() -> None:
    spec = validate_fleets([base_fleet()])[0][0]
    fleet = AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec))
    aws.cloudwatch.MetricAlarm(
        "llm-no-capacity",
        namespace="AWS/AutoScaling",
        metric_name="GroupInServiceInstances",
        dimensions={"AutoScalingGroupName": fleet.main_group.name},
        statistic="Minimum",
        period=60,
        evaluation_periods=5,
        threshold=1,
        comparison_operator="LessThanThreshold",
    )
    aws.vpc.SecurityGroupIngressRule(
        "llm-from-bastion",
        security_group_id=fleet.node_security_group.id,
        cidr_ipv4="10.0.0.5/32",
        ip_protocol="tcp",
        from_port=22,
        to_port=22,
    )
    aws.route53.Record(
        "llm-dns",
        zone_id="Z0123456789ABCDEFGHIJ",
        name="llm.example.com",
        type="A",
        aliases=[
            aws.route53.RecordAliasArgs(
                name=fleet.load_balancer.dns_name, zone_id=fleet.load_balancer_zone_id, evaluate_target_health=True
            )
        ],
    )
    assert fleet.fallback_group is not None and fleet.controller is not None  # the base fleet has a fallback
    pulumi.export("role", fleet.node_role.arn)


def test_a_program_wires_its_own_resources_to_the_fleets_children() -> None:
    plan = run_offline(program, {"aws:region": "us-east-1"})
    group = one(plan, "aws:autoscaling/group:Group", "llm-asg")
    alarm = one(plan, "aws:cloudwatch/metricAlarm:MetricAlarm", "llm-no-capacity")
    assert alarm["dimensions"]["AutoScalingGroupName"] == group["name"]
    sg = next(r for r in plan.find("aws:ec2/securityGroup:SecurityGroup") if r.name == "llm-node-sg")
    rule = one(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "llm-from-bastion")
    assert rule["securityGroupId"] == "llm-node-sg-id"  # the mock engine ids a resource "<name>-id"
    assert sg.inputs["description"] == "llm GPU nodes"
    record = one(plan, "aws:route53/record:Record", "llm-dns")
    assert record["aliases"][0]["name"]  # the load balancer's DNS name, resolved through the attribute


def test_an_offline_plan_skips_the_sdks_stack_walk_and_puts_it_back() -> None:
    """The SDK's per-resource stack walk (a source position the mock monitor drops) is skipped while a plan runs
    offline, and only then: a program planned after, or `pulumi up`, gets it as the SDK wrote it."""
    from pulumi.runtime import resource as sdk

    real = sdk._get_stack_trace
    inside: list[bool] = []

    def program() -> None:
        pulumi.CustomResource("test:index:Probe", "probe", {})
        inside.append(sdk._get_stack_trace is real)

    assert [r.name for r in run_offline(program, {}).resources if r.custom] == ["probe"]
    assert inside == [False]  # skipped inside the plan
    assert sdk._get_stack_trace is real  # put back after it
