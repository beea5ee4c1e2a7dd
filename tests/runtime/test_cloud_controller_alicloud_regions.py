"""The Alibaba Cloud controller of a fleet across two regions, its signed RPC calls answered by two loopback
ESS/ECS/ALB APIs (one per region, each refusing another region's calls: tests/clouds/alicloud_fleet.py), its memory
in a loopback OSS: a whole-region outage (no spot, no on-demand) moves the fallback to the other region and back
once spot returns; a region whose API fails is left as it is; another region's interruption is seen by its
`Recycling` lock, as the home region's EventBridge trigger hears only its own region."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from spotstack.runtime.controller.adaptors.alicloud import NOTICE_S, ROUND_S, OssStore
from spotstack.runtime.controller.adaptors.oss import OssBucket
from spotstack.runtime.controller.alicloud_function import event_of, fleet_and_store, handle
from spotstack.runtime.controller.regions import Regions
from tests.clouds.alicloud_api import OssFake
from tests.clouds.alicloud_fleet import AlicloudFleetFake, Threaded

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOME, OTHER = "us-west-1", "ap-southeast-1"
TYPES = ["ecs.gn7i-c8g1.2xlarge", "ecs.gn6i-c4g1.xlarge"]
CREDS = {"AccessKeyId": "STS.ctl", "AccessKeySecret": "fc-role-secret", "SecurityToken": "fc-sts-token"}


def entry(region: str) -> dict[str, Any]:
    return {
        "region": region,
        "main_group": f"asg-{region}",
        "fallback_group": f"asg-{region}-fallback",
        "server_group": f"sgp-{region}",
        "listener": f"lsn-{region}",
        "config_tag": None,
        "on_demand_price": 1.0,
        "min": 3,
        "max": 4,
        "base_on_demand": 0,
    }


CFG: dict[str, Any] = {
    "cloud": "alicloud",
    "fleet": "llm",
    **{k: v for k, v in entry(HOME).items() if k not in ("on_demand_price", "min", "max", "base_on_demand")},
    "bucket": "llm-controller",
    "policy": {
        "spot_types": [f"{r}/{t}" for t in TYPES for r in (HOME, OTHER)],
        "on_demand_types": TYPES[:1],
        "min": 6,
        "max": 8,
        "dynamic_fallback": True,
    },
    "regions": [entry(HOME), entry(OTHER)],
}


class TwoRegions:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.servers = Threaded()
        self.api: dict[str, AlicloudFleetFake] = {}
        urls = {}
        for i, region in enumerate((HOME, OTHER)):
            e = entry(region)
            self.api[region] = api = AlicloudFleetFake(CREDS, region, e["server_group"], e["listener"], 0x100 * i)
            api.add_group(e["main_group"], TYPES, spot=True, desired=3)
            api.add_group(e["fallback_group"], TYPES[:1], spot=False, desired=0, recycle=True, max_size=8)
            app = web.Application()
            app.router.add_get("/", api.rpc)
            urls[region] = self.servers.serve(app)
        self.oss = OssFake({"llm-controller": {}}, CREDS)
        oss_app = web.Application()
        self.oss.routes(oss_app)
        oss_url = self.servers.serve(oss_app)
        for k, v in {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": CREDS["AccessKeyId"],
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": CREDS["AccessKeySecret"],
            "ALIBABA_CLOUD_SECURITY_TOKEN": CREDS["SecurityToken"],
            "SPOTSTACK_OSS_ENDPOINT": oss_url,
        }.items():
            monkeypatch.setenv(k, v)
        # The function's own construction: an adaptor per region from the document, each to its region's API.
        fleet, store = fleet_and_store(CFG, urls)
        assert isinstance(fleet, Regions)
        self.fleet: Regions[Any] = fleet
        self.store: OssStore = store
        assert isinstance(store.bucket, OssBucket)

    def round(self, at: float, raw: bytes = b"") -> dict[str, Any]:
        out = handle(event_of(raw), CFG, self.fleet, self.store, now=at)
        for api in self.api.values():
            api.reconcile()  # what the groups do between rounds
        return out

    def desired(self, region: str, fallback: bool = True) -> int:
        return self.api[region].groups[f"asg-{region}" + ("-fallback" if fallback else "")].desired


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoRegions]:
    c = TwoRegions(monkeypatch)
    yield c
    c.servers.stop()


def notice(region: str, iid: str, at: float) -> bytes:
    """The EventBridge CloudEvent of an ECS spot interruption, as Function Compute passes it."""
    when = __import__("datetime").datetime.fromtimestamp(at, tz=__import__("datetime").timezone.utc)
    event = {
        "id": f"evt-{iid}",
        "source": "acs.ecs",
        "type": "ecs:Instance:PreemptibleInstanceInterruption",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aliyunregionid": region,
        "data": {"instanceId": iid, "action": "delete"},
    }
    return json.dumps(event).encode()


def test_a_regional_outage_moves_the_fallback_to_the_other_region_and_back(cloud: TwoRegions) -> None:
    r = cloud.round(T0)
    assert r["acted"] and r["wanted"]["fallback"] == 0 and r["target"] == 6

    # us-west-1 loses everything: its spot instances get their notices, and neither spot nor on-demand is left.
    home = cloud.api[HOME]
    doomed = home.running(f"asg-{HOME}")
    home.stocked_out, home.on_demand_out = set(TYPES), True
    for i, iid in enumerate(doomed):
        r = cloud.round(T0 + 60 + i, notice(HOME, iid, T0 + 60))
    state = cloud.store.load()
    assert set(state.notices) == set(doomed) and f"{HOME}/{TYPES[0]}" in state.preempted_at
    assert r["wanted"]["fallback"] == 3
    for iid in doomed:
        home.preempt(iid)
    # The home region, first choice while nothing said it was out, refused its stand-ins: they go to Singapore.
    for at in (T0 + 100, T0 + 130):
        r = cloud.round(at)
    assert f"{HOME}/on-demand" in cloud.store.load().failed_at
    assert cloud.desired(OTHER) == 3 and cloud.desired(HOME) == 0, r["reasons"]
    assert len(cloud.api[OTHER].running(f"asg-{OTHER}-fallback")) == 3
    for at in (T0 + 300, T0 + 600):
        r = cloud.round(at)
        assert cloud.desired(OTHER) == 3 and cloud.desired(HOME) == 0, r["reasons"]

    # The outage ends: us-west-1's spot group refills; once it has served for the hold, the stand-ins go (stopped
    # into Singapore's economical-mode pool).
    home.stocked_out, home.on_demand_out = set(), False
    home.reconcile()
    r = cloud.round(T0 + 700)
    assert cloud.desired(OTHER) == 3, r["reasons"]
    r = cloud.round(T0 + 760)
    assert r["wanted"]["fallback"] == 0 and cloud.desired(OTHER) == 0 and cloud.desired(HOME) == 0, r["reasons"]
    assert cloud.desired(HOME, fallback=False) == 3 and cloud.desired(OTHER, fallback=False) == 3
    stopped = [e for e in cloud.api[OTHER].groups[f"asg-{OTHER}-fallback"].members.values() if e.life == "Stopped"]
    assert len(stopped) == 3


def test_a_region_whose_api_fails_is_left_as_it_is(cloud: TwoRegions) -> None:
    # Singapore's interruption reaches no trigger of the home region: its `Recycling` lock is seen by the round.
    victim = cloud.api[OTHER].running(f"asg-{OTHER}")[0]
    cloud.api[OTHER]._find(victim).recycling = True  # type: ignore[union-attr]
    r = cloud.round(T0)
    state = cloud.store.load()
    assert state.notices[victim].pool == f"{OTHER}/{TYPES[0]}"
    assert state.notices[victim].deadline == T0 + NOTICE_S - ROUND_S
    assert cloud.desired(HOME) == 1 and cloud.desired(OTHER) == 0, r["reasons"]

    cloud.api[HOME].fail["DescribeScalingInstances"] = "ServiceUnavailable"
    before = len(cloud.api[HOME].calls)
    r = cloud.round(T0 + 600)
    assert r["acted"] and cloud.desired(HOME) == 1 and any(n.startswith(f"{HOME}: unknown") for n in r["reasons"])
    assert set(r["sizes_after"]) <= {f"{OTHER}/asg-{OTHER}", f"{OTHER}/asg-{OTHER}-fallback"}
    assert not {"ModifyScalingGroup", "RemoveInstances"} & set(cloud.api[HOME].calls[before:])


def test_an_event_is_recorded_by_its_regions_adaptor(cloud: TwoRegions) -> None:
    victim = cloud.api[OTHER].running(f"asg-{OTHER}")[0]
    cloud.round(T0, notice(OTHER, victim, T0))
    state = cloud.store.load()
    assert state.notices[victim].pool == f"{OTHER}/{TYPES[0]}" and state.notices[victim].deadline == T0 + NOTICE_S
