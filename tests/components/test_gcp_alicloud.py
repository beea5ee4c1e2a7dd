"""GcpGpuFleet and AlicloudGpuFleet under the mock engine, and one spec planned on all three clouds."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
import yaml

from spotstack.components import program
from spotstack.components.alicloud import mapping as ali_mapping
from spotstack.components.gcp import mapping as gcp_mapping
from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.validate import SpecError, validate_fleets
from tests.conftest import ROOT, base_fleet, region_config

GCP_TYPES = [
    {"type": "g2-standard-4", "spot": {}},
    {"type": "a2-highgpu-1g", "spot": {}},
    {"type": "g2-standard-8", "on_demand": {}},
]
ALI_TYPES = [
    {"type": "ecs.gn7i-c8g1.2xlarge", "spot": {"bid": 0.4}},
    {"type": "ecs.gn6i-c4g1.xlarge", "spot": {"bid": 0.5}},
    {"type": "ecs.gn7i-c16g1.4xlarge", "on_demand": {}},
]


def as_cloud(cloud: str) -> dict[str, Any]:
    f = base_fleet()
    if cloud == "gcp":
        f.update(cloud="gcp", region="us-central1", zones=["us-central1-a", "us-central1-b"], instances=GCP_TYPES)
        f["service"]["drain_timeout"] = 25
    else:
        f.update(cloud="alicloud", region="us-west-1", zones=["us-west-1a", "us-west-1b"], instances=ALI_TYPES)
        f["image"] = {**f["image"], "registry_instance": "cri-acmeplan0001"}
    return f


def plan_of(raw: dict[str, Any]) -> PlanRun:
    return run_offline(program.run, {"spotstack:fleets": [raw], **region_config(raw)}, stack="test")


def one(plan: PlanRun, type_: str, name: str) -> dict[str, Any]:
    found = plan.find(type_, name)
    assert len(found) == 1, [r.name for r in plan.find(type_)]
    return found[0].inputs


# ---- GCP ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gcp() -> PlanRun:
    return plan_of(as_cloud("gcp"))


def test_gcp_spot_template_and_ranked_types(gcp: PlanRun) -> None:
    tpl = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")
    s = tpl["scheduling"]
    assert (s["provisioningModel"], s["preemptible"], s["automaticRestart"]) == ("SPOT", True, False)
    assert s["instanceTerminationAction"] == "DELETE" and s["onHostMaintenance"] == "TERMINATE"
    assert not tpl.get("guestAccelerators")  # g2 types come with their L4 attached (GCE docs: About GPUs)
    mig = one(gcp, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "llm-spot-mig")
    sel = mig["instanceFlexibilityPolicy"]["instanceSelections"]
    assert [(x["machineTypes"], x["rank"]) for x in sel] == [(["g2-standard-4"], 0), (["a2-highgpu-1g"], 1)]
    assert mig["distributionPolicyZones"] == ["us-central1-a", "us-central1-b"]
    assert mig["autoHealingPolicies"]["initialDelaySec"] == 600


def test_gcp_base_on_demand_and_fallback_groups(gcp: PlanRun) -> None:
    base = one(gcp, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "llm-base-mig")
    fb = one(gcp, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "llm-fallback-mig")
    assert base["targetSize"] == 1 and fb["targetSize"] == 0
    od = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-ondemand-tpl")
    assert od["scheduling"]["provisioningModel"] == "STANDARD"
    ranks = [x["machineTypes"][0] for x in fb["instanceFlexibilityPolicy"]["instanceSelections"]]
    assert ranks == ["g2-standard-4", "a2-highgpu-1g", "g2-standard-8"]


def test_gcp_draining_health_check_and_autoscaler(gcp: PlanRun) -> None:
    bs = one(gcp, "gcp:compute/backendService:BackendService", "llm-backend")
    assert bs["connectionDrainingTimeoutSec"] == 25
    assert len(bs["backends"]) == 3 and bs["backends"][0]["maxRatePerInstance"] == 12.5  # 10 QPS / 0.8
    hc = one(gcp, "gcp:compute/healthCheck:HealthCheck", "llm-ready")
    assert hc["httpHealthCheck"] == {"port": 8471, "requestPath": "/ready"}
    auto = one(gcp, "gcp:compute/regionAutoscaler:RegionAutoscaler", "llm-autoscaler")["autoscalingPolicy"]
    assert (auto["minReplicas"], auto["maxReplicas"]) == (0, 5)
    assert auto["loadBalancingUtilization"]["target"] == 0.8
    assert auto["scalingSchedules"][0]["minRequiredReplicas"] == 1


def test_gcp_shutdown_script_waits_for_the_drain(gcp: PlanRun) -> None:
    md = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")["metadata"]
    script = md["shutdown-script"]
    assert script.startswith("#!/bin/sh") and "127.0.0.1:8471/status" in script and "drained" in script
    cfg = json.loads(
        next(
            f["content"]
            for f in yaml.safe_load(md["user-data"])["write_files"]
            if f["path"] == "/etc/spotstack/agent.json"
        )
    )
    assert cfg["cloud"] == "gcp" and cfg["cache"]["model_url"] == "gs://acme-models/llama/"


def test_gcp_service_account_is_least_privilege(gcp: PlanRun) -> None:
    read = one(gcp, "gcp:storage/bucketIAMMember:BucketIAMMember", "llm-read-model")
    assert read["role"] == "roles/storage.objectViewer" and read["bucket"] == "acme-models"
    assert 'objects/llama/"' in read["condition"]["expression"]
    pull = one(gcp, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", "llm-pull-image")
    assert pull["role"] == "roles/artifactregistry.reader"
    node_sa = one(gcp, "gcp:serviceaccount/account:Account", "llm-node-sa")["accountId"]
    nodes = [r for r in gcp.find("gcp:projects/iAMMember:IAMMember") if node_sa in r.inputs["member"]]
    # Project-wide for the nodes: only listing instances (peer discovery; IAM scopes no list to a label).
    assert [r.name for r in nodes] == ["llm-node-list"]
    lister = one(gcp, "gcp:projects/iAMCustomRole:IAMCustomRole", "llm-node-list")
    assert lister["permissions"] == ["compute.instances.list"] and nodes[0].inputs["role"].endswith(lister["roleId"])


def test_gcp_bucket_and_registry(gcp: PlanRun) -> None:
    b = one(gcp, "gcp:storage/bucket:Bucket", "llm-models-bucket")
    assert b["uniformBucketLevelAccess"] is True and b["publicAccessPrevention"] == "enforced"
    r = one(gcp, "gcp:artifactregistry/repository:Repository", "llm-images-repo")
    assert r["format"] == "DOCKER" and {p["id"] for p in r["cleanupPolicies"]} == {"delete-untagged", "keep-recent"}


def test_gcp_bid_is_reported_as_ignored() -> None:
    f = as_cloud("gcp")
    f["instances"][0]["spot"] = {"bid": 0.3}
    assert any("no bid" in w for w in gcp_mapping.warnings(validate_fleets([f])[0][0]))
    assert any("ignored" in w for w in plan_of(f).warnings)


# ---- Alibaba --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ali() -> PlanRun:
    return plan_of(as_cloud("alicloud"))


def test_alicloud_group_mix_and_fallback(ali: PlanRun) -> None:
    g = one(ali, "alicloud:ess/scalingGroup:ScalingGroup", "llm-group")
    assert g["multiAzPolicy"] == "COST_OPTIMIZED"  # spot and on-demand mixed
    assert (g["onDemandBaseCapacity"], g["onDemandPercentageAboveBaseCapacity"]) == (1, 0)
    assert g["spotInstanceRemedy"] is True and g["compensateWithOnDemand"] is True
    assert (g["minSize"], g["maxSize"], g["desiredCapacity"]) == (1, 6, 3)


def test_alicloud_types_in_order_with_price_limits_from_bids(ali: PlanRun) -> None:
    c = one(ali, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-config")
    assert c["instanceTypes"] == ["ecs.gn7i-c8g1.2xlarge", "ecs.gn6i-c4g1.xlarge", "ecs.gn7i-c16g1.4xlarge"]
    assert c["spotStrategy"] == "SpotWithPriceLimit"
    limits = {x["instanceType"]: x["priceLimit"] for x in c["spotPriceLimits"]}
    assert limits == {
        "ecs.gn7i-c8g1.2xlarge": pytest.approx(0.4 * 1.6714, abs=1e-4),
        "ecs.gn6i-c4g1.xlarge": pytest.approx(0.5 * 0.9456, abs=1e-4),
    }
    ud = yaml.safe_load(base64.b64decode(c["userData"]).decode())
    cfg = json.loads(next(f["content"] for f in ud["write_files"] if f["path"] == "/etc/spotstack/agent.json"))
    assert cfg["cloud"] == "alicloud" and cfg["cache"]["model_url"] == "oss://acme-models/llama/"


def test_alicloud_draining_health_check_and_lifecycle(ali: PlanRun) -> None:
    hc = one(ali, "alicloud:alb/serverGroup:ServerGroup", "llm-servers")["healthCheckConfig"]
    assert (hc["healthCheckPath"], hc["healthCheckConnectPort"], hc["healthCheckCodes"]) == (
        "/ready",
        8471,
        ["http_2xx"],
    )
    group = one(ali, "alicloud:ess/scalingGroup:ScalingGroup", "llm-group")
    assert group["albServerGroups"] == [{"albServerGroupId": "servergroup-llm-servers", "port": 8080, "weight": 100}]
    lst = one(ali, "alicloud:alb/listener:Listener", "llm-http")
    tuples = lst["defaultActions"][0]["forwardGroupConfig"]["serverGroupTuples"]
    assert lst["listenerPort"] == 80 and tuples == [{"serverGroupId": "servergroup-llm-servers"}]
    hook = one(ali, "alicloud:ess/lifecycleHook:LifecycleHook", "llm-drain")
    assert (hook["lifecycleTransition"], hook["heartbeatTimeout"], hook["defaultResult"]) == (
        "SCALE_IN",
        90,
        "CONTINUE",
    )
    rule = one(ali, "alicloud:ess/scalingRule:ScalingRule", "llm-qps")
    assert rule["scalingRuleType"] == "TargetTrackingScalingRule" and rule["targetValue"] == 10
    # Deployability finding 15: per-server QPS is an ALB server group metric, named by `rulePool`.
    assert rule["metricName"] == "LoadBalancerRealServerAverageQps"
    assert rule["alarmDimension"] == {"dimensionKey": "rulePool", "dimensionValue": "servergroup-llm-servers"}


def test_alicloud_ram_role_is_scoped_to_the_fleet(ali: PlanRun) -> None:
    doc = json.loads(one(ali, "alicloud:ram/policy:Policy", "llm-node-policy")["policyDocument"])
    for st in doc["Statement"]:
        for res in st["Resource"]:
            if res == "*":
                # Describe calls and ACR's login token have no resource-level scoping.
                assert all(
                    a.startswith(("ecs:Describe", "ess:Describe")) or a == "cr:GetAuthorizationToken"
                    for a in st["Action"]
                ), st
            else:
                assert (
                    res.startswith("acs:oss:*:*:acme-models")
                    or "repository/" in res
                    or res.endswith("secretparameter/spotstack-spotstack-test-llm-cache-token")
                    or res in ("acs:kms:us-west-1:*:key/*", "acs:kms:us-west-1:*:secret/*")
                ), res
    oss = next(s for s in doc["Statement"] if s["Action"] == ["oss:GetObject"])
    # The model prefix, and the agent's wheels the fleet publishes beside it.
    assert oss["Resource"] == ["acs:oss:*:*:acme-models/llama/*", "acs:oss:*:*:acme-models/spotstack-agent/*"]


def test_alicloud_bucket_and_registry(ali: PlanRun) -> None:
    b = one(ali, "alicloud:oss/bucket:Bucket", "llm-models-bucket")
    assert "acl" not in b and b["serverSideEncryptionRule"]["sseAlgorithm"] == "AES256"  # `acl` is deprecated
    assert one(ali, "alicloud:oss/bucketAcl:BucketAcl", "llm-models-bucket-acl")["acl"] == "private"
    repo = one(ali, "alicloud:cs/registryEnterpriseRepo:RegistryEnterpriseRepo", "llm-images-repo")
    assert repo["repoType"] == "PRIVATE" and repo["tagImmutability"] is True


@pytest.mark.parametrize(
    ("instances", "policy", "strategy"),
    [
        ([{"type": "ecs.gn7i-c8g1.2xlarge", "spot": {"bid": 0.3}}], "COST_OPTIMIZED", "SpotWithPriceLimit"),
        ([{"type": "ecs.gn7i-c8g1.2xlarge", "spot": {}}], "COST_OPTIMIZED", "SpotAsPriceGo"),
        ([{"type": "ecs.gn7i-c8g1.2xlarge", "on_demand": {}}], "PRIORITY", "NoSpot"),
    ],
)
def test_alicloud_mix_table(instances: list[dict[str, Any]], policy: str, strategy: str) -> None:
    f = as_cloud("alicloud")
    f["instances"] = instances
    m = ali_mapping.mix(validate_fleets([f])[0][0])
    assert (m.multi_az_policy, m.spot_strategy) == (policy, strategy)


def test_alicloud_all_spot_keeps_priority_order() -> None:
    f = as_cloud("alicloud")
    f["instances"] = ALI_TYPES[:2]
    f["capacity"] = {"min": 1, "max": 4}
    f["scaling"] = {}
    assert ali_mapping.mix(validate_fleets([f])[0][0]).multi_az_policy == "PRIORITY"


# ---- one spec, three clouds; cloud-specific errors --------------------------------------------------
@pytest.mark.slow  # three plans (~3 s)
def test_one_spec_plans_on_all_three_clouds() -> None:
    raw = load_stack(ROOT, "dev").config["spotstack:fleets"][0]
    variants = {
        "aws": {},
        "gcp": {
            "cloud": "gcp",
            "region": "us-central1",
            "zones": ["us-central1-a", "us-central1-b"],
            "instances": [{"type": "g2-standard-4", "spot": {}}, {"type": "g2-standard-8", "on_demand": {}}],
        },
        "alicloud": {
            "cloud": "alicloud",
            "region": "us-west-1",
            "zones": ["us-west-1a", "us-west-1b"],
            "instances": [
                {"type": "ecs.gn7i-c8g1.2xlarge", "spot": {"bid": 0.4}},
                {"type": "ecs.gn6i-c4g1.xlarge", "on_demand": {}},
            ],
            "image": {**raw["image"], "registry_instance": "cri-acmeplan0001"},
        },
    }
    tokens = {
        "aws": "spotstack:index:AwsGpuFleet",
        "gcp": "spotstack:index:GcpGpuFleet",
        "alicloud": "spotstack:index:AlicloudGpuFleet",
    }
    for cloud, change in variants.items():
        f = copy.deepcopy(raw)
        f.update(change)
        plan = plan_of(f)
        assert plan.find(tokens[cloud], "llm"), cloud
        assert sum(r.custom for r in plan.resources) > 15, cloud


@pytest.mark.parametrize(
    ("cloud", "change", "path", "reason"),
    [
        ("gcp", {"zones": ["us-east1-b"]}, "fleets[0].zones[0]", "not in region"),
        ("gcp", {"instances": [{"type": "g6.xlarge", "spot": {}}]}, "fleets[0].instances[0].type", "not a gcp type"),
        ("gcp", {"region": "asia-east1", "zones": ["asia-east1-a"]}, "fleets[0].instances[0].type", "no catalog price"),
        ("alicloud", {"zones": ["cn-hangzhou-h"]}, "fleets[0].zones[0]", "not in region"),
        (
            "alicloud",
            {"instances": [{"type": "g2-standard-4", "spot": {}}]},
            "fleets[0].instances[0].type",
            "not a alicloud type",
        ),
        (
            "alicloud",
            {"region": "cn-hangzhou", "zones": ["cn-hangzhou-h"]},
            "fleets[0].instances[0].type",
            "needs on_demand_price",
        ),
    ],
)
def test_cloud_specific_bad_configs(cloud: str, change: dict[str, Any], path: str, reason: str) -> None:
    f = as_cloud(cloud)
    f.update(change)
    with pytest.raises(SpecError) as caught:
        validate_fleets([f])
    assert any(p.path == path and reason in p.reason for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("stack", ["dev-gcp", "dev-alicloud"])
def test_example_stacks_plan_with_costs(stack: str) -> None:
    from spotstack.components.plan import plan_stack

    result = plan_stack(ROOT, stack)
    (cost,) = result.costs
    assert 0 < cost.all_spot <= cost.expected <= cost.all_on_demand
