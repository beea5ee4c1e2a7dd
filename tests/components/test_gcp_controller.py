"""The GCP fleet controller as the components declare it (mock engine): the function, its source and memory, its
callers (a schedule, the preemption sink and its push subscription), its least-privilege identity, its alert."""

from __future__ import annotations

import copy
import json
import re

import pytest

from spotstack.components.gcp.controller import OBSERVE, SIZE, preemption_filter
from spotstack.components.plan.engine import PlanRun
from spotstack.runtime.controller.package import GCP_MAIN, GCP_REQUIREMENTS, function_files
from tests.components.test_gcp_alicloud import as_cloud, one, plan_of

FN = "gcp:cloudfunctionsv2/function:Function"


@pytest.fixture(scope="module")
def plan() -> PlanRun:
    return plan_of(as_cloud("gcp"))


def test_the_function_runs_the_packaged_controller_with_its_fleet_config(plan: PlanRun) -> None:
    fn = one(plan, FN, "llm-controller")
    build, svc = fn["buildConfig"], fn["serviceConfig"]
    assert build["runtime"].startswith("python3") and build["entryPoint"] == "handler"
    assert svc["maxInstanceCount"] == 1 and svc["maxInstanceRequestConcurrency"] == 1  # one round at a time
    assert svc["ingressSettings"] == "ALLOW_INTERNAL_ONLY" and 1 <= svc["timeoutSeconds"] <= 540
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,62}", fn["name"])
    cfg = json.loads(svc["environmentVariables"]["SPOTSTACK_CONTROLLER"])
    assert set(cfg["groups"]) == {"base", "spot", "fallback"} and cfg["project"]
    assert cfg["policy"]["spot_types"] == ["g2-standard-4", "a2-highgpu-1g"] and cfg["object"] == "controller/llm.json"
    # Its source: this package's controller modules, main.py naming the entry point, requirements.txt.
    src = one(plan, "gcp:storage/bucketObject:BucketObject", "llm-controller-source")
    archive = src["source"]["archive"]
    assert sorted(set(archive) - {"main.py", "requirements.txt"}) == sorted(function_files("gcp"))
    assert archive["main.py"]["text"] == GCP_MAIN and archive["requirements.txt"]["text"] == GCP_REQUIREMENTS
    assert build["source"]["storageSource"]["object"] == src["name"] and src["name"].endswith(".zip")
    bucket = one(plan, "gcp:storage/bucket:Bucket", "llm-controller")
    assert bucket["publicAccessPrevention"] == "enforced" and bucket["uniformBucketLevelAccess"] is True
    assert cfg["bucket"].startswith("llm-controller")  # auto-named: bucket names are global


def test_a_schedule_and_the_fleets_preemptions_call_it_signed(plan: PlanRun) -> None:
    fn_url = one(plan, FN, "llm-controller")
    job = one(plan, "gcp:cloudscheduler/job:Job", "llm-controller-schedule")
    assert job["schedule"] == "* * * * *" and job["httpTarget"]["httpMethod"] == "POST"
    invoker = one(plan, "gcp:serviceaccount/account:Account", "llm-controller-invoker")
    assert job["httpTarget"]["oidcToken"]["serviceAccountEmail"].startswith(invoker["accountId"])
    sink = one(plan, "gcp:logging/projectSink:ProjectSink", "llm-preemptions")
    # Stack-scoped VM names: another stack's fleet `llm` in the same project is not this one's.
    assert sink["filter"] == preemption_filter("spotstack-test-llm-spot") and sink["uniqueWriterIdentity"] is True
    assert sink["destination"].startswith("pubsub.googleapis.com/")
    push = one(plan, "gcp:pubsub/subscription:Subscription", "llm-preemptions-push")
    signer = job["httpTarget"]["oidcToken"]["serviceAccountEmail"]
    assert push["pushConfig"]["oidcToken"]["serviceAccountEmail"] == signer
    assert push["pushConfig"]["pushEndpoint"] == job["httpTarget"]["uri"]
    run = one(plan, "gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "llm-controller-invoke")
    assert run["role"] == "roles/run.invoker" and run["name"] == fn_url["name"]
    pub = one(plan, "gcp:pubsub/topicIAMMember:TopicIAMMember", "llm-preemptions-publish")
    assert pub["role"] == "roles/pubsub.publisher"


def test_its_identity_may_read_the_fleet_and_size_only_the_fallback(plan: PlanRun) -> None:
    roles = {r.name: r.inputs for r in plan.find("gcp:projects/iAMCustomRole:IAMCustomRole")}
    assert roles["llm-controller-observe"]["permissions"] == OBSERVE
    assert all(p.endswith((".get", ".list")) for p in OBSERVE)
    assert roles["llm-controller-size"]["permissions"] == SIZE
    assert all(re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", r["roleId"]) for r in roles.values())
    size = one(plan, "gcp:projects/iAMMember:IAMMember", "llm-controller-size")
    expr = size["condition"]["expression"]
    assert "/instanceGroupManagers/" in expr and "llm-fallback-mig" in expr and '"spotstack-test-llm-fallback-"' in expr
    assert "llm-spot" not in expr and "llm-base" not in expr  # the fleet's other groups are out of reach
    memory = one(plan, "gcp:storage/bucketIAMMember:BucketIAMMember", "llm-controller-memory")
    assert memory["role"] == "roles/storage.objectUser"
    alert = one(plan, "gcp:monitoring/alertPolicy:AlertPolicy", "llm-controller-errors")
    assert 'response_code_class = "5xx"' in alert["conditions"][0]["conditionThreshold"]["filter"]


def test_no_controller_without_a_fallback_group() -> None:
    raw = copy.deepcopy(as_cloud("gcp"))
    raw["capacity"]["dynamic_on_demand_fallback"] = False
    plan = plan_of(raw)
    assert plan.find(FN) == [] and plan.find("gcp:cloudscheduler/job:Job") == []
