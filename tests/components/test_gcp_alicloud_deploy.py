"""GCP and Alibaba fleets that can boot and serve after `pulumi up`: the cache token, egress, health checks,
GPU attachment, schedules and registry rights (hardening item 5; deployability findings 7-20)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from spotstack.components.plan.engine import PlanRun
from tests.components.test_gcp_alicloud import as_cloud, one, plan_of
from tests.conftest import ROOT, base_fleet, region_config


@pytest.fixture(scope="module")
def gcp() -> PlanRun:
    return plan_of(as_cloud("gcp"))


@pytest.fixture(scope="module")
def ali() -> PlanRun:
    return plan_of(as_cloud("alicloud"))


def plain(value: Any) -> str:
    """A secret output as the mock engine records it ({sig, value}) or a plain string."""
    return str(value.get("value", value) if isinstance(value, dict) else value)


def boot_doc(user_data: str) -> dict[str, Any]:
    import base64

    text = user_data if user_data.startswith("#cloud-config") else base64.b64decode(user_data).decode()
    return dict(yaml.safe_load(text))


def test_gcp_cache_token_is_a_secret_only_the_node_reads(gcp: PlanRun) -> None:
    """Hardening item 5: GCP nodes get their peer-cache token (they had none, so the cache was off)."""
    secret = one(gcp, "gcp:secretmanager/secret:Secret", "llm-cache-token")
    assert secret["secretId"] == "spotstack-spotstack-test-llm-cache-token"  # project, stack, fleet: no collisions
    version = one(gcp, "gcp:secretmanager/secretVersion:SecretVersion", "llm-cache-token-v1")
    assert version["secretData"]  # the generated token
    grant = one(gcp, "gcp:secretmanager/secretIamMember:SecretIamMember", "llm-read-cache-token")
    assert grant["role"] == "roles/secretmanager.secretAccessor" and grant["member"].startswith("serviceAccount:")
    md = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")["metadata"]
    assert plain(version["secretData"]) not in md["user-data"]  # never in instance metadata
    fetch = [c for c in boot_doc(md["user-data"])["runcmd"] if "fetch-secret" in " ".join(c)]
    assert len(fetch) == 1 and "--cloud gcp" in fetch[0][2] and "/etc/spotstack/cache-token" in fetch[0][2]


def test_alicloud_cache_token_is_an_oos_secret_parameter(ali: PlanRun) -> None:
    param = one(ali, "alicloud:oos/secretParameter:SecretParameter", "llm-cache-token")
    assert param["type"] == "Secret" and param["secretParameterName"] == "spotstack-spotstack-test-llm-cache-token"
    doc = json.loads(one(ali, "alicloud:ram/policy:Policy", "llm-node-policy")["policyDocument"])
    read = next(s for s in doc["Statement"] if s["Action"] == ["oos:GetSecretParameter"])
    assert read["Resource"] == ["acs:oos:us-west-1:*:secretparameter/spotstack-spotstack-test-llm-cache-token"]
    ud = one(ali, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-config")["userData"]
    assert plain(param["value"]) not in repr(boot_doc(ud))
    fetch = [c for c in boot_doc(ud)["runcmd"] if "fetch-secret" in " ".join(c)]
    assert len(fetch) == 1 and "--cloud alicloud" in fetch[0][2] and "--region us-west-1" in fetch[0][2]


def test_gcp_groups_heal_on_liveness_spread_balanced_and_use_the_stack_project(gcp: PlanRun) -> None:
    """Deployability findings 7, 8 and 11."""
    live = one(gcp, "gcp:compute/healthCheck:HealthCheck", "llm-live")
    assert live["httpHealthCheck"]["requestPath"] == "/healthz"
    ready = one(gcp, "gcp:compute/healthCheck:HealthCheck", "llm-ready")
    assert ready["httpHealthCheck"]["requestPath"] == "/ready"
    for kind in ("base", "spot", "fallback"):
        mig = one(gcp, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", f"llm-{kind}-mig")
        assert mig["distributionPolicyTargetShape"] == "BALANCED"
        assert mig["autoHealingPolicies"]["healthCheck"] == "llm-live-id"  # not the readiness check
    assert one(gcp, "gcp:compute/backendService:BackendService", "llm-backend")["healthChecks"] == "llm-ready-id"


def test_fleets_declare_no_provider_of_their_own() -> None:
    """A provider made per fleet read none of the stack's provider config (gcp:project, aws:defaultTags ...):
    children take the stack's default provider, or the one the caller passes."""
    from spotstack.components import program
    from spotstack.components.plan.engine import run_offline

    for cloud in ("aws", "gcp", "alicloud"):
        raw = base_fleet() if cloud == "aws" else as_cloud(cloud)
        plan = run_offline(program.run, {"gcp:project": "acme-ml", "spotstack:fleets": [raw], **region_config(raw)})
        assert not [r.name for r in plan.resources if r.type.startswith("pulumi:providers:")], cloud


