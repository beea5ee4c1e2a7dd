"""The fleet gateway on GCP (`service.gateway`, stacks/Pulumi.dev-gcp-llm.yaml) under the mock engine: the URL map
sends every request to the gateways' backend service, the nodes take traffic from the gateways and the health
checkers only, the gateways' group, service account and boot document."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from spotstack.components.plan import plan_stack
from spotstack.components.plan.engine import PlanRun
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def plan() -> PlanRun:
    return plan_stack(ROOT, "dev-gcp-llm").run


def one(plan: PlanRun, type_: str, name: str) -> dict[str, Any]:
    found = plan.find(type_, name)
    assert len(found) == 1, [r.name for r in plan.find(type_)]
    return found[0].inputs


def test_the_url_map_sends_requests_to_the_gateways_and_keeps_the_nodes_health_checked(plan: PlanRun) -> None:
    url_map = one(plan, "gcp:compute/uRLMap:URLMap", "llm-urlmap")
    assert url_map["defaultService"] == "llm-gateway-backend-id"
    (matcher,) = url_map["pathMatchers"]
    assert matcher["defaultService"] == "llm-gateway-backend-id"
    (route,) = matcher["routeRules"]
    assert route["service"] == "llm-backend-id"  # the nodes' backend service: only with the secret header
    (header,) = route["matchRules"][0]["headerMatches"]
    assert header["headerName"] == "X-Spotstack-Health-Only" and header["exactMatch"]
    bs = one(plan, "gcp:compute/backendService:BackendService", "llm-gateway-backend")
    assert bs["loadBalancingScheme"] == "EXTERNAL_MANAGED" and bs["portName"] == "gateway"
    assert bs["timeoutSec"] == 900 and bs["connectionDrainingTimeoutSec"] == 900


def test_firewalls_let_the_gateways_reach_the_nodes_and_the_load_balancer_reach_the_gateways(plan: PlanRun) -> None:
    to_gw = one(plan, "gcp:compute/firewall:Firewall", "llm-allow-lb-gateways")
    assert to_gw["targetTags"] == ["llm-gateway"] and to_gw["allows"][0]["ports"] == ["8000"]
    assert set(to_gw["sourceRanges"]) == {"130.211.0.0/22", "35.191.0.0/16"}  # Google's proxies and checkers
    to_nodes = one(plan, "gcp:compute/firewall:Firewall", "llm-allow-gateways")
    assert (to_nodes["sourceTags"], to_nodes["targetTags"]) == (["llm-gateway"], ["llm-node"])
    assert to_nodes["allows"][0]["ports"] == ["8080", "8471"]


def test_the_gateways_group_identity_and_boot_document(plan: PlanRun) -> None:
    mig = one(plan, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "llm-gateway-mig")
    assert mig["targetSize"] == 2 and mig["namedPorts"] == [{"name": "gateway", "port": 8000}]
    assert mig["distributionPolicyZones"] == ["us-central1-a", "us-central1-b", "us-central1-c"]
    tpl = one(plan, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-gateway-template")
    assert tpl["machineType"] == "e2-standard-2" and "scheduling" not in tpl  # on-demand
    assert "spotstack-fleet" not in tpl["labels"]  # never found as a replica or a cache peer
    doc = yaml.safe_load(tpl["metadata"]["user-data"])
    steps = [" ".join(c) for c in doc["runcmd"]]
    # The secret's full name in the fleet's project (the mock engine's project id stands in for the stack's).
    assert any(
        re.search(r"fetch-secret --cloud gcp --name projects/[a-z0-9-]+/secrets/llm-api-keys\b", s) for s in steps
    )
    (unit,) = [f["content"] for f in doc["write_files"] if f["path"].endswith("spotstack-gateway.service")]
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line[len("ExecStart=") :])
    label = one(plan, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")["labels"]["spotstack-fleet"]
    assert argv[argv.index("--discover") + 1] == "gcp" and argv[argv.index("--fleet") + 1] == label
    sa = one(plan, "gcp:serviceaccount/account:Account", "llm-gateway-sa")
    email = plan.find("gcp:serviceaccount/account:Account", "llm-gateway-sa")[0].outputs["email"]
    assert sa["accountId"] == "spotstack-dev-gcp-llm-llm-gw"
    roles = {r.inputs["role"] for r in plan.resources if r.inputs.get("member") == f"serviceAccount:{email}"}
    assert {re.sub(r"^projects/[^/]+/", "projects/P/", r) for r in roles} == {
        "projects/P/roles/spotstack_dev_gcp_llm_llm_gw_list",  # compute.instances.list, nothing else
        "roles/secretmanager.secretAccessor",  # on the API keys' secret only
        "roles/storage.objectViewer",  # on the wheel's prefix only
    }, roles
    (lister,) = [r.inputs for r in plan.resources if r.name == "llm-gateway-list" and "permissions" in r.inputs]
    assert lister["permissions"] == ["compute.instances.list"]
