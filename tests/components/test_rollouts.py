"""A new image, agent or setting reaches running nodes spot-safely, and the plan says how, per cloud."""

from __future__ import annotations

import json

import pytest

from spotstack.components.alicloud.mapping import config_digest
from spotstack.components.gcp.mapping import ROLLOUT_MIN_READY_S
from spotstack.components.plan import Plan, plan_stack
from spotstack.runtime.controller.adaptors.alicloud import CONFIG_TAG
from tests.conftest import ROOT

STACKS = {"aws": "dev", "gcp": "dev-gcp", "alicloud": "dev-alicloud"}


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {cloud: plan_stack(ROOT, stack) for cloud, stack in STACKS.items()}


def test_gcp_groups_roll_proactively_replacements_first(plans: dict[str, Plan]) -> None:
    migs = plans["gcp"].run.find("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager")
    assert len(migs) >= 2
    for mig in migs:
        zones = len(mig.inputs["distributionPolicyZones"])
        policy = mig.inputs["updatePolicy"]
        assert policy["type"] == "PROACTIVE" and policy["minimalAction"] == "REPLACE"
        # The API: a fixed surge or unavailable is 0 or at least the number of zones, and not both 0.
        assert policy["maxSurgeFixed"] == zones and policy["maxUnavailableFixed"] == 0
        assert 0 < policy["minReadySec"] == ROLLOUT_MIN_READY_S <= 3600
        # BALANCED distribution needs proactive redistribution off.
        assert mig.inputs["distributionPolicyTargetShape"] == "BALANCED"
        assert policy["instanceRedistributionType"] == "NONE"
        # The update rolls to the template's unique link: a changed template is a new link.
        assert mig.inputs["versions"][0]["instanceTemplate"].endswith("?uniq=1")


def test_the_plan_says_how_each_cloud_rolls(plans: dict[str, Plan]) -> None:
    for cloud, plan in plans.items():
        rolls = [i.text for i in plan.before_up if i.kind == "rolls"]
        assert len(rolls) == 1, cloud
    (aws,) = [i.text for i in plans["aws"].before_up if i.kind == "rolls"]
    assert "instance refresh" in aws and "replacements first" in aws
    (ali,) = [i.text for i in plans["alicloud"].before_up if i.kind == "rolls"]
    assert "controller" in ali and "surge" in ali
    assert "fallback group's stopped instances restart as they were" in ali  # what it does not do is said


def test_alibaba_instances_carry_their_configuration_digest_and_the_controller_rolls_to_it(
    plans: dict[str, Plan],
) -> None:
    """ESS changes a scaling configuration in place: the instances carry a digest of what they were launched
    with (a tag the configuration applies); the controller's document names the main group's, read from the
    configuration's outputs."""
    run = plans["alicloud"].run
    (fn,) = run.find("alicloud:fc/v3Function:V3Function")
    cfg = json.loads(fn.inputs["environmentVariables"]["SPOTSTACK_CONTROLLER"])
    (main,) = run.find("alicloud:ess/scalingConfiguration:ScalingConfiguration", f"{cfg['fleet']}-config")
    assert cfg["config_tag"] == main.inputs["tags"][CONFIG_TAG] and len(cfg["config_tag"]) == 20
    (doc,) = [p for p in run.find("alicloud:ram/policy:Policy") if p.name.endswith("-controller-policy")]
    policy = json.loads(doc.inputs["policyDocument"])
    (write,) = [st for st in policy["Statement"] if "ess:RemoveInstances" in st["Action"]]
    assert f"acs:ess:{cfg['region']}:*:scalinggroup/{cfg['main_group']}" in write["Resource"]


def test_a_changed_boot_document_is_a_new_digest() -> None:
    a = config_digest(user_data="boot-1", image="img", types=["t"], strategy="SpotAsPriceGo", limits=[], disk=200)
    b = config_digest(user_data="boot-2", image="img", types=["t"], strategy="SpotAsPriceGo", limits=[], disk=200)
    assert a != b and a == config_digest(
        user_data="boot-1", image="img", types=["t"], strategy="SpotAsPriceGo", limits=[], disk=200
    )
