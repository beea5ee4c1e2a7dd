"""The model bucket as an Input (Build 2 of the components issue): a program passes its own bucket resource's
name to the fleet (`model_bucket`), without `.apply`, and everything that names the bucket — the node's config,
the IAM grants, the published agent — is built from it when it resolves; a bad name fails with its property."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.validate import validate_fleets
from tests.boot.scratch import BootDoc
from tests.conftest import ROOT


def spec_without_bucket(stack: str) -> Any:
    (raw,) = load_stack(ROOT, stack).config["spotstack:fleets"]
    raw = {**raw, "model_cache": {k: v for k, v in raw["model_cache"].items() if k != "bucket"}}
    with pytest.raises(Exception, match=r"model_cache.bucket: required"):
        validate_fleets([raw])  # a stack's fleets name their bucket
    (spec,), _ = validate_fleets([raw], require_bucket=False)
    return spec


def program(bucket_name: str) -> PlanRun:
    import pulumi_aws as aws

    spec = spec_without_bucket("dev")

    def main() -> None:
        from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs

        bucket = aws.s3.BucketV2("models", bucket=bucket_name)
        AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, model_bucket=bucket.bucket, model_store=bucket))

    return run_offline(main, {"aws:region": "us-east-1"}, project="p", stack="s")


def test_a_bucket_the_program_declares_reaches_everything_that_names_it() -> None:
    import base64

    run = program("my-own-models")
    (lt,) = run.find("aws:ec2/launchTemplate:LaunchTemplate")[:1]
    doc = BootDoc.parse(base64.b64decode(lt.inputs["userData"]).decode())
    cfg = json.loads(next(str(f["content"]) for f in doc.files if f["path"] == "/etc/spotstack/agent.json"))
    assert cfg["cache"]["model_url"].startswith("s3://my-own-models/")
    assert any("s3://my-own-models/spotstack-agent/" in " ".join(c) for c in doc.runcmd)
    policy = json.loads(run.find("aws:iam/rolePolicy:RolePolicy", "llm-node-policy")[0].inputs["policy"])
    (read,) = [s for s in policy["Statement"] if s["Sid"] == "ReadModelAndAgent"]
    assert all(r.startswith("arn:aws:s3:::my-own-models/") for r in read["Resource"])
    (wheel,) = run.find("aws:s3/bucketObjectv2:BucketObjectv2")
    assert wheel.inputs["bucket"] == "my-own-models"


def test_a_bad_bucket_name_fails_with_its_property() -> None:
    from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs

    spec = spec_without_bucket("dev")
    with pytest.raises(pulumi.InputPropertiesError, match=r"model_bucket: 'Not_A_Bucket' is not a bucket name"):
        run_offline(
            lambda: AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, model_bucket="Not_A_Bucket")),
            {"aws:region": "us-east-1"},
            project="p",
            stack="s",
        )


def test_no_bucket_at_all_is_an_error() -> None:
    from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs

    spec = spec_without_bucket("dev")
    with pytest.raises(Exception, match=r"model_bucket: give the bucket here or as spec.model_cache.bucket"):
        run_offline(
            lambda: AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec)), {"aws:region": "us-east-1"}, project="p", stack="s"
        )
