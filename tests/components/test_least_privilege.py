"""Least privilege for the node, per cloud: every call the agent makes is one its role allows, and the role allows
nothing the agent never calls.

The calls are read from the agent's own source where it names them — boto3 operations (mapped through botocore's
service models), Alibaba RPC actions and MNS requests, Google REST methods — so a new call without its grant fails
here, and so does a grant that outlived its call. Calls that libraries make on the agent's behalf (fsspec's object
reads and writes, the container runtime's image pull, a service's dependent action) are listed below with why.
The controllers' roles are checked against the calls their rounds make in tests/runtime/test_cloud_controller_*.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from spotstack.components.plan.engine import PlanRun
from tests.components.test_gcp_alicloud import as_cloud, plan_of
from tests.components.test_jobs_queues import JOBS
from tests.conftest import ROOT

RUNTIME = ROOT / "runtime"
NOT_ON_A_NODE = ("controller", "local", "emulators")  # the controller has its own role; the others never deploy


def node_sources() -> dict[Path, str]:
    return {
        p.relative_to(ROOT): p.read_text()
        for p in sorted(RUNTIME.rglob("*.py"))
        if p.relative_to(RUNTIME).parts[0] not in NOT_ON_A_NODE
    }


def planned(cloud: str) -> PlanRun:
    """A fleet with everything that needs a grant: the model cache (and its token), an image repository, jobs."""
    raw = as_cloud(cloud) if cloud != "aws" else __import__("tests.conftest", fromlist=["base_fleet"]).base_fleet()
    raw.update(jobs=JOBS, scaling={})
    return plan_of(raw)


@pytest.fixture(scope="module", params=["aws", "gcp", "alicloud"])
def plans(request: pytest.FixtureRequest) -> tuple[str, PlanRun]:
    return request.param, planned(request.param)


# ---- AWS ------------------------------------------------------------------------------------------
# runtime/jobs/sqs.create_queues makes the local fleet's queues; in a cloud the components declare them.
AWS_LOCAL_ONLY = {"create_queue"}
AWS_BY_LIBRARIES = {
    # s3fs/objectget: the model and the agent's wheel (GetObject; HeadObject is authorised as GetObject), listing
    # the model's prefix; the jobs' results and checkpoints (PutObject, DeleteObject for a superseded checkpoint).
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutObject",
    "s3:DeleteObject",
    # The container runtime pulling the workload image with the agent's ECR login.
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
}


def aws_agent_calls() -> dict[str, str]:
    """IAM action -> the module that calls it, from each module's boto3 clients and the operations called on them."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    out: dict[str, str] = {}
    for path, text in node_sources().items():
        services = set(re.findall(r'\.client\(\s*"([a-z0-9-]+)"', text))
        names = set(re.findall(r"\.([a-z][a-z0-9_]+)\s*[(,]", text)) | set(re.findall(r'get_paginator\("(\w+)"', text))
        for svc in services:
            model = session.get_service_model(svc)
            ops = {xform_name(op): op for op in model.operation_names}
            for n in (names & ops.keys()) - AWS_LOCAL_ONLY:
                out[f"{model.signing_name}:{ops[n]}"] = str(path)
    return out


def aws_granted(plan: PlanRun) -> set[str]:
    doc = json.loads(plan.find("aws:iam/rolePolicy:RolePolicy", "llm-node-policy")[0].inputs["policy"])
    return {a for st in doc["Statement"] for a in st["Action"]}


def test_aws_calls_are_read_from_the_source() -> None:
    calls = aws_agent_calls()
    # What the agent is known to call (a floor: the scan must see these, or it sees nothing).
    assert {
        "elasticloadbalancing:DeregisterTargets",
        "autoscaling:CompleteLifecycleAction",
        "ec2:DescribeInstances",
        "ssm:GetParameter",
        "ecr:GetAuthorizationToken",
        "sqs:ReceiveMessage",
        "autoscaling:SetInstanceProtection",
    } <= set(calls), calls


# ---- Alibaba --------------------------------------------------------------------------------------
ALI_PRODUCTS = {"2019-06-01": "oos", "2018-12-01": "cr", "2014-05-26": "ecs", "2014-08-28": "ess"}
# MNS's REST requests (runtime/jobs/mns.py) -> their RAM actions (MNS API reference).
MNS_ACTIONS = {
    ("POST", "/messages"): "mns:SendMessage",
    ("GET", "/messages?"): "mns:ReceiveMessage",
    ("PUT", "/messages?"): "mns:ChangeMessageVisibility",
    ("DELETE", "/messages?"): "mns:DeleteMessage",
    ("GET", ""): "mns:GetQueueAttributes",
}
ALI_BY_LIBRARIES = {
    "oss:GetObject",  # ossfs and objectget: the model, the agent's wheel, job checkpoints
    "oss:ListObjects",  # the model's and the jobs' prefixes
    "oss:PutObject",  # job results and checkpoints
    "oss:DeleteObject",  # a superseded checkpoint
    "cr:PullRepository",  # the container runtime's pull with the agent's ACR login
    # OOS reads a Secret parameter through KMS as the caller: GetSecretParameter's dependent actions.
    "kms:Decrypt",
    "kms:GetSecretValue",
}


