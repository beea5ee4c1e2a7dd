"""The GCP controller of a fleet across two regions, through Google's client libraries against two loopback
Compute APIs (one per region, tests/clouds/gcp_compute.py): a whole-region outage (no spot, no on-demand) moves the
fallback to the other region and back once spot returns; a region whose API fails is left as it is."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core.exceptions import InternalServerError
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from spotstack.runtime.controller.adaptors.gcp import GcsStore
from spotstack.runtime.controller.gcp_function import handle, region_of, regions_of
from tests.clouds.gcp_compute import ComputeFake

T0 = 1_800_000_000.0
HOME, OTHER = "us-central1", "us-east4"
TYPES = ["g2-standard-4", "g2-standard-8"]
CFG: dict[str, Any] = {
    "fleet": "llm",
    "project": "proj",
    "region": HOME,
    "groups": {"spot": "llm-spot-mig", "fallback": "llm-fallback-mig"},
    "backend_service": "llm-backend",
    "bucket": "llm-controller",
    "object": "controller/llm.json",
    "policy": {
        "spot_types": [f"{r}/{t}" for t in TYPES for r in (HOME, OTHER)],
        "on_demand_types": ["g2-standard-4"],
        "min": 6,
        "max": 8,
        "dynamic_fallback": True,
    },
    "regions": [
        {
            "region": r,
            "groups": {"spot": "llm-spot-mig", "fallback": "llm-fallback-mig"},
            "on_demand_price": 0.7068,
            "min": 3,
            "max": 4,
            "base_on_demand": 0,
        }
        for r in (HOME, OTHER)
    ],
}


class TwoRegions:
    def __init__(self) -> None:
        self.api = {
            HOME: ComputeFake("proj", HOME, [f"{HOME}-a", f"{HOME}-b"], "llm-backend"),
            OTHER: ComputeFake("proj", OTHER, [f"{OTHER}-a", f"{OTHER}-c"], "llm-backend"),
        }
        self.api[OTHER]._n = 0x100  # VM names stay apart across the two fakes, as GCP's are within a zone
        for api in self.api.values():
            api.add_group("llm-spot-mig", TYPES, spot=True, target=3)
            api.add_group("llm-fallback-mig", TYPES[:1], spot=False, target=0)
        self.fleet = regions_of(
            CFG,
            lambda r: {"client_options": {"api_endpoint": self.api[r].url}, "credentials": AnonymousCredentials()},
        )
        gcs = storage.Client(
            project="proj", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.api[HOME].url}
        )
        self.store = GcsStore(CFG["bucket"], CFG["object"], client=gcs)

    def round(self, at: float, body: dict[str, Any] | None = None) -> dict[str, Any]:
        out = handle(body or {}, CFG, self.fleet, self.store, now=at)
        for api in self.api.values():
            api.reconcile()  # what the groups do between rounds
        return out

    def target(self, region: str, group: str = "llm-fallback-mig") -> int:
        return self.api[region].migs[group].target

    def stop(self) -> None:
        for api in self.api.values():
            api.stop()


@pytest.fixture
def cloud() -> Iterator[TwoRegions]:
    c = TwoRegions()
    yield c
    c.stop()


def preempted(vm_zone: str, name: str, at: float) -> dict[str, Any]:
    when = __import__("datetime").datetime.fromtimestamp(at, tz=__import__("datetime").timezone.utc)
    entry = {
        "protoPayload": {
            "methodName": "compute.instances.preempted",
            "resourceName": f"projects/proj/zones/{vm_zone}/instances/{name}",
        },
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    return {"message": {"data": base64.b64encode(json.dumps(entry).encode()).decode(), "messageId": "1"}}


def test_a_regional_outage_moves_the_fallback_to_the_other_region_and_back(cloud: TwoRegions) -> None:
    r = cloud.round(T0)
    assert r["acted"] and r["wanted"]["fallback"] == 0 and r["target"] == 6

    # us-central1 loses everything: its spot VMs are preempted (the log entries name their zones), and neither spot
    # nor on-demand can be had there.
    home = cloud.api[HOME]
    doomed = [(v.zone, v.name) for v in home.migs["llm-spot-mig"].vms.values()]
    home.stocked_out, home.on_demand_out = set(TYPES), True
    for i, (zone, name) in enumerate(doomed):
        r = cloud.round(T0 + 60 + i, preempted(zone, name, T0 + 60))
    state = cloud.store.load()
    assert set(state.notices) == {n for _, n in doomed} and f"{HOME}/g2-standard-4" in state.preempted_at
    assert r["wanted"]["fallback"] == 3
    for _, name in doomed:
        home.preempt(name)
    # The home region, first choice while nothing said it was out, refused its stand-ins: they go to us-east4.
    for at in (T0 + 100, T0 + 130):
        r = cloud.round(at)
    assert f"{HOME}/on-demand" in cloud.store.load().failed_at
    assert cloud.target(OTHER) == 3 and cloud.target(HOME) == 0, r["reasons"]
    assert len(cloud.api[OTHER].migs["llm-fallback-mig"].vms) == 3
    for at in (T0 + 300, T0 + 600):
        r = cloud.round(at)
        assert cloud.target(OTHER) == 3 and cloud.target(HOME) == 0, r["reasons"]

    # The outage ends: us-central1's spot group refills; once it has served for the hold, the stand-ins go.
    home.stocked_out, home.on_demand_out = set(), False
    home.reconcile()
    r = cloud.round(T0 + 700)
    assert cloud.target(OTHER) == 3, r["reasons"]
    r = cloud.round(T0 + 760)
    assert r["wanted"]["fallback"] == 0 and cloud.target(OTHER) == 0 and cloud.target(HOME) == 0, r["reasons"]
    assert cloud.target(HOME, "llm-spot-mig") == 3 and cloud.target(OTHER, "llm-spot-mig") == 3


def test_a_region_whose_api_fails_is_left_as_it_is(cloud: TwoRegions) -> None:
    vm = next(iter(cloud.api[OTHER].migs["llm-spot-mig"].vms.values()))
    r = cloud.round(T0, preempted(vm.zone, vm.name, T0))
    assert cloud.target(HOME) == 1 and cloud.target(OTHER) == 0, r["reasons"]
    answer = cloud.api[HOME].answer

    def failing(method: str, path: str, *a: Any) -> Any:
        if "/instanceGroupManagers/" in path:
            return cloud.api[HOME]._error(500, "backendError", "Internal error")
        return answer(method, path, *a)

    cloud.api[HOME].answer = failing  # type: ignore[method-assign]
    r = cloud.round(T0 + 600)
    assert r["acted"] and cloud.target(HOME) == 1 and any(n.startswith(f"{HOME}: unknown") for n in r["reasons"])
    assert set(r["sizes_after"]) <= {f"{OTHER}/llm-spot-mig", f"{OTHER}/llm-fallback-mig"}
    with pytest.raises(InternalServerError):
        cloud.fleet.regions[HOME].fleet.observe(cloud.store.load(), T0 + 601)


def test_a_preemption_names_its_region_by_zone() -> None:
    assert region_of("projects/p/zones/us-east4-c/instances/llm-spot-0001") == "us-east4"
    assert region_of("projects/p/global/instances/x") is None