def test_alicloud_recurring_schedules_carry_their_end_time(ali: PlanRun) -> None:
    """Finding 14: ESS needs RecurrenceEndTime with a recurrence, at most 365 days out."""
    import datetime as dt

    task = one(ali, "alicloud:ess/scheduledTask:ScheduledTask", "llm-schedule-day")
    assert task["recurrenceType"] == "Cron" and task["recurrenceValue"] == "0 8 * * *"
    ends = dt.datetime.strptime(task["recurrenceEndTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert dt.timedelta(days=300) < ends - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=365)


def test_nodes_install_their_clouds_object_store_backend(gcp: PlanRun, ali: PlanRun) -> None:
    """Finding 13: gs:// and oss:// model URLs need gcsfs / ossfs on the node."""
    from spotstack.components.agent_wheel import build

    wheel = build().filename  # the deploying version's wheel, with the cloud's extra
    md = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")["metadata"]
    words = " ".join(w for c in boot_doc(md["user-data"])["runcmd"] for w in c)
    assert f"{wheel}[agent-gcp]" in words and "spotstack[agent-gcp]==" in words
    ud = one(ali, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-config")["userData"]
    words = " ".join(w for c in boot_doc(ud)["runcmd"] for w in c)
    assert f"{wheel}[agent-alicloud]" in words and "spotstack[agent-alicloud]==" in words
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("gcsfs") for d in extras["agent-gcp"])
    assert any(d.startswith("ossfs") for d in extras["agent-alicloud"])


def test_gcp_groups_rank_only_types_that_attach_the_same_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 10: flexibility overrides only the machine type, so an L4 template cannot rank an N1 + T4 type;
    accelerator-optimized types (g2, a2) carry their GPUs and declare none."""
    from spotstack.components.gcp import mapping
    from spotstack.components.validate import validate_fleets

    assert mapping.accelerator("g2-standard-4") is None and mapping.accelerator("a2-highgpu-1g") is None
    real = mapping.accelerator
    monkeypatch.setattr(mapping, "accelerator", lambda t: ("nvidia-tesla-t4", 1) if t.startswith("n1-") else real(t))
    raw = as_cloud("gcp")
    raw["instances"] = [
        {"type": "g2-standard-4", "spot": {}},
        {"type": "n1-standard-8", "spot": {}, "on_demand_price": 1.0},
        {"type": "a2-highgpu-1g", "on_demand": {}},
    ]
    (spec,), _ = validate_fleets([raw])
    g = mapping.groups(spec)
    assert g.spot_types == ["g2-standard-4"] and g.on_demand_types == ["g2-standard-4", "a2-highgpu-1g"]
    assert any("['n1-standard-8'] need other guest accelerators" in w for w in mapping.warnings(spec))


def test_gcp_default_network_gets_egress(gcp: PlanRun) -> None:
    """Finding 9: without an external IP or a NAT, boot could not install the agent nor reach GCS."""
    nat = one(gcp, "gcp:compute/routerNat:RouterNat", "llm-nat")
    assert nat["natIpAllocateOption"] == "AUTO_ONLY" and nat["region"] == "us-central1"
    assert nat["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    assert one(gcp, "gcp:compute/router:Router", "llm-router")["network"] == "default"


def test_alicloud_new_vpc_gets_a_nat_gateway(ali: PlanRun) -> None:
    """Finding 18: a new VPC with no NAT and no public bandwidth had no egress."""
    nat = one(ali, "alicloud:vpc/natGateway:NatGateway", "llm-nat")
    assert nat["natType"] == "Enhanced" and nat["paymentType"] == "PayAsYouGo"
    eip = one(ali, "alicloud:ecs/eipAddress:EipAddress", "llm-nat-eip")
    assert eip["paymentType"] == "PayAsYouGo" and eip["internetChargeType"] == "PayByTraffic"
    assoc = one(ali, "alicloud:ecs/eipAssociation:EipAssociation", "llm-nat-eip-assoc")
    assert assoc["instanceType"] == "Nat"
    snats = [r for r in ali.resources if r.type == "alicloud:vpc/snatEntry:SnatEntry"]
    assert len(snats) == len(as_cloud("alicloud")["zones"])


def test_alicloud_pull_rights_name_the_acr_instance(ali: PlanRun) -> None:
    """Finding 20: an ACR EE repository's ARN includes its instance id; the login token needs `*`."""
    doc = json.loads(one(ali, "alicloud:ram/policy:Policy", "llm-node-policy")["policyDocument"])
    pull = next(s for s in doc["Statement"] if "cr:PullRepository" in s["Action"])
    assert pull["Resource"] == ["acs:cr:us-west-1:*:repository/cri-acmeplan0001/spotstack-test/llm-server"]
    token = next(s for s in doc["Statement"] if s["Action"] == ["cr:GetAuthorizationToken"])
    assert token["Resource"] == ["*"]


def test_alicloud_registry_subscription_only_when_asked_and_then_manual_and_protected() -> None:
    """Finding 16: no prepaid instance unless the spec asks for one; then no auto-renewal, and the plan says so."""
    from spotstack.components.validate import SpecError, validate_fleets
    from tests.components.test_gcp_alicloud import plan_of

    raw = as_cloud("alicloud")
    raw["image"] = {"repository": "llm-server", "tag": "v1"}
    with pytest.raises(SpecError) as e:
        validate_fleets([raw], prefix="fleets")
    assert "fleets[0].image.registry_instance" in str(e.value)
    raw["image"]["create_registry_instance"] = True
    bought = plan_of(raw)
    inst = one(bought, "alicloud:cr/registryEnterpriseInstance:RegistryEnterpriseInstance", "llm-images-instance")
    assert inst["renewalStatus"] == "ManualRenewal" and "renewPeriod" not in inst
    assert any("subscription" in w for w in bought.warnings)


def test_alicloud_nodes_pull_from_the_fleets_registry_over_its_vpc_endpoint_with_a_login(ali: PlanRun) -> None:
    """Finding 16: nodes ran docker.io/<repository> with no login; now the instance's VPC endpoint, logged in
    with the node's RAM role before each start."""
    assert not ali.find("alicloud:cr/registryEnterpriseInstance:RegistryEnterpriseInstance")  # reused, not bought
    link = one(ali, "alicloud:cr/vpcEndpointLinkedVpc:VpcEndpointLinkedVpc", "llm-registry-vpc")
    assert link["instanceId"] == "cri-acmeplan0001" and link["moduleName"] == "Registry"
    assert link["enableCreateDnsRecordInPvzt"] is True
    ud = one(ali, "alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-config")["userData"]
    unit = next(f["content"] for f in boot_doc(ud)["write_files"] if f["path"].endswith("spotstack-workload.service"))
    host = "plan-acr-registry-vpc.us-west-1.cr.aliyuncs.com"
    assert f" {host}/spotstack-test/llm-server:v1\n" in unit
    assert f"agent registry-login --instance-id cri-acmeplan0001 --region us-west-1 --registry {host}" in unit


def test_alicloud_nodes_admit_the_albs_addresses_in_their_vpc(ali: PlanRun) -> None:
    """Finding 15: the ALB reaches nodes from addresses in its vSwitches, not from the CLB range."""
    for port in ("service", "readiness"):
        rule = one(ali, "alicloud:ecs/securityGroupRule:SecurityGroupRule", f"llm-in-{port}")
        assert rule["cidrIp"] == "10.42.0.0/16"
    alb = one(ali, "alicloud:alb/loadBalancer:LoadBalancer", "llm-alb")
    assert [m["zoneId"] for m in alb["zoneMappings"]] == ["us-west-1a", "us-west-1b"]
    assert alb["loadBalancerBillingConfig"] == {"payType": "PayAsYouGo"}


def test_alicloud_fleet_in_a_given_vpc_admits_that_vpcs_range() -> None:
    raw = as_cloud("alicloud")
    raw["network"] = {"id": "vpc-given", "subnets": ["vsw-a", "vsw-b"]}
    from tests.components.test_gcp_alicloud import plan_of

    plan = plan_of(raw)
    assert one(plan, "alicloud:ecs/securityGroupRule:SecurityGroupRule", "llm-in-service")["cidrIp"] == "10.0.0.0/8"
    alb = one(plan, "alicloud:alb/loadBalancer:LoadBalancer", "llm-alb")
    pairs = [(m["zoneId"], m["vswitchId"]) for m in alb["zoneMappings"]]
    assert pairs == [("us-west-1a", "vsw-a"), ("us-west-1b", "vsw-b")]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"zones": ["us-west-1a"]}, "fleets[0].zones"),
        ({"network": {"id": "vpc-given", "subnets": ["vsw-a"]}}, "fleets[0].network.subnets"),
    ],
)
def test_alicloud_fleet_needs_two_zones_and_a_vswitch_each(change: dict[str, Any], path: str) -> None:
    from spotstack.components.validate import SpecError, validate_fleets

    raw = {**as_cloud("alicloud"), **change}
    with pytest.raises(SpecError) as e:
        validate_fleets([raw], prefix="fleets")
    assert path in str(e.value)


def test_names_unique_per_account_or_project_carry_the_stack() -> None:
    """Finding 6: a second stack in the same account/project collided on fixed names (RAM role and policy,
    service account, registries). They now carry project and stack; a long one is cut with a hash."""
    from spotstack.components import program
    from spotstack.components.plan.engine import run_offline

    def names(stack: str) -> set[str]:
        out: set[str] = set()
        for cloud in ("gcp", "alicloud"):
            plan = run_offline(
                program.run, {"spotstack:fleets": [as_cloud(cloud)], **region_config(as_cloud(cloud))}, stack=stack
            )
            for r in plan.resources:
                for key in ("roleName", "policyName", "accountId", "repositoryId", "secretId"):
                    if (
                        r.custom
                        and key in r.inputs
                        and r.type != "alicloud:ram/rolePolicyAttachment:RolePolicyAttachment"
                    ):
                        out.add(f"{r.type}:{r.inputs[key]}")
        return out

    dev, prod = names("dev"), names("production-eu-west-with-a-long-name")
    assert dev and not dev & prod
    for n in prod:
        value = n.rsplit(":", 1)[1]
        if "serviceaccount" in n:
            assert len(value) <= 30 and value[0].isalpha()
