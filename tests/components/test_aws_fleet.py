"""AwsGpuFleet under Pulumi's mock engine: the children and the properties that matter."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
from spotstack.components.aws.iam import DESCRIBE_ONLY_STAR
from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.validate import validate_fleets


def declare(raw: dict[str, Any]) -> PlanRun:
    spec = validate_fleets([raw])[0][0]
    return run_offline(lambda: AwsGpuFleet(spec.name, AwsGpuFleetArgs(spec=spec)), {}, stack="test")


def one(plan: PlanRun, type_: str, name: str) -> dict[str, Any]:
    found = plan.find(type_, name)
    assert len(found) == 1, f"{type_} {name}: {[r.name for r in plan.find(type_)]}"
    return found[0].inputs


@pytest.fixture
def plan(fleet: dict[str, Any]) -> PlanRun:
    return declare(fleet)


def test_children_are_parented_and_named_from_the_component(plan: PlanRun) -> None:
    comp = plan.find("spotstack:index:AwsGpuFleet", "llm")[0]
    kids = plan.children_of(comp.urn)
    assert kids and all(k.name.startswith("llm-") for k in kids)
    assert {r.parent for r in plan.resources if r.custom} == {comp.urn}


def test_main_group_keeps_priority_order_base_and_price(plan: PlanRun) -> None:
    asg = one(plan, "aws:autoscaling/group:Group", "llm-asg")
    mip = asg["mixedInstancesPolicy"]
    assert [o["instanceType"] for o in mip["launchTemplate"]["overrides"]] == ["g6.xlarge", "g5.xlarge"]
    dist = mip["instancesDistribution"]
    assert dist["onDemandBaseCapacity"] == 1
    assert dist["onDemandPercentageAboveBaseCapacity"] == 0
    assert dist["spotAllocationStrategy"] == "capacity-optimized-prioritized"
    assert dist["onDemandAllocationStrategy"] == "prioritized"
    # g6.xlarge 0.8048 x 0.4 = 0.3219 < g5.xlarge 1.006 x 0.5: the lower cap holds for the group
    assert dist["spotMaxPrice"] == "0.3219"
    assert asg["capacityRebalance"] is True
    assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == (1, 6, 3)


def test_termination_lifecycle_hook_covers_the_drain(plan: PlanRun) -> None:
    asg = one(plan, "aws:autoscaling/group:Group", "llm-asg")
    (hook,) = asg["initialLifecycleHooks"]
    assert hook["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["heartbeatTimeout"] >= 60 and hook["defaultResult"] == "CONTINUE"
    assert hook["name"] == "llm-drain"


def test_fallback_group_is_on_demand_from_zero_with_all_types(plan: PlanRun) -> None:
    fb = one(plan, "aws:autoscaling/group:Group", "llm-fallback-asg")
    assert (fb["minSize"], fb["desiredCapacity"]) == (0, 0)
    dist = fb["mixedInstancesPolicy"]["instancesDistribution"]
    assert dist["onDemandPercentageAboveBaseCapacity"] == 100
    overrides = [o["instanceType"] for o in fb["mixedInstancesPolicy"]["launchTemplate"]["overrides"]]
    assert overrides == ["g6.xlarge", "g5.xlarge", "g6e.xlarge"]


def test_nothing_in_the_cloud_grows_the_fallback_group_past_the_spec(plan: PlanRun) -> None:
    """Finding 4: the two groups' maxima add up to more than the spec's max, which AWS cannot cap across
    groups. So no scaling policy, schedule or warm pool acts on the fallback group: it stays at 0 unless
    the controller grows it, and the controller keeps the sum within `capacity.max` (issue 11)."""
    fb = one(plan, "aws:autoscaling/group:Group", "llm-fallback-asg")
    assert fb["maxSize"] == 6 - 1  # max - base_on_demand: it stands in for spot replicas only
    acting = ("aws:autoscaling/policy:Policy", "aws:autoscaling/schedule:Schedule")
    assert all(plan.find(t) for t in acting)  # the spec has QPS tracking and a schedule: they act on main
    for typ in acting:
        for r in plan.find(typ):
            assert "fallback" not in str(r.inputs.get("autoscalingGroupName", "")), r.name
    assert not plan.find("aws:autoscaling/warmPool:WarmPool")


def test_no_fallback_group_unless_asked(fleet: dict[str, Any]) -> None:
    fleet["capacity"]["dynamic_on_demand_fallback"] = False
    plan = declare(fleet)
    assert [r.name for r in plan.find("aws:autoscaling/group:Group")] == ["llm-asg"]


def test_launch_template_requires_imdsv2_and_starts_the_agent(plan: PlanRun) -> None:
    lt = one(plan, "aws:ec2/launchTemplate:LaunchTemplate", "llm-lt")
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert lt["metadataOptions"]["instanceMetadataTags"] == "enabled"
    text = base64.b64decode(lt["userData"]).decode()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    cfg = json.loads(files["/etc/spotstack/agent.json"])
    assert cfg["load_balancer"]["target_group_arn"].endswith(":targetgroup/llm-tg/0123456789abcdef")
    assert cfg["lifecycle"] == {"enabled": True, "hook_name": "llm-drain", "region": "us-east-1"}
    assert ["systemctl", "enable", "--now", "spotstack-agent.service", "spotstack-workload.service"] in doc["runcmd"]


def test_target_group_health_and_deregistration_follow_the_service(plan: PlanRun) -> None:
    tg = one(plan, "aws:lb/targetGroup:TargetGroup", "llm-tg")
    assert tg["healthCheck"]["path"] == "/ready"
    assert tg["healthCheck"]["port"] == "8471"  # the agent's readiness server
    assert tg["deregistrationDelay"] == 60
    assert tg["port"] == 8080


def test_scaling_from_qps_and_schedules(plan: PlanRun) -> None:
    pol = one(plan, "aws:autoscaling/policy:Policy", "llm-qps")
    ttc = pol["targetTrackingConfiguration"]
    assert ttc["predefinedMetricSpecification"]["predefinedMetricType"] == "ALBRequestCountPerTarget"
    assert ttc["predefinedMetricSpecification"]["resourceLabel"] == (
        "app/llm-alb/0123456789abcdef/targetgroup/llm-tg/0123456789abcdef"
    )
    assert ttc["targetValue"] == 600  # 10 QPS x 60 s
    sched = one(plan, "aws:autoscaling/schedule:Schedule", "llm-schedule-day")
    assert (sched["recurrence"], sched["minSize"], sched["maxSize"]) == ("0 8 * * *", 2, 6)


def test_queue_backlog_policy(fleet: dict[str, Any]) -> None:
    fleet["scaling"] = {"queue": {"name": "jobs", "backlog_per_instance": 5}}
    plan = declare(fleet)
    pol = one(plan, "aws:autoscaling/policy:Policy", "llm-backlog")
    metrics = pol["targetTrackingConfiguration"]["customizedMetricSpecification"]["metrics"]
    assert [m["id"] for m in metrics] == ["queue", "replicas", "backlog"]
    assert metrics[2]["expression"] == "queue / replicas" and metrics[2]["returnData"] is True
    assert pol["targetTrackingConfiguration"]["targetValue"] == 5


def test_security_groups_admit_only_the_lb_and_peers(plan: PlanRun) -> None:
    rules = {r.name: r.inputs for r in plan.find("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")}
    assert rules["llm-node-in-service"]["referencedSecurityGroupId"] == "llm-lb-sg-id"
    assert rules["llm-node-in-service"]["fromPort"] == 8080
    peers = rules["llm-node-in-peers"]
    assert peers["referencedSecurityGroupId"] == peers["securityGroupId"] == "llm-node-sg-id"
    assert not any(r.get("cidrIpv4") for n, r in rules.items() if n.startswith("llm-node"))


def test_iam_statements_are_limited_to_the_fleets_own_resources(plan: PlanRun) -> None:
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-node-policy")["policy"])
    own = (
        "llm-tg",
        "autoScalingGroupName/spotstack-spotstack-test-llm-asg",
        "autoScalingGroupName/spotstack-spotstack-test-llm-fallback-asg",
        "arn:aws:s3:::acme-models",
        ":parameter/spotstack/spotstack/test/llm/cache-token",
    )
    for st in doc["Statement"]:
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if resources == ["*"]:
            assert set(st["Action"]) <= set(DESCRIBE_ONLY_STAR), st
            continue
        for res in resources:
            assert any(o in res for o in own), (st["Sid"], res)
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    # The model prefix, and the agent's wheels the fleet publishes beside it.
    assert by_sid["ReadModelAndAgent"]["Resource"] == [
        "arn:aws:s3:::acme-models/llama/*",
        "arn:aws:s3:::acme-models/spotstack-agent/*",
    ]
    assert "autoscaling:CompleteLifecycleAction" in by_sid["FinishLifecycle"]["Action"]
    # Nodes never size their groups: that is the controller's, under its own role.
    assert not any("SetDesiredCapacity" in a for st in doc["Statement"] for a in st["Action"])
    assert by_sid["LeaveRotation"]["Resource"].endswith("targetgroup/llm-tg/0123456789abcdef")
    assert by_sid["LeaveRotation"]["Action"] == ["elasticloadbalancing:DeregisterTargets"]  # never re-registers


def test_explicit_network_skips_the_default_vpc_lookup(fleet: dict[str, Any]) -> None:
    fleet["network"] = {"id": "vpc-123", "subnets": ["subnet-a", "subnet-b"]}
    plan = declare(fleet)
    assert one(plan, "aws:autoscaling/group:Group", "llm-asg")["vpcZoneIdentifiers"] == ["subnet-a", "subnet-b"]
    assert one(plan, "aws:lb/targetGroup:TargetGroup", "llm-tg")["vpcId"] == "vpc-123"


def test_model_store_and_registry_from_the_program() -> None:
    from spotstack.components import program
    from tests.conftest import base_fleet

    plan = run_offline(program.run, {"spotstack:fleets": [base_fleet()]}, stack="test")
    sse = plan.find("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert len(sse) == 1
    pab = one(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "llm-models-public-access")
    assert all(pab[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    assert (
        one(plan, "aws:s3/bucketVersioning:BucketVersioning", "llm-models-versioning")["versioningConfiguration"][
            "status"
        ]
        == "Enabled"
    )
    repo = one(plan, "aws:ecr/repository:Repository", "llm-images-repo")
    assert repo["imageTagMutability"] == "IMMUTABLE" and repo["imageScanningConfiguration"]["scanOnPush"] is True
    assert plan.find("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    # The node may pull only from its own repository.
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-node-policy")["policy"])
    pull = next(s for s in doc["Statement"] if s["Sid"] == "PullImage")
    assert pull["Resource"].endswith(":repository/spotstack-test/llm-server")  # namespaced per stack (finding 6)


def test_cache_token_is_a_secure_parameter_fetched_at_boot(plan: PlanRun) -> None:
    param = one(plan, "aws:ssm/parameter:Parameter", "llm-cache-token")
    assert param["type"] == "SecureString" and param["name"] == "/spotstack/spotstack/test/llm/cache-token"
    assert plan.find("random:index/randomPassword:RandomPassword", "llm-cache-token")
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-node-policy")["policy"])
    read = next(s for s in doc["Statement"] if s["Sid"] == "ReadCacheToken")
    assert read["Resource"].endswith(":parameter/spotstack/spotstack/test/llm/cache-token")
    text = base64.b64decode(one(plan, "aws:ec2/launchTemplate:LaunchTemplate", "llm-lt")["userData"]).decode()
    assert "plan-placeholder" not in text  # the token itself never enters user data
    fetch = next(c for c in yaml.safe_load(text)["runcmd"] if "fetch-secret --cloud aws" in " ".join(c))
    assert "/spotstack/spotstack/test/llm/cache-token" in fetch[2] and "/etc/spotstack/cache-token" in fetch[2]


def test_node_permissions_exist_before_the_first_node_boots(plan: PlanRun) -> None:
    """Deployability finding 1: the policy named the groups' ARNs, so it was created after the groups
    (after Pulumi waited for their capacity) and the first nodes booted without permissions."""
    order = [(r.type, r.name) for r in plan.resources]
    policy_at = order.index(("aws:iam/rolePolicy:RolePolicy", "llm-node-policy"))
    groups_at = [i for i, (t, _) in enumerate(order) if t == "aws:autoscaling/group:Group"]
    assert groups_at and policy_at < min(groups_at)
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-node-policy")["policy"])
    names = {one(plan, "aws:autoscaling/group:Group", n)["name"] for n in ("llm-asg", "llm-fallback-asg")}
    arns = next(s for s in doc["Statement"] if s["Sid"] == "FinishLifecycle")["Resource"]
    assert {a.rsplit("/", 1)[1] for a in arns} == names  # ARNs from names, before the groups exist


def test_groups_judge_liveness_route_on_readiness_and_do_not_block_up(plan: PlanRun) -> None:
    """Findings 2-4: a draining node is not replaced, pulumi up does not wait for GPU capacity, and the
    fallback group stands in for the spot share only."""
    for n in ("llm-asg", "llm-fallback-asg"):
        g = one(plan, "aws:autoscaling/group:Group", n)
        assert g["healthCheckType"] == "EC2" and g["waitForCapacityTimeout"] == "0"
    assert one(plan, "aws:lb/targetGroup:TargetGroup", "llm-tg")["healthCheck"]["path"] == "/ready"
    assert one(plan, "aws:autoscaling/group:Group", "llm-fallback-asg")["maxSize"] == 5  # max 6 - base 1


@pytest.mark.parametrize(
    ("upstream", "rule"),
    [("public.ecr.aws", True), ("registry-1.docker.io", False), ("ghcr.io", False), ("acme.azurecr.io", False)],
)
def test_pull_through_needs_a_credential_where_ecr_does_and_nodes_may_pull_through(
    fleet: dict[str, Any], upstream: str, rule: bool
) -> None:
    """Deployability finding 5: Docker Hub / GHCR / GitLab / ACR upstreams need a Secrets Manager credential,
    and the nodes need rights on the cache's repositories (created on first pull)."""
    from spotstack.components import program

    fleet["image"]["pull_through_upstream"] = upstream
    plan = run_offline(program.run, {"spotstack:fleets": [fleet]}, stack="test")
    rules = plan.find("aws:ecr/pullThroughCacheRule:PullThroughCacheRule")
    assert bool(rules) is rule
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-node-policy")["policy"])
    cache = [s for s in doc["Statement"] if s["Sid"] == "PullThroughCache"]
    if rule:
        assert cache[0]["Resource"] == "arn:aws:ecr:us-east-1:*:repository/llm-images-cache/*"
        assert "ecr:BatchImportUpstreamImage" in cache[0]["Action"]
    else:
        assert not cache and any("ecr-pullthroughcache/" in w for w in plan.warnings)


def test_a_new_template_version_rolls_through_both_groups_spot_safely(fleet: dict[str, Any]) -> None:
    """A new image or agent reaches running nodes: the groups follow the template's version number (with
    "$Latest" a group never changes, so no refresh would start) and refresh launch-before-terminate."""
    plan = declare(fleet)
    for g in plan.find("aws:autoscaling/group:Group"):
        spec = (
            g.inputs.get("launchTemplate")
            or g.inputs["mixedInstancesPolicy"]["launchTemplate"]["launchTemplateSpecification"]
        )
        assert spec["version"] == "1", g.name
        refresh = g.inputs["instanceRefresh"]
        prefs = refresh["preferences"]
        assert refresh["strategy"] == "Rolling"
        assert prefs["minHealthyPercentage"] == 100 and prefs["maxHealthyPercentage"] == 200  # surge, never dip
        assert prefs["skipMatching"] is True and prefs["checkpointPercentages"][-1] == 100
        assert int(prefs["instanceWarmup"]) >= 300  # a GPU node needs minutes to serve
