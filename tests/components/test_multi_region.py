"""A fleet across regions on AWS: the spec's `regions` (each problem with its path), each region's share of the
fleet, the plan of `stacks/Pulumi.dev-multiregion.yaml` (per-region groups and load balancers, one Global
Accelerator, one controller whose permissions name each region's fallback group and whose events come from every
region), and the one-region form unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from spotstack.components import regions
from spotstack.components.controller_policy import fleet_policy
from spotstack.components.plan import Plan, plan_stack
from spotstack.components.problem import SpecError
from spotstack.components.validate import validate_fleets
from tests.conftest import ROOT

WEST = {"region": "us-west-2", "zones": ["us-west-2a", "us-west-2b"]}
EAST = {"region": "us-east-1", "zones": ["us-east-1a", "us-east-1b"]}


def fleet(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llm",
        "cloud": "aws",
        "regions": [EAST, WEST],
        "instances": [{"type": "g6.xlarge", "spot": {}}, {"type": "g5.xlarge", "spot": {}}],
        "capacity": {"min": 3, "max": 8, "desired": 5, "base_on_demand": 1, "dynamic_on_demand_fallback": True},
        "image": {"repository": "llm", "registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com"},
        "model_cache": {"bucket": "acme-models"},
    }
    return {**base, **over}


def problems(item: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        validate_fleets([item])
    return {p.path: p.reason for p in err.value.problems}


def test_regions_fill_in_the_home_region_and_split_the_fleet() -> None:
    [spec], _ = validate_fleets([fleet(home="us-west-2")])
    assert spec.region == "us-west-2" and spec.zones == WEST["zones"] and spec.multi_region
    assert [r.region for r in spec.region_list] == ["us-west-2", "us-east-1"]  # home first
    parts = regions.parts(spec)
    assert [p.region for p in parts] == ["us-west-2", "us-east-1"] and parts[1].zones == EAST["zones"]
    for key in ("min", "max", "desired", "base_on_demand"):
        shares = [getattr(p.capacity, key) for p in parts]
        assert sum(shares) == getattr(spec.capacity, key) and max(shares) - min(shares) <= 1, key
    assert parts[0].capacity.max == 4 and parts[0].capacity.base_on_demand == 1  # the home region's remainder
    assert regions.fallback_max(spec) == 7  # a region's fallback may stand in for all of the fleet's spot share
    # The policy's pools are (region, type), priority per type, the home region first.
    assert fleet_policy(spec).spot_types == (
        "us-west-2/g6.xlarge",
        "us-east-1/g6.xlarge",
        "us-west-2/g5.xlarge",
        "us-east-1/g5.xlarge",
    )
    # A spec dumped and read back (the plan's JSON, a program's copy) is the same spec.
    [again], _ = validate_fleets([spec.model_dump(mode="json")])
    assert again == spec


def test_every_problem_of_regions_names_its_path() -> None:
    bad = fleet(
        home="eu-west-1",
        regions=[EAST, {"region": "us-west-2", "zones": ["us-east-1a", "us-west-2a", "us-west-2a"]}, EAST],
    )
    got = problems(bad)
    assert "is not one of regions" in got["fleets[0].home"]
    assert got["fleets[0].regions[1].zones[0]"] == "zone 'us-east-1a' is not in region 'us-west-2'"
    assert got["fleets[0].regions[1].zones"] == "lists a zone twice"
    assert got["fleets[0].regions[2].region"] == "'us-east-1' is listed twice"
    both = problems({**fleet(), "region": "us-west-2", "zones": ["us-west-2a"]})
    assert "not both" in both["fleets[0]"]
    ali = fleet(
        cloud="alicloud",
        regions=[{"region": "us-west-1", "zones": ["us-west-1a"]}, {"region": "us-east-1", "zones": ["us-east-1a"]}],
        instances=[{"type": "ecs.gn7i-c8g1.2xlarge", "spot": {}}],
        image={"repository": "llm", "registry_instance": "cri-acme"},
        service={"gateway": {}, "tls": {"certificate": "12345-us-west-1"}},
    )
    got = problems(ali)
    assert "Alibaba Cloud's gateways across regions are not built yet" in got["fleets[0].service.gateway"]
    assert "forwards port 80 only" in got["fleets[0].service.tls"]
    assert "fleets[0].regions" not in got  # Alibaba spans regions too
    gcp = fleet(
        cloud="gcp",
        regions=[
            {"region": "us-central1", "zones": ["us-central1-a"]},
            {"region": "us-east4", "zones": ["us-east4-a"]},
        ],
        instances=[{"type": "g2-standard-4", "spot": {}}],
        service={"gateway": {}},
    )
    assert "gateways across regions are not built yet" in problems(gcp)["fleets[0].service.gateway"]
    assert "number of regions" in problems(fleet(capacity={"max": 1}))["fleets[0].capacity.max"]
    tls = {
        "tls": {"certificate": "arn:aws:acm:us-east-1:123456789012:certificate/0123abcd-0123-4567-89ab-0123456789ab"}
    }
    assert "certificate is regional" in problems(fleet(service=tls))["fleets[0].service.tls"]
    jobs = {"bucket": "acme-jobs"}
    assert "queue is regional" in problems(fleet(jobs=jobs))["fleets[0].jobs"]
    one = {"name": "one", "cloud": "aws", "region": "us-east-1", "zones": ["us-east-1a"], "home": "us-east-1"}
    assert "names one of `regions`" in problems(fleet(**one, regions=[]))["fleets[0].home"]


def test_a_type_the_catalog_lacks_in_a_region_is_a_warning_naming_it() -> None:
    far = {"region": "ap-south-1", "zones": ["ap-south-1a"]}
    _, warnings = validate_fleets([fleet(regions=[EAST, far])])
    said = {w.path: w.reason for w in warnings}
    assert "does not list 'g6.xlarge' in 'ap-south-1'" in said["fleets[0].instances[0].type"]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_stack(ROOT, "dev-multiregion")


def _by_region(plan: Plan, typ: str) -> dict[str, Any]:
    return {r.inputs.get("region"): r for r in plan.run.find(typ)}


def test_each_region_has_its_groups_and_load_balancer_behind_one_accelerator(plan: Plan) -> None:
    spec = validate_fleets(
        yaml.safe_load((ROOT / "stacks/Pulumi.dev-multiregion.yaml").read_text())["config"]["spotstack:fleets"]
    )[0][0]
    groups = plan.run.find("aws:autoscaling/group:Group")
    main = {g.inputs["region"]: g.inputs for g in groups if g.name.endswith("-asg") and "fallback" not in g.name}
    fallback = {g.inputs["region"]: g.inputs for g in groups if "fallback" in g.name}
    assert set(main) == set(fallback) == {"us-east-1", "us-west-2"}
    assert sum(m["maxSize"] for m in main.values()) == spec.capacity.max
    assert sum(m["desiredCapacity"] for m in main.values()) == spec.capacity.desired
    assert all(f["maxSize"] == spec.capacity.max - spec.capacity.base_on_demand for f in fallback.values())
    # Each region's nodes: subnets of its own zones, its own load balancer and target group.
    subnets = {r: set(m["vpcZoneIdentifiers"]) for r, m in main.items()}
    assert not subnets["us-east-1"] & subnets["us-west-2"]
    albs = _by_region(plan, "aws:lb/loadBalancer:LoadBalancer")
    assert set(albs) == {"us-east-1", "us-west-2"}
    [accelerator] = plan.run.find("aws:globalaccelerator/accelerator:Accelerator")
    [listener] = plan.run.find("aws:globalaccelerator/listener:Listener")
    assert listener.inputs["protocol"] == "TCP" and listener.inputs["portRanges"] == [{"fromPort": 80, "toPort": 80}]
    endpoints = {
        e.inputs["endpointGroupRegion"]: e.inputs
        for e in plan.run.find("aws:globalaccelerator/endpointGroup:EndpointGroup")
    }
    assert set(endpoints) == {"us-east-1", "us-west-2"}
    for region, e in endpoints.items():
        [endpoint] = e["endpointConfigurations"]
        assert endpoint["endpointId"] == albs[region].outputs["arn"] and endpoint["clientIpPreservationEnabled"]
    # The model store is the home region's: one wheel published, every region's nodes may read the bucket.
    assert len(plan.run.find("aws:s3/bucketObjectv2:BucketObjectv2")) == 1
    for policy in plan.run.find("aws:iam/rolePolicy:RolePolicy"):
        if policy.name.endswith("node-policy"):
            assert "arn:aws:s3:::acme-models-dev" in policy.inputs["policy"]
    assert accelerator.inputs["name"].endswith("llm")


def test_one_controller_in_the_home_region_sizes_each_regions_fallback(plan: Plan) -> None:
    [fn] = plan.run.find("aws:lambda/function:Function")
    assert fn.inputs["region"] == "us-east-1"
    doc = json.loads(fn.inputs["environment"]["variables"]["SPOTSTACK_CONTROLLER"])
    assert [r["region"] for r in doc["regions"]] == ["us-east-1", "us-west-2"]
    assert sum(r["max"] for r in doc["regions"]) == doc["policy"]["max"] == 8
    assert sum(r["min"] for r in doc["regions"]) == doc["policy"]["min"]
    assert all(r["on_demand_price"] for r in doc["regions"])
    assert len(json.dumps(fn.inputs["environment"]["variables"])) < 4096  # Lambda's limit on all variables
    [policy] = [p for p in plan.run.find("aws:iam/rolePolicy:RolePolicy") if p.name == "llm-controller-policy"]
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    resources = statements["SizeTheFallback"]["Resource"]
    assert sorted(r.split(":")[3] for r in resources) == ["us-east-1", "us-west-2"]
    assert all(r.endswith("autoScalingGroupName/" + doc["fallback_group"]) for r in resources)
    # us-west-2's spot warnings, rebalance recommendations and refused launches reach the home bus, with a role
    # allowed to put events there and nowhere else.
    west = [r for r in plan.run.find("aws:cloudwatch/eventRule:EventRule") if r.inputs.get("region") == "us-west-2"]
    assert len(west) == 3
    targets = [
        t for t in plan.run.find("aws:cloudwatch/eventTarget:EventTarget") if t.inputs.get("region") == "us-west-2"
    ]
    assert {t.inputs["arn"] for t in targets} == {"arn:aws:events:us-east-1:123456789012:event-bus/default"}
    assert all(t.inputs.get("roleArn") for t in targets)
    [forward] = [p for p in plan.run.find("aws:iam/rolePolicy:RolePolicy") if "forward" in p.name]
    assert json.loads(forward.inputs["policy"])["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": "arn:aws:events:us-east-1:123456789012:event-bus/default",
        }
    ]


def test_the_plan_lists_each_regions_quota_and_bills_the_front_door(plan: Plan) -> None:
    needs = [i.text for i in plan.before_up if i.kind == "needs"]
    billed = [i.text for i in plan.before_up if i.kind == "billed"]
    assert any("quotas in us-east-1" in t for t in needs) and any("quotas in us-west-2" in t for t in needs)
    assert any("Global Accelerator: $0.025/h" in t for t in billed)
    assert any("2 Application Load Balancers" in t for t in billed)
    assert any("read across regions" in t and "$0.02/GB" in t for t in billed)
    assert any("in each of 2 regions" in t for t in billed)  # a warm pool per region


def _both_forms(tmp_path: Any, stack: str) -> tuple[Plan, Plan]:
    """The stack's plan as written (`region` and `zones`) and with its fleet written as `regions` of one."""
    import shutil

    doc = yaml.safe_load((ROOT / f"stacks/Pulumi.{stack}.yaml").read_text())
    fleet_doc = doc["config"]["spotstack:fleets"][0]
    as_regions = {k: v for k, v in fleet_doc.items() if k not in ("region", "zones", "network")}
    as_regions["regions"] = [{"region": fleet_doc["region"], "zones": fleet_doc["zones"]}]
    if "network" in fleet_doc:
        as_regions["regions"][0]["network"] = fleet_doc["network"]
    plans = []
    for form, fleets in (("zones", [fleet_doc]), ("regions", [as_regions])):
        project = tmp_path / form
        (project / "stacks").mkdir(parents=True)
        for f in ("Pulumi.yaml", "__main__.py"):
            shutil.copy(ROOT / f, project / f)
        config = {"config": {**doc["config"], "spotstack:fleets": fleets}}
        (project / f"stacks/Pulumi.{stack}.yaml").write_text(yaml.safe_dump(config))
        plans.append(plan_stack(project, stack))
    return plans[0], plans[1]


