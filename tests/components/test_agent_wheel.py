"""Nodes install the agent that deployed them from the fleet's own bucket (Build 8 of the components issue): each
cloud's fleet publishes the wheel of the deploying spotstack beside the model, its boot document fetches that
object by digest, and its node identity may read it; without a bucket the plan says nodes go to the index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from spotstack.components.agent_wheel import KEY_PREFIX, build
from spotstack.components.plan import Plan, plan_stack
from spotstack.runtime.clouds import CLOUDS
from tests.boot.test_boot_path import rendered_boot_document
from tests.conftest import ROOT

STACKS = {"aws": "dev", "gcp": "dev-gcp", "alicloud": "dev-alicloud"}
OBJECT = {
    "aws": ("aws:s3/bucketObjectv2:BucketObjectv2", "key"),
    "gcp": ("gcp:storage/bucketObject:BucketObject", "name"),
    "alicloud": ("alicloud:oss/bucketObject:BucketObject", "key"),
}


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {cloud: plan_stack(ROOT, stack) for cloud, stack in STACKS.items()}


def source_file(source: Any) -> Path:
    return Path(source["file"] if isinstance(source, dict) else source)  # an Asset, or Alibaba's path


@pytest.mark.slow
@pytest.mark.parametrize("cloud", list(STACKS))
def test_the_fleet_publishes_its_agent_and_boots_it_by_digest(cloud: str, plans: dict[str, Plan]) -> None:
    typ, key_field = OBJECT[cloud]
    (obj,) = [r for r in plans[cloud].run.find(typ) if r.name.endswith("-agent-wheel")]
    data = source_file(obj.inputs["source"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    wheel = build()
    assert digest == wheel.sha256 and obj.inputs[key_field] == wheel.key
    assert obj.inputs[key_field].startswith(KEY_PREFIX)
    (bucket,) = {r.inputs["bucket"] for r in plans[cloud].run.find(typ) if r.name.endswith("-agent-wheel")}
    url = CLOUDS[cloud].url(bucket, wheel.key)
    boot = rendered_boot_document(cloud)
    assert f"{url} {digest}" in boot  # fetched from the fleet's bucket and checked against the deployed digest
    assert "pip install" in boot and f"spotstack-{wheel.version}-py3-none-any.whl[agent" in boot


def test_each_node_identity_may_read_the_published_wheels(plans: dict[str, Plan]) -> None:
    aws_doc = json.loads(plans["aws"].run.find("aws:iam/rolePolicy:RolePolicy", "llm-node-policy")[0].inputs["policy"])
    (read,) = [s for s in aws_doc["Statement"] if s["Sid"] == "ReadModelAndAgent"]
    assert "arn:aws:s3:::acme-models-dev/spotstack-agent/*" in read["Resource"]
    (member,) = plans["gcp"].run.find("gcp:storage/bucketIAMMember:BucketIAMMember", "llm-read-model")
    assert 'objects/spotstack-agent/")' in member.inputs["condition"]["expression"]
    (policy,) = plans["alicloud"].run.find("alicloud:ram/policy:Policy", "llm-node-policy")
    ram = json.loads(policy.inputs["policyDocument"])
    reads = [r for s in ram["Statement"] if "oss:GetObject" in s["Action"] for r in s["Resource"]]
    assert "acs:oss:*:*:acme-models-dev-ali/spotstack-agent/*" in reads


def test_without_a_bucket_the_plan_says_nodes_use_the_index() -> None:
    from spotstack.components.plan.stackfile import load_stack
    from spotstack.components.validate import validate_fleets

    (raw,) = load_stack(ROOT, "dev").config["spotstack:fleets"]
    assert not [w for w in validate_fleets([raw])[1] if w.path.endswith("model_cache")]
    raw = {k: v for k, v in raw.items() if k != "model_cache"}
    _, warnings = validate_fleets([raw])
    assert any(w.path == "fleets[0].model_cache" and "package index" in w.reason for w in warnings)