def ali_agent_calls() -> dict[str, str]:
    out: dict[str, str] = {}
    for path, text in node_sources().items():
        for action, version in re.findall(r'alicloud_rpc\(\s*\w+,\s*"(\w+)",\s*"([0-9-]+)"', text):
            out[f"{ALI_PRODUCTS[version]}:{action}"] = str(path)  # an unknown API version fails here: add it
        for verb, resource in re.findall(r'\.call\(\s*"([A-Z]+)",\s*f?"\{[\w.]+\}([^"{]*)', text):
            out[MNS_ACTIONS[(verb, resource)]] = str(path)
        for verb in re.findall(r'\.call\(\s*"([A-Z]+)",\s*\w+\)', text):
            out[MNS_ACTIONS[(verb, "")]] = str(path)
    return out


def ali_granted(plan: PlanRun) -> set[str]:
    found: set[str] = set()
    for name in ("llm-node-policy", "llm-jobs-policy"):
        doc = json.loads(plan.find("alicloud:ram/policy:Policy", name)[0].inputs["policyDocument"])
        found |= {a for st in doc["Statement"] for a in st["Action"]}
    return found


# ---- GCP ------------------------------------------------------------------------------------------
# Google REST methods named in the agent's source -> the IAM permission each needs (the APIs' references).
GCP_METHODS = {
    r"versions/latest:access": "secretmanager.versions.access",
    r"/aggregated/instances": "compute.instances.list",
    r'"pull"|"modifyAckDeadline"|"acknowledge"': "pubsub.subscriptions.consume",
    r'self\.call\(topic, "publish"': "pubsub.topics.publish",
}
GCP_BY_LIBRARIES = {
    "storage.objects.get",  # gcsfs and objectget: the model, the agent's wheel, job checkpoints
    "storage.objects.list",  # the jobs' checkpoint listing
    "storage.objects.create",  # job results and checkpoints
    "storage.objects.delete",  # a superseded checkpoint
    "artifactregistry.repositories.downloadArtifacts",  # the container runtime's pull with the agent's token
}
# The predefined roles the components bind, with the permissions of theirs the node relies on (Google's IAM
# roles reference); a custom role's permissions are read from the plan.
GCP_ROLES = {
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.objectUser": {
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.create",
        "storage.objects.delete",
    },
    "roles/secretmanager.secretAccessor": {"secretmanager.versions.access"},
    "roles/artifactregistry.reader": {"artifactregistry.repositories.downloadArtifacts"},
    "roles/pubsub.subscriber": {"pubsub.subscriptions.consume"},
    "roles/pubsub.publisher": {"pubsub.topics.publish"},
}


def gcp_agent_calls() -> dict[str, str]:
    out: dict[str, str] = {}
    for path, text in node_sources().items():
        for pattern, permission in GCP_METHODS.items():
            if re.search(pattern, text):
                out[permission] = str(path)
    return out


def gcp_bindings(plan: PlanRun) -> dict[str, set[str]]:
    """Each role bound to the node's service account -> the permissions it grants the node."""
    email = plan.find("gcp:serviceaccount/account:Account", "llm-node-sa")[0].outputs["email"]
    custom = {
        r.name: set(r.inputs["permissions"]) for r in plan.resources if r.type.endswith("iAMCustomRole:IAMCustomRole")
    }
    out: dict[str, set[str]] = {}
    for r in plan.resources:
        if r.inputs.get("member") != f"serviceAccount:{email}":
            continue
        role = r.inputs["role"]
        if role.startswith("roles/"):
            assert role in GCP_ROLES, f"{r.name}: {role} is not a role this test knows the permissions of"
            out[f"{r.name} ({role})"] = GCP_ROLES[role]
        else:
            out[f"{r.name} ({role})"] = next(p for n, p in custom.items() if role.endswith(n.replace("-", "_")))
    return out


# ---- the checks -----------------------------------------------------------------------------------
def test_every_agent_call_is_granted_and_every_grant_is_called(plans: tuple[str, PlanRun]) -> None:
    cloud, plan = plans
    if cloud == "aws":
        calls, granted, libs = aws_agent_calls(), aws_granted(plan), AWS_BY_LIBRARIES
    elif cloud == "alicloud":
        calls, granted, libs = ali_agent_calls(), ali_granted(plan), ALI_BY_LIBRARIES
    else:
        calls, libs = gcp_agent_calls(), GCP_BY_LIBRARIES
        bindings = gcp_bindings(plan)
        granted = set().union(*bindings.values())
        needed = set(calls) | libs
        unused = [b for b, perms in bindings.items() if not perms & needed]
        assert not unused, f"roles bound to the node that no call needs: {unused}"
    needed = set(calls) | libs
    missing = {c: calls.get(c, "a library") for c in needed - granted}
    assert not missing, f"{cloud}: the agent calls these but its role does not allow them: {missing}"
    if cloud != "gcp":
        assert not granted - needed, f"{cloud}: granted but never called: {sorted(granted - needed)}"


