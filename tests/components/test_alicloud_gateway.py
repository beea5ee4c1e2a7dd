"""The fleet gateway on Alibaba Cloud (`service.gateway`, stacks/Pulumi.dev-alicloud-llm.yaml) under the mock
engine: the ALB's listener forwards to the gateways' server group, the nodes' server group stays health-checked
through a rule no client matches, and the gateways' ESS group, configuration, RAM policy and boot document."""

from __future__ import annotations

import base64
import json
import shlex
from typing import Any

import pytest
import yaml

from spotstack.components.plan import plan_stack
from spotstack.components.plan.engine import PlanRun
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def plan() -> PlanRun:
    return plan_stack(ROOT, "dev-alicloud-llm").run


def one(plan: PlanRun, type_: str, name: str) -> dict[str, Any]:
    found = plan.find(type_, name)
    assert len(found) == 1, [r.name for r in plan.find(type_)]
    return found[0].inputs


def test_the_listener_forwards_to_the_gateways_and_the_nodes_stay_health_checked(plan: PlanRun) -> None:
    listener = one(plan, "alicloud:alb/listener:Listener", "llm-http")
    tuples = listener["defaultActions"][0]["forwardGroupConfig"]["serverGroupTuples"]
    assert [t["serverGroupId"] for t in tuples] == ["servergroup-llm-gateway-servers"]
    assert listener["requestTimeout"] == 600
    gw = one(plan, "alicloud:alb/serverGroup:ServerGroup", "llm-gateway-servers")
    assert gw["healthCheckConfig"]["healthCheckPath"] == "/ready"
    assert gw["healthCheckConfig"]["healthCheckConnectPort"] == 8000
    rule = one(plan, "alicloud:alb/rule:Rule", "llm-nodes-health-only")
    (cond,) = rule["ruleConditions"]
    assert cond["type"] == "Header" and cond["headerConfig"]["key"] == "X-Spotstack-Health-Only"
    (action,) = rule["ruleActions"]
    assert action["forwardGroupConfig"]["serverGroupTuples"][0]["serverGroupId"] == "servergroup-llm-servers"


def test_the_gateways_group_configuration_policy_and_boot_document(plan: PlanRun) -> None:
    group = one(plan, "alicloud:ess/scalingGroup:ScalingGroup", "llm-gateway-group")
    assert group["minSize"] == group["maxSize"] == group["desiredCapacity"] == 2
    assert group["albServerGroups"] == [
        {"albServerGroupId": "servergroup-llm-gateway-servers", "port": 8000, "weight": 100}
    ]
    cfg = one(plan, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-gateway-config")
    assert cfg["spotStrategy"] == "NoSpot" and cfg["instanceTypes"] == ["ecs.c7.large"]
    assert "spotstack:fleet" not in cfg["tags"] and cfg["tags"]["spotstack:gateway"] == "llm"
    doc = yaml.safe_load(base64.b64decode(cfg["userData"]).decode())
    steps = [" ".join(c) for c in doc["runcmd"]]
    assert any("fetch-secret --cloud alicloud --name llm-api-keys --region us-west-1" in s for s in steps)
    (unit,) = [f["content"] for f in doc["write_files"] if f["path"].endswith("spotstack-gateway.service")]
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line[len("ExecStart=") :])
    assert argv[argv.index("--discover") + 1] == "alicloud" and argv[argv.index("--fleet") + 1] == "llm"
    policy = json.loads(one(plan, "alicloud:ram/policy:Policy", "llm-gateway-policy")["policyDocument"])
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {
        "ecs:DescribeInstances",
        "oos:GetSecretParameter",
        "kms:Decrypt",
        "kms:GetSecretValue",
        "oss:GetObject",
    }
    (oss,) = [st for st in policy["Statement"] if st["Action"] == ["oss:GetObject"]]
    assert oss["Resource"] == ["acs:oss:*:*:acme-models-dev-ali/spotstack-agent/*"]
