"""`capacity.warm_pool` on each cloud, under the mock engine: the fallback's stopped instances, declared as each
cloud's API accepts them (checked against the providers' docs), and what the plan says they cost."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
import yaml

from spotstack.components import pricing
from spotstack.components.plan import prereqs
from spotstack.components.plan.engine import PlanRun
from spotstack.components.validate import SpecError, validate_fleets
from tests.components.test_gcp_alicloud import as_cloud, one, plan_of
from tests.conftest import base_fleet

GROUP = "aws:autoscaling/group:Group"


def warm(cloud: str, **pool: Any) -> dict[str, Any]:
    f = copy.deepcopy(base_fleet()) if cloud == "aws" else as_cloud(cloud)
    f["capacity"]["warm_pool"] = pool or {"size": 2}
    return f


def agent_config_of(user_data: str) -> dict[str, Any]:
    doc = yaml.safe_load(base64.b64decode(user_data).decode())
    (cfg,) = [f["content"] for f in doc["write_files"] if f["path"].endswith("agent.json")]
    return dict(json.loads(cfg))


# ---- AWS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aws() -> PlanRun:
    return plan_of(warm("aws"))


def test_aws_warm_pool_is_a_single_type_on_demand_group(aws: PlanRun) -> None:
    """PutWarmPool refuses a group with a mixed instances policy or spot: the fallback group takes a plain
    launch template whose instance type is fixed, and keeps its stopped instances on scale-in."""
    fb = one(aws, GROUP, "llm-fallback-asg")
    assert "mixedInstancesPolicy" not in fb
    lt = one(aws, "aws:ec2/launchTemplate:LaunchTemplate", "llm-warm-lt")
    assert lt["instanceType"] == "g6.xlarge"  # the first of the ordered list
    assert fb["launchTemplate"]["version"] == "1"  # the template's number: a new one starts an instance refresh
    pool = fb["warmPool"]
    assert pool["poolState"] == "Stopped"
    # Two prepared in all (stopped, or running as fallback): no refill boots, returned on scale-in.
    assert pool["minSize"] == 0 and pool["maxGroupPreparedCapacity"] == 2
    assert pool["instanceReusePolicy"]["reuseOnScaleIn"] is True
    # The main group is as before: mixed, no pool.
    main = one(aws, GROUP, "llm-asg")
    assert "warmPool" not in main and main["mixedInstancesPolicy"]["launchTemplate"]["overrides"]


def test_aws_warm_nodes_hold_the_launching_hook_until_ready(aws: PlanRun) -> None:
    """A warm node must finish loading before AWS stops it, so the group has a launching hook and the warm
    launch template's agent knows to complete it once READY; the main template's agent does not."""
    fb = one(aws, GROUP, "llm-fallback-asg")
    hooks = {h["lifecycleTransition"]: h for h in fb["initialLifecycleHooks"]}
    launching = hooks["autoscaling:EC2_INSTANCE_LAUNCHING"]
    assert launching["name"] == "llm-warm" and launching["defaultResult"] == "CONTINUE"
    assert 30 <= launching["heartbeatTimeout"] <= 7200  # PutLifecycleHook's range
    assert hooks["autoscaling:EC2_INSTANCE_TERMINATING"]["name"] == "llm-drain"
    warm_cfg = agent_config_of(one(aws, "aws:ec2/launchTemplate:LaunchTemplate", "llm-warm-lt")["userData"])
    main_cfg = agent_config_of(one(aws, "aws:ec2/launchTemplate:LaunchTemplate", "llm-lt")["userData"])
    assert warm_cfg["lifecycle"]["launch_hook_name"] == "llm-warm"
    assert main_cfg["lifecycle"].get("launch_hook_name") is None
    # The agent reads its group from the instance's tag in both groups.
    assert warm_cfg["lifecycle"].get("group_name") is None


def test_aws_running_warm_pool(fleet: dict[str, Any]) -> None:
    fleet["capacity"]["warm_pool"] = {"size": 1, "state": "running"}
    fb = one(plan_of(fleet), GROUP, "llm-fallback-asg")
    assert fb["warmPool"]["poolState"] == "Running"


# ---- GCP ------------------------------------------------------------------------------------------
def test_gcp_fallback_group_keeps_a_standby_pool_of_stopped_vms() -> None:
    plan = plan_of(warm("gcp"))
    mig = one(plan, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "llm-fallback-mig")
    assert mig["targetStoppedSize"] == 2
    policy = mig["standbyPolicy"]
    assert policy["mode"] == "SCALE_OUT_POOL"  # scale-out starts stopped VMs first, the MIG refills the pool
    assert 0 <= policy["initialDelaySec"] <= 3600  # the provider's documented range
    selections = mig["instanceFlexibilityPolicy"]["instanceSelections"]
    assert [s["machineTypes"] for s in selections] == [["g2-standard-4"]]
    spot = one(plan, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "llm-spot-mig")
    assert "standbyPolicy" not in spot and "targetStoppedSize" not in spot


# ---- Alibaba --------------------------------------------------------------------------------------
def test_alicloud_warm_pool_is_an_economical_mode_fallback_group() -> None:
    plan = plan_of(warm("alicloud"))
    group = one(plan, "alicloud:ess/scalingGroup:ScalingGroup", "llm-fallback-group")
    assert group["scalingPolicy"] == "recycle"  # the provider's values: recycle, release, forceRecycle, ...
    assert (group["minSize"], group["desiredCapacity"]) == (0, 0)
    assert group["albServerGroups"] and group["albServerGroups"][0]["port"] == 8080
    config = one(plan, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-fallback-config")
    assert config["spotStrategy"] == "NoSpot"
    assert config["instanceTypes"] == ["ecs.gn7i-c8g1.2xlarge"]
    hook = one(plan, "alicloud:ess/lifecycleHook:LifecycleHook", "llm-fallback-drain")
    assert hook["lifecycleTransition"] == "SCALE_IN" and hook["name"] == "llm-drain"
    main = one(plan, "alicloud:ess/scalingGroup:ScalingGroup", "llm-group")
    assert main.get("scalingPolicy") in (None, "release")
    # A node in either group only reads its own scaling state; the SCALE_IN hook ends on its timeout.
    doc = json.loads(one(plan, "alicloud:ram/policy:Policy", "llm-node-policy")["policyDocument"])
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert "ess:DescribeScalingInstances" in actions and not any(a.startswith("ess:Complete") for a in actions)


# ---- spec and plan --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cloud", "capacity", "path", "reason"),
    [
        ("aws", {"dynamic_on_demand_fallback": False, "warm_pool": {"size": 1}}, "capacity.warm_pool", "fallback"),
        ("aws", {"warm_pool": {"size": 99}}, "capacity.warm_pool.size", "<= max"),
        ("gcp", {"warm_pool": {"size": 1, "state": "running"}}, "capacity.warm_pool.state", "stopped only"),
        ("alicloud", {"warm_pool": {"size": 1, "state": "running"}}, "capacity.warm_pool.state", "stopped only"),
        ("aws", {"warm_pool": {"size": 0}}, "capacity.warm_pool.size", "must be >= 1"),
    ],
)
def test_bad_warm_pools_name_their_path(cloud: str, capacity: dict[str, Any], path: str, reason: str) -> None:
    f = warm(cloud)
    f["capacity"].update(capacity)
    with pytest.raises(SpecError) as err:
        validate_fleets([f])
    hits = [p for p in err.value.problems if p.path == f"fleets[0].{path}"]
    assert hits and reason in hits[0].reason, err.value.problems


@pytest.mark.parametrize(("cloud", "per_gb"), [("aws", 0.08), ("gcp", 0.04)])
def test_plan_prices_the_idle_pool_as_disks(cloud: str, per_gb: float) -> None:
    spec = validate_fleets([warm(cloud)])[0][0]
    idle = pricing.cost_range(spec).warm_pool_idle
    assert idle == pytest.approx(2 * 200 * per_gb / 730, abs=1e-4)
    billed = [i.text for i in prereqs._common(spec) if i.kind == "billed"]
    assert any("warm pool: 2 stopped" in t for t in billed), billed


def test_alicloud_pool_is_priced_at_what_recycle_keeps() -> None:
    """ESS's economical mode has no pool size: it keeps, stopped, every instance the fallback group scales in, up
    to that group's max (max - base). The plan prices that many disks, not the spec's `size`."""
    spec = validate_fleets([warm("alicloud")])[0][0]
    kept = spec.capacity.max - spec.capacity.base_on_demand
    assert kept > 2
    assert pricing.cost_range(spec).warm_pool_idle == pytest.approx(kept * 200 * 0.14 / 730, abs=1e-4)
    billed = [i.text for i in prereqs._common(spec) if i.kind == "billed"]
    assert any(f"warm pool: up to {kept} stopped" in t for t in billed), billed


def test_running_pool_is_priced_as_instances(fleet: dict[str, Any]) -> None:
    fleet["capacity"]["warm_pool"] = {"size": 1, "state": "running"}
    spec = validate_fleets([fleet])[0][0]
    assert pricing.cost_range(spec).warm_pool_idle == pytest.approx(0.8048, abs=1e-3)  # one g6.xlarge on-demand
