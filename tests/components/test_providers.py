"""Fleets take the stack's provider (or the caller's) and name their region on every regional resource; their
network args take Inputs, checked when known and again when resolved."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pulumi
import pytest

from spotstack.components import program
from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.validate import validate_fleets
from tests.components.test_gcp_alicloud import as_cloud
from tests.conftest import base_fleet


def resource_class(token: str) -> type[Any]:
    """`aws:ec2/securityGroup:SecurityGroup` -> pulumi_aws.ec2.SecurityGroup (`lambda` is `lambda_` in Python)."""
    package, module_path, kind = token.split(":")
    module = module_path.split("/")[0]
    root = f"pulumi_{package}"
    for name in (root if module == "index" else f"{root}.{module}", f"{root}.{module}_"):
        try:
            return getattr(importlib.import_module(name), kind)  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    raise LookupError(token)


def takes_region(token: str) -> bool:
    return "region" in inspect.signature(resource_class(token)._internal_init).parameters


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_every_regional_resource_names_the_fleets_region(cloud: str) -> None:
    """With no provider of the fleet's own, a regional resource that leaves `region` out lands in whatever
    region the stack's provider has: each one must say it."""
    raw = base_fleet() if cloud == "aws" else as_cloud(cloud)
    raw["capacity"]["dynamic_on_demand_fallback"] = True  # the controller's resources too
    raw["jobs"] = {"http_path": "/task", "bucket": "acme-jobs"}
    plan = run_offline(program.run, {"spotstack:fleets": [raw], "gcp:project": "p"}, stack="t")
    regional = [r for r in plan.resources if r.custom and r.type.startswith(f"{cloud}:") and takes_region(r.type)]
    assert len(regional) >= 5
    wrong = [(r.type, r.name, r.inputs.get("region")) for r in regional if r.inputs.get("region") != raw["region"]]
    assert not wrong


def _vpc_program(vpc_id: pulumi.Input[str], subnets: pulumi.Input[list[pulumi.Input[str]]]) -> Any:
    spec = validate_fleets([base_fleet()])[0][0]

    def run() -> None:
        AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, vpc_id=vpc_id, subnet_ids=subnets))

    return run


def test_known_bad_network_inputs_fail_with_their_property_path() -> None:
    good = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    with pytest.raises(pulumi.InputPropertiesError) as caught:
        run_offline(_vpc_program("vpc-default", good), {})
    assert caught.value.errors == [{"property_path": "vpc_id", "reason": "'vpc-default' is not a VPC id (vpc-...)"}]
    with pytest.raises(pulumi.InputPropertiesError, match=r"subnet_ids: give one per zone of spec.zones \(2\), got 1"):
        run_offline(_vpc_program("vpc-0123456789abcdef0", good[:1]), {})
    with pytest.raises(pulumi.InputPropertiesError, match=r"subnet_ids: give it with vpc_id"):
        spec = validate_fleets([base_fleet()])[0][0]
        run_offline(lambda: AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, vpc_id="vpc-0123456789abcdef0")), {})


def test_a_computed_network_input_is_checked_when_it_resolves() -> None:
    good = "subnet-0123456789abcdef0"
    with pytest.raises(pulumi.InputPropertiesError, match=r"subnet_ids\[1\]: 'sn-1' is not a subnet id"):
        run_offline(
            _vpc_program(pulumi.Output.from_input("vpc-0123456789abcdef0"), [good, pulumi.Output.from_input("sn-1")]),
            {},
        )


def test_wired_network_reaches_the_fleets_resources() -> None:
    vpc, subnets = "vpc-0123456789abcdef0", ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    plan: PlanRun = run_offline(_vpc_program(pulumi.Output.from_input(vpc), subnets), {})
    assert {r.inputs["vpcId"] for r in plan.find("aws:ec2/securityGroup:SecurityGroup")} == {vpc}
    assert plan.find("aws:lb/loadBalancer:LoadBalancer")[0].inputs["subnets"] == subnets
    assert not plan.find("aws:ec2/getVpc:getVpc")


def test_gcp_and_alibaba_fleets_take_a_network_the_program_built() -> None:
    import pulumi_alicloud as ali
    import pulumi_gcp as gcp

    from spotstack.components.alicloud.fleet import AlicloudGpuFleet, AlicloudGpuFleetArgs
    from spotstack.components.gcp.fleet import GcpGpuFleet, GcpGpuFleetArgs

    g_spec = validate_fleets([as_cloud("gcp")])[0][0]
    a_spec = validate_fleets([as_cloud("alicloud")])[0][0]

    def program_() -> None:
        net = gcp.compute.Network("net", auto_create_subnetworks=False)
        sub = gcp.compute.Subnetwork("sub", network=net.id, ip_cidr_range="10.8.0.0/20", region=g_spec.region)
        GcpGpuFleet("g", GcpGpuFleetArgs(spec=g_spec, network=net.self_link, subnetwork=sub.self_link))
        vpc = ali.vpc.Network("vpc", cidr_block="10.9.0.0/16")
        switches = [
            ali.vpc.Switch(f"vsw{i}", vpc_id=vpc.id, zone_id=z, cidr_block=f"10.9.{i}.0/24")
            for i, z in enumerate(a_spec.zones)
        ]
        AlicloudGpuFleet("a", AlicloudGpuFleetArgs(spec=a_spec, vpc_id=vpc.id, vswitch_ids=[s.id for s in switches]))

    plan = run_offline(program_, {"alicloud:region": a_spec.region, "gcp:project": "p"})
    link = plan.find("gcp:compute/network:Network")[0].outputs["selfLink"]
    tpl = plan.find("gcp:compute/instanceTemplate:InstanceTemplate")[0].inputs
    assert tpl["networkInterfaces"][0]["network"] == link
    assert not plan.find("gcp:compute/router:Router")  # the network is the program's: so is its egress
    ids = [r.outputs["id"] for r in plan.find("alicloud:vpc/switch:Switch") if r.name.startswith("vsw")]
    alb = plan.find("alicloud:alb/loadBalancer:LoadBalancer")[0].inputs
    assert sorted(m["vswitchId"] for m in alb["zoneMappings"]) == sorted(ids)
    assert not plan.find("alicloud:vpc/natGateway:NatGateway")


def test_a_fleet_without_registry_or_image_url_says_it_pulls_from_docker_hub() -> None:
    spec = validate_fleets([base_fleet()])[0][0]
    assert spec.image.registry is None
    plan = run_offline(lambda: AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec)), {})
    assert any("nodes pull docker.io/llm-server:" in w for w in plan.warnings)
    given = run_offline(lambda: AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, image_url="r.example/x:1")), {})
    assert not any("docker.io" in w for w in given.warnings)
