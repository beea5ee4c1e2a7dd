"""The cloud controller on Alibaba Cloud, its signed RPC calls answered by a loopback ESS/ECS/ALB that checks each
signature and answers as documented (tests/clouds/alicloud_fleet.py), its memory in a loopback OSS that takes
Signature V4 only (the controller's own standard-library client): the same scenario as on AWS and GCP — a spot
stockout with interruption notices grows the on-demand fallback group
(from its economical-mode pool of stopped instances), which shrinks only once spot has served for the hold — plus
a broken observation, the state store race, and the function's package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from spotstack.runtime.controller.adaptors.alicloud import Api, OssStore
from spotstack.runtime.controller.adaptors.oss import OssBucket
from spotstack.runtime.controller.alicloud_function import event_of, fleet_of, handle
from spotstack.runtime.controller.invocation import policy_of
from spotstack.runtime.controller.package import ALICLOUD_HANDLER, function_files
from spotstack.runtime.controller.round import run_round
from spotstack.runtime.secrets import SecretError
from tests.clouds.alicloud_api import OssFake
from tests.clouds.alicloud_fleet import AlicloudFleetFake, Threaded

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, an hour after the fake's instances were created
CREDS = {"AccessKeyId": "STS.ctl", "AccessKeySecret": "fc-role-secret", "SecurityToken": "fc-sts-token"}
CFG: dict[str, Any] = {
    "fleet": "llm",
    "region": "us-west-1",
    "main_group": "asg-main",
    "fallback_group": "asg-fallback",
    "server_group": "sgp-llm",
    "listener": "lsn-llm",
    "bucket": "llm-controller",
    "policy": {
        "spot_types": ["ecs.gn7i-c8g1.2xlarge", "ecs.gn6i-c4g1.xlarge"],
        "on_demand_types": ["ecs.gn7i-c8g1.2xlarge"],
        "min": 3,
        "max": 6,
        "base_on_demand": 1,
        "on_demand_above_base_percent": 0,
        "dynamic_fallback": True,
    },
}


class Cloud:
    def __init__(self) -> None:
        self.api = AlicloudFleetFake(CREDS, "us-west-1", "sgp-llm", "lsn-llm")
        # The main group holds the on-demand base and spot (OnDemandBaseCapacity 1), as the component declares it.
        self.api.add_group("asg-main", CFG["policy"]["spot_types"], spot=True, desired=3, base=1)
        self.api.add_group("asg-fallback", CFG["policy"]["on_demand_types"], spot=False, desired=0, recycle=True)
        self.oss = OssFake({"llm-controller": {}}, CREDS)
        self.servers = Threaded()
        rpc = web.Application()
        rpc.router.add_get("/", self.api.rpc)
        oss_app = web.Application()
        self.oss.routes(oss_app)
        self.rpc_url = url = self.servers.serve(rpc)
        endpoints = {"ess": url, "ecs": url, "alb": url}
        self.fleet = fleet_of(CFG, Api("us-west-1", CREDS, endpoints))
        self.oss_url = self.servers.serve(oss_app)
        bucket = OssBucket(self.oss_url, "llm-controller", "us-west-1", lambda: CREDS)  # V4, as the function signs
        self.store = OssStore(bucket, "controller/llm")

    def desired(self, gid: str) -> int:
        return self.api.groups[gid].desired


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    c = Cloud()
    yield c
    c.servers.stop()


def notice(iid: str, at: float) -> bytes:
    """The EventBridge CloudEvent Function Compute passes for an ECS spot interruption, as bytes."""
    when = __import__("datetime").datetime.fromtimestamp(at, tz=__import__("datetime").timezone.utc)
    event = {
        "id": f"evt-{iid}",
        "source": "acs.ecs",
        "specversion": "1.0",
        "type": "ecs:Instance:PreemptibleInstanceInterruption",
        "subject": f"acs:ecs:us-west-1:1234567890123456:instance/{iid}",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aliyunregionid": "us-west-1",
        "data": {"instanceId": iid, "action": "delete"},
    }
    return json.dumps(event).encode()


def test_a_spot_stockout_grows_the_fallback_from_its_pool_and_it_shrinks_only_after_the_hold(cloud: Cloud) -> None:
    timer = event_of(b'{"triggerTime": "2027-01-15T08:00:00Z", "triggerName": "every-minute", "payload": ""}')
    r = handle(timer, CFG, cloud.fleet, cloud.store, now=T0)
    assert r["event"] == "timer" and r["acted"] and r["wanted"]["fallback"] == 0 and cloud.desired("asg-fallback") == 0
    assert [x["state"] for x in r["replicas"]] == ["ready"] * 3

    main = cloud.api.groups["asg-main"]
    doomed = sorted(i for i, e in main.members.items() if e.spot)
    handle(event_of(notice(doomed[0], T0 + 60)), CFG, cloud.fleet, cloud.store, now=T0 + 60)
    # No spot replacement has been seen starting yet (no measured start time): a stand-in, within this call.
    assert cloud.desired("asg-fallback") == 1
    state = cloud.store.load()
    assert state.notices[doomed[0]].deadline == T0 + 60 + 300 and state.preempted_at

    # Both go with no spot to replace them: ESS records the stockout, the fallback grows.
    cloud.api.stocked_out = set(CFG["policy"]["spot_types"])
    for i in doomed:
        cloud.api.preempt(i)
    cloud.api.reconcile()
    r = handle(event_of(b""), CFG, cloud.fleet, cloud.store, now=T0 + 90)
    assert cloud.desired("asg-fallback") == 2, r["reasons"]
    assert "ecs.gn7i-c8g1.2xlarge" in cloud.store.load().failed_at
    assert any("refused launch" in x and "NoStock" in x for x in r["reasons"])
    cloud.api.reconcile()
    fallback = cloud.api.running("asg-fallback")
    assert len(fallback) == 2

    # Spot returns; not yet READY for the hold: the fallback stays.
    cloud.api.stocked_out = set()
    cloud.api.reconcile()
    r2 = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 400)
    assert cloud.desired("asg-fallback") == 2, r2.as_dict()["reasons"]
    # After the hold, exactly the fallback instances go: stopped into the group's pool (economical mode).
    r2 = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 440)
    assert sorted(r2.decision.terminate) == fallback
    assert cloud.desired("asg-fallback") == 0 and cloud.api.running("asg-fallback") == []
    pool = cloud.api.groups["asg-fallback"].members
    assert sorted(pool) == fallback and {e.life for e in pool.values()} == {"Stopped"}

    # The next stockout starts the stopped instances (disks with the model) instead of creating new ones; the
    # pool's stopped instances are never counted as replicas.
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 500)
    assert len(r.seen.replicas) == 3
    cloud.api.stocked_out = set(CFG["policy"]["spot_types"])
    spot_now = sorted(i for i, e in main.members.items() if e.spot)
    for i in spot_now:
        cloud.api.preempt(i)
    cloud.api.reconcile()
    run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 560)
    cloud.api.reconcile()
    assert cloud.api.running("asg-fallback") == fallback
    assert all(e.warm_starts == 1 for e in pool.values())


def test_every_call_the_scenario_makes_is_one_its_role_allows(cloud: Cloud) -> None:
    from spotstack.components.alicloud.controller import controller_policy

    test_a_spot_stockout_grows_the_fallback_from_its_pool_and_it_shrinks_only_after_the_hold(cloud)
    products = {"2014-08-28": "ess", "2014-05-26": "ecs", "2020-06-16": "alb"}
    made = {f"{products[v]}:{a}" for v, a in cloud.api.versioned_calls}
    doc = controller_policy("us-west-1", "asg-main", "asg-fallback", "sgp-llm", "lsn-llm", "llm-controller", "logs")
    allowed = {a for st in doc["Statement"] for a in st["Action"]}
    assert {"ess:ModifyScalingGroup", "ess:RemoveInstances", "alb:GetListenerHealthStatus"} <= made
    assert made <= allowed, made - allowed


def test_another_fleets_interruption_is_not_ours(cloud: Cloud) -> None:
    cloud.api.add_group("asg-other-fleet", CFG["policy"]["spot_types"], spot=True, desired=1)
    other = next(iter(cloud.api.groups["asg-other-fleet"].members))
    r = handle(event_of(notice(other, T0)), CFG, cloud.fleet, cloud.store, now=T0)
    assert cloud.store.load().notices == {} and r["wanted"]["fallback"] == 0


def test_a_broken_observation_scales_nothing_down(cloud: Cloud) -> None:
    cloud.api.groups["asg-fallback"].desired = 1
    cloud.api.reconcile()
    cloud.api.fail["GetListenerHealthStatus"] = "Throttling.User"
    with pytest.raises(SecretError, match=r"Throttling\.User"):
        run_round(cloud.fleet, cloud.store, policy_of(CFG), T0)
    assert cloud.desired("asg-fallback") == 1 and "ModifyScalingGroup" not in cloud.api.calls


def test_a_bad_signature_is_refused_like_the_cloud_would(cloud: Cloud) -> None:
    wrong = Api("us-west-1", {**CREDS, "AccessKeySecret": "not-the-secret"}, cloud.fleet.api.endpoints)
    with pytest.raises(SecretError, match="IncompleteSignature"):
        wrong("ess", "DescribeScalingGroups", **{"ScalingGroupId.1": "asg-main"})


def test_of_two_overlapping_rounds_only_one_acts(cloud: Cloud) -> None:
    first, second = cloud.store.load(), cloud.store.load()
    a = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0, state=first)
    b = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0, state=second)
    assert a.acted and a.saved and not b.acted and not b.saved
    assert "lost the state store race" in " ".join(b.as_dict()["reasons"])
    # Many rounds later only the last few numbered states are kept, and the latest is what loads.
    for k in range(8):
        assert run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 60 * (k + 1)).saved
    keys = sorted(cloud.oss.buckets["llm-controller"])
    assert len(keys) == 5 and keys[-1] == "controller/llm/state-00000009.json"
    assert cloud.store.load().version == 9


def test_controller_once_from_the_deployed_config(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`spotstack controller once --config FILE`: the document the component exports, credentials from the usual
    environment variables; a dry run changes nothing and saves nothing, a real round saves its memory."""
    from typer.testing import CliRunner

    from spotstack.cli.main import app

    doc = tmp_path / "controller.json"
    doc.write_text(json.dumps({**CFG, "cloud": "alicloud"}))
    for k, v in {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": CREDS["AccessKeyId"],
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": CREDS["AccessKeySecret"],
        "ALIBABA_CLOUD_SECURITY_TOKEN": CREDS["SecurityToken"],
        "SPOTSTACK_OSS_ENDPOINT": cloud.oss_url,
    }.items():
        monkeypatch.setenv(k, v)
    args = ["controller", "once", "--config", str(doc), "--endpoint-url", cloud.rpc_url, "--json"]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    out = json.loads(dry.stdout)
    assert len(out["replicas"]) == 3 and not out["acted"] and cloud.oss.buckets["llm-controller"] == {}
    real = CliRunner().invoke(app, args)
    assert real.exit_code == 0 and json.loads(real.stdout)["saved"], real.output
    assert list(cloud.oss.buckets["llm-controller"]) == ["controller/llm/state-00000001.json"]
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in missing.output