def test_the_scans_see_each_clouds_known_calls() -> None:
    """A floor for each scan, so that a scan which finds nothing cannot pass the check above vacuously."""
    ali = ali_agent_calls()
    assert {
        "oos:GetSecretParameter",
        "cr:GetAuthorizationToken",
        "ecs:DescribeInstances",
        "ess:DescribeScalingInstances",
        "mns:ReceiveMessage",
        "mns:DeleteMessage",
        "mns:ChangeMessageVisibility",
        "mns:SendMessage",
        "mns:GetQueueAttributes",
    } <= set(ali), ali
    assert set(gcp_agent_calls()) == set(GCP_METHODS.values())


def test_a_grant_without_a_call_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: the node role as it was before this test existed (ALB removal and lifecycle writes on
    Alibaba, which the agent never makes) fails it."""
    from spotstack.components.alicloud import mapping

    doc = mapping.node_policy("us-west-1", "acme-models", "llama/", "cri-x/ns/llm", "tok")
    doc["Statement"].append(
        {"Effect": "Allow", "Action": ["ess:CompleteLifecycleAction", "alb:RemoveServersFromServerGroup"]}
    )
    granted: set[Any] = {a for st in doc["Statement"] for a in st["Action"]}
    extra = granted - (set(ali_agent_calls()) | ALI_BY_LIBRARIES)
    assert extra == {"ess:CompleteLifecycleAction", "alb:RemoveServersFromServerGroup"}


def test_the_aws_gateways_role_holds_what_the_gateway_calls_and_nothing_else() -> None:
    """The gateway instances' role (stacks/Pulumi.dev-llm.yaml): it finds the nodes (peer discovery's
    DescribeInstances), reads its API keys (`agent fetch-secret`'s GetParameter) and the package's wheel (objectget's
    GetObject) — each a call the runtime makes — and holds nothing more."""
    from spotstack.components.plan import plan_stack

    run = plan_stack(ROOT, "dev-llm").run
    doc = json.loads(run.find("aws:iam/rolePolicy:RolePolicy", "llm-gateway-policy")[0].inputs["policy"])
    granted = {a for st in doc["Statement"] for a in st["Action"]}
    assert granted == {"ec2:DescribeInstances", "ssm:GetParameter", "s3:GetObject"}
    assert granted <= set(aws_agent_calls()) | AWS_BY_LIBRARIES


def test_the_gcp_gateways_service_account_holds_what_the_gateway_calls() -> None:
    """The gateways' service account (stacks/Pulumi.dev-gcp-llm.yaml): finding the nodes (compute.instances.list,
    the Compute API's aggregated list), reading its keys (secretmanager.versions.access) and the wheel
    (storage.objects.get); every role it holds serves one of those, and each is a call the runtime makes."""
    from spotstack.components.plan import plan_stack

    run = plan_stack(ROOT, "dev-gcp-llm").run
    email = run.find("gcp:serviceaccount/account:Account", "llm-gateway-sa")[0].outputs["email"]
    custom = {r.inputs["roleId"]: set(r.inputs["permissions"]) for r in run.resources if "roleId" in r.inputs}
    granted: set[str] = set()
    for r in run.resources:
        if r.inputs.get("member") != f"serviceAccount:{email}":
            continue
        role = r.inputs["role"]
        perms = GCP_ROLES[role] if role.startswith("roles/") else custom[role.rsplit("/", 1)[1]]
        needed = {"compute.instances.list", "secretmanager.versions.access", "storage.objects.get"}
        assert perms & needed, f"{r.name}: {role} serves no call of the gateway's"
        granted |= perms
    assert {"compute.instances.list", "secretmanager.versions.access", "storage.objects.get"} <= granted
    assert {"compute.instances.list", "secretmanager.versions.access"} <= set(gcp_agent_calls())


def test_the_alicloud_gateways_role_holds_only_calls_the_runtime_makes() -> None:
    from spotstack.components.plan import plan_stack

    run = plan_stack(ROOT, "dev-alicloud-llm").run
    doc = json.loads(run.find("alicloud:ram/policy:Policy", "llm-gateway-policy")[0].inputs["policyDocument"])
    granted = {a for st in doc["Statement"] for a in st["Action"]}
    assert {"ecs:DescribeInstances", "oos:GetSecretParameter", "oss:GetObject"} <= granted
    assert granted <= set(ali_agent_calls()) | ALI_BY_LIBRARIES
