"""A fleet across regions on Alibaba Cloud: the plan of `stacks/Pulumi.dev-alicloud-multiregion.yaml` (each region's
part under a provider of its region, one Global Accelerator, one controller in the home region whose document and
permissions name every region's groups, the registry and model store of the home region read from the other), and
the one-region form unchanged."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from spotstack.components.plan import Plan, plan_stack
from spotstack.components.plan.engine import Declared
from tests.components.test_multi_region import _both_forms
from tests.conftest import ROOT

HOME, OTHER = "us-west-1", "ap-southeast-1"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_stack(ROOT, "dev-alicloud-multiregion")


def region_of(plan: Plan, r: Declared) -> str:
    """A resource's region: its provider's (the stack's default provider is the home region's)."""
    if not r.provider:
        return HOME
    urn = r.provider.rsplit("::", 1)[0]
    [provider] = [p for p in plan.run.resources if p.urn == urn]
    return str(provider.inputs["region"])


def by_region(plan: Plan, typ: str) -> dict[str, list[Declared]]:
    out: dict[str, list[Declared]] = {}
    for r in plan.run.find(typ):
        out.setdefault(region_of(plan, r), []).append(r)
    return out


def user_data(config: Declared) -> str:
    return base64.b64decode(config.inputs["userData"]).decode()


def test_each_region_has_its_groups_and_load_balancer_behind_one_accelerator(plan: Plan) -> None:
    groups = by_region(plan, "alicloud:ess/scalingGroup:ScalingGroup")
    assert set(groups) == {HOME, OTHER}
    main = {k: next(g.inputs for g in v if "fallback" not in g.name) for k, v in groups.items()}
    fallback = {k: next(g.inputs for g in v if "fallback" in g.name) for k, v in groups.items()}
    assert sum(m["maxSize"] for m in main.values()) == 8 and sum(m["desiredCapacity"] for m in main.values()) == 3
    assert all(f["maxSize"] == 7 and f["scalingPolicy"] == "recycle" for f in fallback.values())
    # Each region's groups in its own vSwitches, registered in its own ALB's server group.
    switches = by_region(plan, "alicloud:vpc/switch:Switch")
    assert {k: sorted(s.inputs["zoneId"] for s in v) for k, v in switches.items()} == {
        HOME: ["us-west-1a", "us-west-1b"],
        OTHER: ["ap-southeast-1a", "ap-southeast-1b"],
    }
    albs = {k: v[0] for k, v in by_region(plan, "alicloud:alb/loadBalancer:LoadBalancer").items()}
    servers = {k: v[0] for k, v in by_region(plan, "alicloud:alb/serverGroup:ServerGroup").items()}
    for k in (HOME, OTHER):
        assert main[k]["albServerGroups"][0]["albServerGroupId"] == servers[k].outputs["id"]
    assert len(by_region(plan, "alicloud:vpc/natGateway:NatGateway")[OTHER]) == 1
    # One accelerator (global: the home provider), an acceleration area and an endpoint group per region.
    [accelerator] = plan.run.find("alicloud:ga/accelerator:Accelerator")
    assert accelerator.inputs["paymentType"] == "PayAsYouGo" and accelerator.inputs["bandwidthBillingType"] == "CDT"
    assert sorted(i.inputs["accelerateRegionId"] for i in plan.run.find("alicloud:ga/ipSet:IpSet")) == sorted(
        [HOME, OTHER]
    )
    [listener] = plan.run.find("alicloud:ga/listener:Listener")
    assert listener.inputs["protocol"] == "TCP" and listener.inputs["portRanges"] == [{"fromPort": 80, "toPort": 80}]
    endpoints = {
        e.inputs["endpointGroupRegion"]: e.inputs for e in plan.run.find("alicloud:ga/endpointGroup:EndpointGroup")
    }
    assert set(endpoints) == {HOME, OTHER}
    for k, e in endpoints.items():
        assert e["endpointConfigurations"] == [{"endpoint": albs[k].outputs["id"], "type": "ALB", "weight": 100}]
        assert e["healthCheckEnabled"] and e["healthCheckPath"] == "/ready"
    # The one-region form's provider check stays: the other region's provider is the fleet's, for its region.
    [provider] = plan.run.find("pulumi:providers:alicloud")
    assert provider.inputs["region"] == OTHER


def test_the_other_regions_nodes_boot_from_the_home_regions_registry_and_store(plan: Plan) -> None:
    configs = by_region(plan, "alicloud:ess/scalingConfiguration:ScalingConfiguration")
    for k, v in configs.items():
        for c in v:
            assert c.inputs["tags"]["spotstack:fleet"] == "llm"  # peers find each other by it, in their region
            doc = user_data(c)
            files = {f["path"]: f["content"] for f in yaml.safe_load(doc)["write_files"]}
            agent = json.loads(files["/etc/spotstack/agent.json"])
            assert agent["region"] == k and agent["cache"]["discovery_target"] == "llm"
            if k == HOME:
                assert agent["cache"].get("origin_region") is None
                assert f"-registry-vpc.{HOME}.cr.aliyuncs.com" in doc
            else:
                # OSS's internal endpoint serves its own region only; the registry's VPC endpoint likewise.
                assert agent["cache"]["origin_region"] == HOME and agent["cache"].get("origin_endpoint") is None
                assert f"-registry.{HOME}.cr.aliyuncs.com" in doc and "-registry-vpc." not in doc
                assert f"--region {HOME} --registry" in doc  # the registry's token, from its region
                assert f"--region {OTHER}" in doc  # the cache token: the region's own OOS parameter
    [linked] = plan.run.find("alicloud:cr/vpcEndpointLinkedVpc:VpcEndpointLinkedVpc")
    assert region_of(plan, linked) == HOME
    [internet] = plan.run.find("alicloud:cr/internetEndpoint:InternetEndpoint")
    [other_eip] = by_region(plan, "alicloud:ecs/eipAddress:EipAddress")[OTHER]
    assert [e["entry"] for e in internet.inputs["entries"]] == [other_eip.outputs["ipAddress"] + "/32"]
    # The other region's node role: its own region's secret, the home region's registry.
    policies = {p.name: json.loads(p.inputs["policyDocument"]) for p in plan.run.find("alicloud:ram/policy:Policy")}
    text = json.dumps(policies["llm-ap-southeast-1-node-policy"])
    assert f"acs:cr:{HOME}:*:repository/" in text and f"acs:oos:{OTHER}:" in text
    assert len(plan.run.find("alicloud:oss/bucketObject:BucketObject")) == 1  # the agent's wheel, once


def test_one_controller_in_the_home_region_acts_on_every_regions_groups(plan: Plan) -> None:
    [fn] = plan.run.find("alicloud:fc/v3Function:V3Function")
    assert region_of(plan, fn) == HOME
    env = fn.inputs["environmentVariables"]
    assert len(json.dumps(env)) < 4096  # Function Compute's limit on all variables
    doc = json.loads(env["SPOTSTACK_CONTROLLER"])
    assert [r["region"] for r in doc["regions"]] == [HOME, OTHER]
    assert sum(r["max"] for r in doc["regions"]) == doc["policy"]["max"] == 8
    groups = by_region(plan, "alicloud:ess/scalingGroup:ScalingGroup")
    for entry in doc["regions"]:
        ids = {g.outputs["id"] for g in groups[entry["region"]]}
        assert {entry["main_group"], entry["fallback_group"]} == ids
        assert entry["config_tag"] and entry["on_demand_price"]
    assert doc["policy"]["spot_types"][:2] == [f"{HOME}/ecs.gn7i-c8g1.2xlarge", f"{OTHER}/ecs.gn7i-c8g1.2xlarge"]
    [policy] = [p for p in plan.run.find("alicloud:ram/policy:Policy") if p.name == "llm-controller-policy"]
    statements = json.loads(policy.inputs["policyDocument"])["Statement"]
    size = next(s for s in statements if "ess:ModifyScalingGroup" in s["Action"])["Resource"]
    assert sorted(r.split(":")[2] for r in size) == [OTHER, OTHER, HOME, HOME]
    assert all(
        r.rsplit("/", 1)[1] in {e["main_group"] for e in doc["regions"]} | {e["fallback_group"] for e in doc["regions"]}
        for r in size
    )


def test_the_plan_lists_each_regions_quota_and_bills_the_front_door(plan: Plan) -> None:
    needs = [i.text for i in plan.before_up if i.kind == "needs"]
    billed = [i.text for i in plan.before_up if i.kind == "billed"]
    assert any(f"quota in {HOME}" in t for t in needs) and any(f"quota in {OTHER}" in t for t in needs)
    assert any("Global Accelerator activated" in t for t in needs)
    assert any("Global Accelerator: $0.02/h" in t for t in billed)
    assert any("2 load balancer instances" in t for t in billed) and any("2 enhanced NAT" in t for t in billed)
    assert any("read across regions" in t and "per GB" in t for t in billed)


def test_the_alicloud_one_region_form_written_as_regions_plans_as_before(tmp_path: Any) -> None:
    a, b = _both_forms(tmp_path, "dev-alicloud")
    # The controller bucket's random suffix differs run to run; everything else is the same.
    assert {(r.type, r.name) for r in a.run.resources} == {(r.type, r.name) for r in b.run.resources}
    same = [r for r in a.run.resources if "controller" not in r.name]
    others = {(r.type, r.name): r.inputs for r in b.run.resources}
    assert all(others[(r.type, r.name)] == r.inputs for r in same)


def test_another_regions_own_network_is_told_to_open_the_registry_to_its_egress() -> None:
    from spotstack.components.validate import validate_fleets

    doc = yaml.safe_load((ROOT / "stacks/Pulumi.dev-alicloud-multiregion.yaml").read_text())
    raw = doc["config"]["spotstack:fleets"][0]
    raw["regions"][1]["network"] = {"id": "vpc-0123456789abcdef0", "subnets": ["vsw-1", "vsw-2"]}
    _, warnings = validate_fleets([raw])
    said = {w.path: w.reason for w in warnings}
    assert "registry's internet access list" in said["fleets[0].regions[1].network"]


def test_a_program_gives_the_other_regions_provider() -> None:
    """A program whose credentials are not the stack's settings (an assumed role, say) passes the other regions'
    providers; the fleet then makes none of its own, and that region's part is declared with the given one."""
    import pulumi_alicloud as ali

    from spotstack.components.alicloud.fleet import AlicloudGpuFleet, AlicloudGpuFleetArgs
    from spotstack.components.plan.engine import run_offline
    from spotstack.components.validate import validate_fleets

    doc = yaml.safe_load((ROOT / "stacks/Pulumi.dev-alicloud-multiregion.yaml").read_text())
    [spec], _ = validate_fleets(doc["config"]["spotstack:fleets"])

    def program() -> None:
        sg = ali.Provider("singapore", region=OTHER, profile="ops")
        AlicloudGpuFleet("llm", AlicloudGpuFleetArgs(spec=spec, region_providers={OTHER: sg}))

    run = run_offline(program, {"alicloud:region": HOME})
    [provider] = run.find("pulumi:providers:alicloud")
    assert provider.name == "singapore" and provider.inputs["profile"] == "ops"
    [other] = [g for g in run.find("alicloud:ess/scalingGroup:ScalingGroup") if g.name == f"llm-{OTHER}-group"]
    assert other.provider.startswith(provider.urn)
    [home] = [g for g in run.find("alicloud:ess/scalingGroup:ScalingGroup") if g.name == "llm-group"]
    assert not home.provider  # the home region's part: the stack's provider