def test_the_function_package_imports_with_the_standard_library_alone(tmp_path: Path) -> None:
    """Function Compute runs the archive as is: the handler imports in a fresh interpreter with nothing on the path
    but the archive and the standard library (not even the runtime's oss2: its own V4 client signs)."""
    code = tmp_path / "code"
    for name, path in function_files("alicloud").items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_bytes(path.read_bytes())
    module, func = ALICLOUD_HANDLER.rsplit(".", 1)
    probe = (
        f"import sys; sys.path.insert(0, {str(code)!r}); import importlib; m = importlib.import_module({module!r}); "
        f"assert callable(getattr(m, {func!r})) and m.__file__.startswith({str(code)!r}); "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('pydantic', 'aiohttp', 'oss2', 'boto3', 'google')]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-S", "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_new_configuration_rolls_through_the_main_group_one_surge_at_a_time(cloud: Cloud) -> None:
    """ESS applies a changed scaling configuration only to instances it launches next: the controller replaces
    the running ones, one surge at a time, each replacement serving for the settle time before a stale one goes;
    the group never has fewer serving than its target, and decide() stands in no fallback for a surge."""
    main = cloud.api.groups["asg-main"]
    for e in main.members.values():
        e.config = "cfg-1"
    main.config = "cfg-1"
    fleet = fleet_of({**CFG, "config_tag": "cfg-1"}, cloud.fleet.api)
    r = run_round(fleet, cloud.store, policy_of(CFG), T0)
    assert r.seen.roll is None and cloud.desired("asg-main") == 3

    # `pulumi up` changed the configuration in place (its tag with it) and the controller's document.
    main.config = "cfg-2"
    fleet = fleet_of({**CFG, "config_tag": "cfg-2"}, cloud.fleet.api)
    stale = set(main.members)
    cloud.api.launch_healthy = False  # a replacement loads its model for a round before it serves
    surges, removed, now, reasons = 0, [], T0, []
    for _ in range(40):
        now += 60
        r = run_round(fleet, cloud.store, policy_of(CFG), now)
        assert r.acted and r.decision.wanted_fallback == 0, r.as_dict()
        reasons.append(r.seen.roll.reason if r.seen.roll else "done")
        surges += bool(r.seen.roll and r.seen.roll.surge == 1)
        removed += [r.seen.roll.remove] if r.seen.roll and r.seen.roll.remove else []
        for e in main.members.values():
            e.healthy = True  # what launched in the last round has loaded by the next
        cloud.api.reconcile()
        serving = [e for e in main.members.values() if e.healthy and e.life == "InService"]
        assert len(serving) >= 3, reasons
        if r.seen.roll is None:
            break
    assert {e.config for e in main.members.values()} == {"cfg-2"}, reasons
    assert sorted(removed) == sorted(stale) and surges == 3 and cloud.desired("asg-main") == 3
    assert any("serves 300 s before a stale one goes" in x for x in reasons)
    assert "roll" not in cloud.store.load().last
    from spotstack.components.alicloud.controller import controller_policy

    doc = controller_policy("us-west-1", "asg-main", None, "sgp-llm", "lsn-llm", "llm-controller", "logs")
    allowed = {a for st in doc["Statement"] for a in st["Action"]}
    products = {"2014-08-28": "ess", "2014-05-26": "ecs", "2020-06-16": "alb"}
    made = {f"{products[v]}:{a}" for v, a in cloud.api.versioned_calls}
    assert {"ess:ModifyScalingGroup", "ess:RemoveInstances"} <= made <= allowed, made - allowed


def test_a_roll_at_the_groups_maximum_replaces_in_place(cloud: Cloud) -> None:
    main = cloud.api.groups["asg-main"]
    main.max_size, main.config = 3, "cfg-2"
    fleet = fleet_of({**CFG, "config_tag": "cfg-2"}, cloud.fleet.api)
    r = run_round(fleet, cloud.store, policy_of(CFG), T0)
    assert r.seen.roll is not None and r.seen.roll.remove and not r.seen.roll.decrease
    assert cloud.desired("asg-main") == 3 and "ModifyScalingGroup" not in cloud.api.calls
    cloud.api.reconcile()  # the group launches the replacement from the new configuration
    assert sum(e.config == "cfg-2" for e in main.members.values()) == 1
