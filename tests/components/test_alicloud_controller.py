"""The Alibaba fleet controller as the components declare it (mock engine): the function and its code, its
triggers (a timer, ECS spot interruptions through EventBridge), its least-privilege role, its memory, logs and
alarm; and without a fallback group (ESS's own on-demand compensation is the fallback) a controller that only rolls
new configurations through the main group."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest

from spotstack.components.alicloud.controller import INTERRUPTION
from spotstack.components.plan.engine import PlanRun
from spotstack.runtime.controller.package import ALICLOUD_HANDLER, function_files
from tests.components.test_gcp_alicloud import as_cloud, one, plan_of

FN = "alicloud:fc/v3Function:V3Function"


def with_pool() -> dict[str, Any]:
    raw = as_cloud("alicloud")
    raw["capacity"]["warm_pool"] = {"size": 1}
    return raw


@pytest.fixture(scope="module")
def plan() -> PlanRun:
    return plan_of(with_pool())


def test_the_function_runs_the_packaged_controller_with_its_fleet_config(plan: PlanRun) -> None:
    fn = one(plan, FN, "llm-controller")
    assert fn["handler"] == ALICLOUD_HANDLER and fn["runtime"].startswith("python3.")
    # FC 3.0: memory (GB) within 1x-4x the vCPUs, a multiple of 64 MB; timeout at most 86400 s.
    assert fn["memorySize"] % 64 == 0 and 1 <= (fn["memorySize"] / 1024) / fn["cpu"] <= 4 and fn["timeout"] <= 600
    names = sorted(zipfile.ZipFile(io.BytesIO(base64.b64decode(fn["code"]["zipFile"]))).namelist())
    assert names == sorted(function_files("alicloud"))
    cfg = json.loads(fn["environmentVariables"]["SPOTSTACK_CONTROLLER"])
    assert cfg["main_group"] != cfg["fallback_group"] and cfg["listener"] and cfg["server_group"]
    assert cfg["policy"]["spot_types"] == ["ecs.gn7i-c8g1.2xlarge", "ecs.gn6i-c4g1.xlarge"]
    conc = one(plan, "alicloud:fc/v3ConcurrencyConfig:V3ConcurrencyConfig", "llm-controller-concurrency")
    assert conc["reservedConcurrency"] == 1  # one round at a time
    assert fn["logConfig"]["logstore"] == "controller"


def test_a_timer_and_spot_interruptions_call_it(plan: PlanRun) -> None:
    triggers = {t.name: t.inputs for t in plan.find("alicloud:fc/v3Trigger:V3Trigger")}
    timer = json.loads(triggers["llm-controller-schedule"]["triggerConfig"])
    assert triggers["llm-controller-schedule"]["triggerType"] == "timer" and timer["cronExpression"] == "@every 1m"
    eb = triggers["llm-controller-interruption"]
    assert eb["triggerType"] == "eventbridge"
    assert json.loads(json.loads(eb["triggerConfig"])["eventRuleFilterPattern"]) == INTERRUPTION


def test_its_role_may_size_only_its_own_groups(plan: PlanRun) -> None:
    role = one(plan, "alicloud:ram/role:Role", "llm-controller-role")
    assert json.loads(role["assumeRolePolicyDocument"])["Statement"][0]["Principal"] == {"Service": ["fc.aliyuncs.com"]}
    doc = json.loads(one(plan, "alicloud:ram/policy:Policy", "llm-controller-policy")["policyDocument"])
    by_action = {a: s["Resource"] for s in doc["Statement"] for a in s["Action"]}
    cfg = json.loads(one(plan, FN, "llm-controller")["environmentVariables"]["SPOTSTACK_CONTROLLER"])
    # The fallback group's size; the main group's surge and stale instances in a roll.
    groups = [f"acs:ess:us-west-1:*:scalinggroup/{cfg[g]}" for g in ("main_group", "fallback_group")]
    assert by_action["ess:ModifyScalingGroup"] == groups
    assert by_action["ess:RemoveInstances"] == by_action["ess:ModifyScalingGroup"]
    assert all(r.startswith(f"acs:oss:*:*:{cfg['bucket']}") for r in by_action["oss:PutObject"])
    # Nodes no longer size groups (the controller does).
    node = json.loads(one(plan, "alicloud:ram/policy:Policy", "llm-node-policy")["policyDocument"])
    assert not [a for s in node["Statement"] for a in s["Action"] if a == "ess:ModifyScalingGroup"]
    alarm = one(plan, "alicloud:cms/alarm:Alarm", "llm-controller-errors")
    assert alarm["project"] == "acs_fc" and alarm["contactGroups"]
    # FC's CloudMonitor dimensions are keyed `region` (+ `functionName`): ECS's `regionId` matches no FC series.
    (dims,) = json.loads(alarm["metricDimensions"])
    assert set(dims) == {"region", "functionName"} and dims["region"] == "us-west-1"


def test_without_a_fallback_group_the_controller_only_rolls() -> None:
    from spotstack.runtime.controller.adaptors.alicloud import CONFIG_TAG

    plan = plan_of(as_cloud("alicloud"))
    cfg = json.loads(one(plan, FN, "llm-controller")["environmentVariables"]["SPOTSTACK_CONTROLLER"])
    assert cfg["fallback_group"] is None
    assert (
        cfg["config_tag"]
        == one(plan, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-config")["tags"][CONFIG_TAG]
    )
    doc = json.loads(one(plan, "alicloud:ram/policy:Policy", "llm-controller-policy")["policyDocument"])
    by_action = {a: s["Resource"] for s in doc["Statement"] for a in s["Action"]}
    assert by_action["ess:RemoveInstances"] == [f"acs:ess:us-west-1:*:scalinggroup/{cfg['main_group']}"]
