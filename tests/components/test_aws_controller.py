"""The AWS fleet controller as the components declare it (mock engine): the function and its code, its memory,
its triggers, its least-privilege role and its alarm; and no controller where the spec needs none."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from spotstack.components.plan.engine import PlanRun
from spotstack.runtime.controller.package import HANDLER, lambda_files
from tests.components.test_gcp_alicloud import one, plan_of
from tests.conftest import base_fleet

FN = "aws:lambda/function:Function"


@pytest.fixture(scope="module")
def plan() -> PlanRun:
    return plan_of(base_fleet())


def test_the_function_runs_the_packaged_controller_with_its_fleet_config(plan: PlanRun) -> None:
    fn = one(plan, FN, "llm-controller")
    assert fn["handler"] == HANDLER and fn["runtime"].startswith("python3.")
    # No reservation: refused in accounts whose concurrency limit is 10 or 50 (rounds serialise through the
    # state item's conditional write instead).
    assert "reservedConcurrentExecutions" not in fn
    # Its code: this package's controller modules, nothing else (the plan shows the archive's files).
    assert sorted(fn["code"]["archive"]) == sorted(lambda_files())
    assert 1 <= len(fn["name"]) <= 64 and 3 <= fn["timeout"] <= 900
    cfg = json.loads(fn["environment"]["variables"]["SPOTSTACK_CONTROLLER"])
    assert cfg["main_group"].endswith("-llm-asg") and cfg["fallback_group"].endswith("-llm-fallback-asg")
    assert cfg["policy"]["spot_types"] == ["g6.xlarge", "g5.xlarge"] and cfg["policy"]["base_on_demand"] == 1
    table = one(plan, "aws:dynamodb/table:Table", "llm-controller-state")
    assert table["hashKey"] == "fleet" and table["billingMode"] == "PAY_PER_REQUEST"
    assert cfg["table"] == table["name"]


def test_events_and_a_schedule_invoke_it(plan: PlanRun) -> None:
    rules = {r.name: r.inputs for r in plan.find("aws:cloudwatch/eventRule:EventRule")}
    assert rules["llm-controller-schedule"]["scheduleExpression"] == "rate(1 minute)"
    pattern = json.loads(rules["llm-controller-interruption"]["eventPattern"])
    assert pattern["detail-type"] == ["EC2 Spot Instance Interruption Warning"]
    failed = json.loads(rules["llm-controller-launch-failed"]["eventPattern"])
    assert failed["detail"]["AutoScalingGroupName"][0].endswith("-llm-asg")
    targets = plan.find("aws:cloudwatch/eventTarget:EventTarget")
    perms = [p.inputs for p in plan.find("aws:lambda/permission:Permission")]
    assert len(targets) == len(rules) == len(perms) == 4
    assert all(p["principal"] == "events.amazonaws.com" and p["action"] == "lambda:InvokeFunction" for p in perms)


def test_its_role_may_do_exactly_what_a_round_does(plan: PlanRun) -> None:
    role = one(plan, "aws:iam/role:Role", "llm-controller-role")
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-controller-policy")["policy"])
    by_sid: dict[str, Any] = {s["Sid"]: s for s in doc["Statement"]}
    size = by_sid["SizeTheFallback"]
    assert size["Resource"].endswith("autoScalingGroupName/" + size["Resource"].rsplit("/", 1)[1])
    assert size["Resource"].endswith("-llm-fallback-asg")  # the fallback group only, never the main group
    assert not any("*" in a for s in doc["Statement"] for a in s["Action"])  # no wildcard actions
    assert all(s["Resource"] != "*" for sid, s in by_sid.items() if sid != "DescribeTheFleet")
    alarm = one(plan, "aws:cloudwatch/metricAlarm:MetricAlarm", "llm-controller-errors")
    assert alarm["metricName"] == "Errors" and alarm["namespace"] == "AWS/Lambda"


def test_no_fallback_no_controller() -> None:
    raw = copy.deepcopy(base_fleet())
    raw["capacity"]["dynamic_on_demand_fallback"] = False
    assert plan_of(raw).find(FN) == []
