"""Cloud rules the mock engine does not enforce, checked on every resource of every stack's plan.

Pulumi's mock engine accepts any input; the clouds do not. Each rule (tests/components/cloud_rules.py) is taken from
the installed providers' docstrings or the cloud's API reference (named in the rule) and is checked for every
resource of its type in the plans of `stacks/`, so a change that breaks one fails here instead of at `pulumi up`.
"""

from __future__ import annotations

import pytest

from spotstack.components.plan import Plan, plan_stack
from tests.components.cloud_rules import RULES
from tests.conftest import ROOT

# Every committed stack planned (~10 s): `make test` checks every rule; `make quick` leaves them to it.
pytestmark = pytest.mark.slow

STACKS = [
    "dev",
    "dev-gcp",
    "dev-alicloud",
    "dev-llm",
    "dev-gcp-llm",
    "dev-alicloud-llm",
    "dev-multiregion",
    "dev-gcp-multiregion",
    "dev-alicloud-multiregion",
]


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {s: plan_stack(ROOT, s) for s in STACKS}


def test_every_rule_names_a_resource_type_some_plan_declares(plans: dict[str, Plan]) -> None:
    """A rule for a type nothing declares checks nothing (a renamed type would silently pass)."""
    declared = {r.type for p in plans.values() for r in p.run.resources}
    unused = sorted({r.type for r in RULES} - declared - {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
    assert not unused
    assert declared & {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_keeps_its_clouds_rules(plans: dict[str, Plan], stack: str) -> None:
    pairs = [(r, rule) for r in plans[stack].run.resources for rule in RULES if rule.type == r.type]
    broken = [f"{r.type} {r.name}: {rule.what}" for r, rule in pairs if not rule.ok(r.inputs)]
    assert not broken, "\n".join(broken)
    assert len(pairs) >= 8  # the stack's resources were checked, not skipped


def test_alicloud_qps_rule_tracks_a_metric_its_load_balancer_reports(plans: dict[str, Plan]) -> None:
    """ESS's LoadBalancerRealServerAverageQps exists for ALB server groups only, named by a `rulePool`
    alarm dimension (CreateScalingRule API reference); a CLB VServer group reports no such metric."""
    rules = [r for r in plans["dev-alicloud"].run.resources if r.type == "alicloud:ess/scalingRule:ScalingRule"]
    qps = [r.inputs for r in rules if r.inputs.get("metricName") == "LoadBalancerRealServerAverageQps"]
    assert qps
    for i in qps:
        assert (i.get("alarmDimension") or {}).get("dimensionKey") == "rulePool"


@pytest.mark.parametrize("stack", STACKS)
def test_plan_says_what_must_exist_before_pulumi_up(plans: dict[str, Plan], stack: str) -> None:
    needs = [i.text for i in plans[stack].before_up if i.kind == "needs"]
    billed = [i.text for i in plans[stack].before_up if i.kind == "billed"]
    assert any("quota" in t for t in needs) and any("image" in t for t in needs)
    assert any("manifest" in t for t in needs)
    assert any("load balancer" in t.lower() for t in billed)
    if stack != "dev":
        assert any("NAT" in t for t in billed)  # GCP and Alibaba nodes reach out through a NAT gateway