def test_the_one_region_form_written_as_regions_plans_as_before(tmp_path: Any) -> None:
    """`regions` with one entry is the same fleet as `region` and `zones`: the same resources, the same inputs."""
    a, b = _both_forms(tmp_path, "dev")
    assert {(r.type, r.name): r.inputs for r in a.run.resources} == {
        (r.type, r.name): r.inputs for r in b.run.resources
    }
    assert [i.text for i in a.before_up] == [i.text for i in b.before_up]


@pytest.fixture(scope="module")
def gcp_plan() -> Plan:
    return plan_stack(ROOT, "dev-gcp-multiregion")


def test_gcp_regions_are_backends_of_one_global_load_balancer(gcp_plan: Plan) -> None:
    migs = gcp_plan.run.find("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager")
    by_region: dict[str, list[str]] = {}
    for m in migs:
        by_region.setdefault(m.inputs["region"], []).append(m.name)
        assert all(z.startswith(m.inputs["region"] + "-") for z in m.inputs["distributionPolicyZones"])
    # The on-demand base (1) is the home region's share; spot and fallback groups in both.
    assert {r: len(v) for r, v in by_region.items()} == {"us-central1": 3, "us-east4": 2}
    [backend] = gcp_plan.run.find("gcp:compute/backendService:BackendService")
    groups = {b["group"] for b in backend.inputs["backends"]}
    assert len(groups) == 5  # every region's groups
    assert len(gcp_plan.run.find("gcp:compute/globalForwardingRule:GlobalForwardingRule")) == 1
    # Templates are global: each region's carry its own names, and its nodes' agent is told its own region.
    templates = gcp_plan.run.find("gcp:compute/instanceTemplate:InstanceTemplate")
    assert len({t.inputs["namePrefix"] for t in templates}) == len(templates) == 4
    for t in templates:
        assert f'\\"region\\": \\"{t.inputs["region"]}\\"' in t.inputs["metadata"]["user-data"]
    assert len(gcp_plan.run.find("gcp:compute/regionAutoscaler:RegionAutoscaler")) == 2
    assert len(gcp_plan.run.find("gcp:compute/routerNat:RouterNat")) == 2


def test_gcp_controller_sizes_each_regions_fallback_and_nothing_else(gcp_plan: Plan) -> None:
    [fn] = gcp_plan.run.find("gcp:cloudfunctionsv2/function:Function")
    assert fn.inputs["location"] == "us-central1"
    doc = json.loads(fn.inputs["serviceConfig"]["environmentVariables"]["SPOTSTACK_CONTROLLER"])
    assert [r["region"] for r in doc["regions"]] == ["us-central1", "us-east4"]
    assert sum(r["max"] for r in doc["regions"]) == doc["policy"]["max"]
    [size] = [m for m in gcp_plan.run.find("gcp:projects/iAMMember:IAMMember") if m.name == "llm-controller-size"]
    expr = size.inputs["condition"]["expression"]
    for region in ("us-central1", "us-east4"):
        assert f"/regions/{region}/instanceGroupManagers/" in expr
    assert expr.count("instanceGroupManagers/") == 2
    needs = [i.text for i in gcp_plan.before_up if i.kind == "needs"]
    # Each region: its part of the fleet (4) and, as fallback, the fleet's whole spot share (8 - 1 base).
    assert any("GPU quotas in us-central1" in t and "≥ 11" in t for t in needs)
    assert any("GPU quotas in us-east4" in t and "≥ 11" in t for t in needs)
    billed = [i.text for i in gcp_plan.before_up if i.kind == "billed"]
    assert any("read from every region" in t and "/GB" in t for t in billed)


def test_the_gcp_one_region_form_written_as_regions_plans_as_before(tmp_path: Any) -> None:
    a, b = _both_forms(tmp_path, "dev-gcp")
    assert {(r.type, r.name): r.inputs for r in a.run.resources} == {
        (r.type, r.name): r.inputs for r in b.run.resources
    }
