"""The cloud controller on GCP, through Google's real client libraries (`google-cloud-compute`,
`google-cloud-storage`) against a loopback Compute/GCS API that answers as documented (tests/clouds/gcp_compute.py):
the same scenario as on AWS — a spot stockout with preemptions grows the on-demand fallback group, which shrinks only
once spot has served for the hold — plus a broken observation, the state store race, and the function's package.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import InternalServerError
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from spotstack.runtime.controller.adaptors.gcp import GcsStore
from spotstack.runtime.controller.gcp_function import fleet_of, handle
from spotstack.runtime.controller.invocation import policy_of
from spotstack.runtime.controller.package import GCP_MAIN, function_files
from spotstack.runtime.controller.round import run_round
from tests.clouds.gcp_compute import ComputeFake

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, an hour after the fake's VMs were created
CFG: dict[str, Any] = {
    "fleet": "llm",
    "project": "proj",
    "region": "us-central1",
    "groups": {"base": "llm-base-mig", "spot": "llm-spot-mig", "fallback": "llm-fallback-mig"},
    "backend_service": "llm-backend",
    "bucket": "llm-controller",
    "object": "controller/llm.json",
    "policy": {
        "spot_types": ["g2-standard-4", "g2-standard-8"],
        "on_demand_types": ["g2-standard-4"],
        "min": 3,
        "max": 6,
        "base_on_demand": 1,
        "on_demand_above_base_percent": 0,
        "dynamic_fallback": True,
    },
}


class Cloud:
    def __init__(self) -> None:
        self.api = ComputeFake("proj", "us-central1", ["us-central1-a", "us-central1-b"], "llm-backend")
        self.api.add_group("llm-base-mig", ["g2-standard-4"], spot=False, target=1)
        self.api.add_group("llm-spot-mig", ["g2-standard-4", "g2-standard-8"], spot=True, target=2)
        self.api.add_group("llm-fallback-mig", ["g2-standard-4"], spot=False, target=0)
        opts = {"api_endpoint": self.api.url}
        self.fleet = fleet_of(CFG, client_options=opts, credentials=AnonymousCredentials())
        gcs = storage.Client(project="proj", credentials=AnonymousCredentials(), client_options=opts)
        self.store = GcsStore(CFG["bucket"], CFG["object"], client=gcs)

    def target(self, group: str) -> int:
        return self.api.migs[group].target

    def vms(self, group: str) -> list[str]:
        return sorted(self.api.migs[group].vms)


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    c = Cloud()
    yield c
    c.api.stop()


def preempted(cloud: Cloud, name: str, at: float) -> dict[str, Any]:
    """A Pub/Sub push of the `compute.instances.preempted` audit entry, as the log sink routes it."""
    vm = next(v for g in cloud.api.migs.values() for v in g.vms.values() if v.name == name)
    when = __import__("datetime").datetime.fromtimestamp(at, tz=__import__("datetime").timezone.utc)
    entry = {
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "methodName": "compute.instances.preempted",
            "resourceName": f"projects/proj/zones/{vm.zone}/instances/{name}",
            "serviceName": "compute.googleapis.com",
        },
        "resource": {"type": "gce_instance", "labels": {"zone": vm.zone, "project_id": "proj"}},
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "logName": "projects/proj/logs/cloudaudit.googleapis.com%2Fsystem_event",
    }
    data = base64.b64encode(json.dumps(entry).encode()).decode()
    return {"message": {"data": data, "messageId": "1"}, "subscription": "projects/proj/subscriptions/llm-ctl"}


@pytest.mark.slow
def test_a_spot_stockout_grows_the_fallback_and_it_shrinks_only_after_the_hold(cloud: Cloud) -> None:
    r = handle({}, CFG, cloud.fleet, cloud.store, now=T0)
    assert r["acted"] and r["wanted"]["fallback"] == 0 and cloud.target("llm-fallback-mig") == 0
    assert [x["state"] for x in r["replicas"]] == ["ready"] * 3

    doomed = cloud.vms("llm-spot-mig")
    handle(preempted(cloud, doomed[0], T0 + 60), CFG, cloud.fleet, cloud.store, now=T0 + 60)
    assert cloud.target("llm-fallback-mig") == 1  # a stand-in for the noticed one, within the same request
    r = handle(preempted(cloud, doomed[1], T0 + 61), CFG, cloud.fleet, cloud.store, now=T0 + 61)
    assert cloud.target("llm-fallback-mig") == 2, r["reasons"]
    handle(preempted(cloud, doomed[1], T0 + 61), CFG, cloud.fleet, cloud.store, now=T0 + 62)  # delivered twice
    assert cloud.target("llm-fallback-mig") == 2
    state = cloud.store.load()
    assert set(state.notices) == set(doomed) and state.notices[doomed[0]].deadline == T0 + 60 + 30
    assert state.preempted_at == {"g2-standard-4": [T0 + 60, T0 + 61]}

    # The VMs go; the zone has no spot capacity: the spot group records its stockout, the fallback launches.
    cloud.api.stocked_out = {"g2-standard-4", "g2-standard-8"}
    for name in doomed:
        cloud.api.preempt(name)
    cloud.api.reconcile()
    assert len(cloud.vms("llm-fallback-mig")) == 2 and cloud.vms("llm-spot-mig") == []
    r = handle({}, CFG, cloud.fleet, cloud.store, now=T0 + 90)
    assert "g2-standard-4" in cloud.store.load().failed_at and any("refused launch" in x for x in r["reasons"])
    assert cloud.target("llm-fallback-mig") == 2  # the stand-ins stay while spot cannot be had

    # Capacity returns; the spot group replaces its VMs. Not yet READY for the hold (30 s): the fallback stays.
    cloud.api.stocked_out = set()
    cloud.api.reconcile()
    fallback = cloud.vms("llm-fallback-mig")
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 400)
    assert cloud.target("llm-fallback-mig") == 2, r.as_dict()["reasons"]
    assert set(cloud.store.load().notices) == set()  # the deleted VMs' notices are forgotten
    # After the hold, exactly the fallback VMs go (deleteInstances: the target drops with them, no replacement).
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 440)
    assert sorted(r.decision.terminate) == fallback
    assert cloud.target("llm-fallback-mig") == 0 and cloud.vms("llm-fallback-mig") == []
    assert cloud.target("llm-spot-mig") == 2 and cloud.target("llm-base-mig") == 1  # never touched


def test_a_broken_observation_scales_nothing_down(cloud: Cloud) -> None:
    handle(preempted(cloud, cloud.vms("llm-spot-mig")[0], T0), CFG, cloud.fleet, cloud.store, now=T0)
    assert cloud.target("llm-fallback-mig") == 1
    answer = cloud.api.answer

    def failing(method: str, path: str, *a: Any) -> Any:
        if path.endswith("/getHealth"):
            error = {"code": 500, "message": "Internal error", "errors": [{"reason": "backendError"}]}
            return 500, {"error": error}, None
        return answer(method, path, *a)

    cloud.api.answer = failing  # type: ignore[method-assign]
    with pytest.raises(InternalServerError):
        run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 600)
    assert cloud.target("llm-fallback-mig") == 1  # untouched: the function answers 500, its alert fires


def test_of_two_overlapping_rounds_only_one_acts(cloud: Cloud) -> None:
    run_round(cloud.fleet, cloud.store, policy_of(CFG), T0)  # the object exists from here on
    first, second = cloud.store.load(), cloud.store.load()
    a = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 60, state=first)
    b = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 60, state=second)
    assert a.acted and a.saved and not b.acted and not b.saved
    assert "lost the state store race" in " ".join(b.as_dict()["reasons"])
    uploads = [c for c in cloud.api.calls if c.startswith("POST /upload/storage/v1/b/llm-controller/o")]
    assert len(uploads) == 3  # the loser's write was sent with its generation and refused (412)


def test_the_function_source_imports_as_cloud_run_would(tmp_path: Path) -> None:
    """The source the component uploads (`main.py` + this package's controller modules) in a fresh interpreter whose
    path holds only it and the installed dependencies (`requirements.txt`): the entry point resolves to the
    archive's modules, not this checkout's."""
    code = tmp_path / "code"
    for name, path in function_files("gcp").items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_bytes(path.read_bytes())
    (code / "main.py").write_text(GCP_MAIN)
    import google.cloud.compute_v1 as compute

    assert compute.__file__ is not None
    site = str(Path(compute.__file__).parents[3])
    probe = (
        f"import sys; sys.path.insert(0, {str(code)!r}); sys.path.append({site!r}); import main; "
        "import spotstack.runtime.controller.gcp_function as f; "
        f"assert f.__file__.startswith({str(code)!r}), f.__file__; assert main.handler is f.handler; "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('pydantic', 'aiohttp', 'typer', 'pulumi', 'boto3')]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-S", "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# Each Compute/GCS REST request a round makes -> the IAM permissions it needs (the Compute API's and Cloud
# Storage's IAM references). GET of the bucket itself is the storage client's background metadata fetch, which
# treats a 403 as "unknown location" and carries on: no grant is needed for it.
CALL_PERMISSIONS: list[tuple[str, set[str]]] = [
    (r"GET /compute/v1/projects/\w+/aggregated/instances$", {"compute.instances.list"}),
    (r"GET /compute/v1/projects/\w+/zones/[\w-]+/instances/[\w-]+$", {"compute.instances.get"}),
    (
        r"GET /compute/v1/projects/\w+/regions/[\w-]+/instanceGroupManagers/[\w-]+(/listErrors)?$",
        {"compute.instanceGroupManagers.get"},
    ),
    (
        r"POST /compute/v1/projects/\w+/regions/[\w-]+/instanceGroupManagers/[\w-]+/listManagedInstances$",
        {"compute.instanceGroupManagers.get"},
    ),
    (
        r"POST /compute/v1/projects/\w+/regions/[\w-]+/instanceGroupManagers/[\w-]+/resize$",
        {"compute.instanceGroupManagers.update"},
    ),
    (
        r"POST /compute/v1/projects/\w+/regions/[\w-]+/instanceGroupManagers/[\w-]+/deleteInstances$",
        {"compute.instanceGroupManagers.update", "compute.instances.delete"},
    ),
    (
        r"POST /compute/v1/projects/\w+/global/backendServices/[\w-]+/getHealth$",
        {"compute.backendServices.get", "compute.instanceGroups.get"},
    ),
    (r"GET /(download/)?storage/v1/b/[\w-]+/o/.+$", {"storage.objects.get"}),
    (r"POST /upload/storage/v1/b/[\w-]+/o$", {"storage.objects.create", "storage.objects.delete"}),
    (r"GET /storage/v1/b/[\w-]+$", set()),
]


def test_every_call_a_round_makes_is_one_its_roles_allow(cloud: Cloud) -> None:
    """The scenario's every request against the controller's two custom roles and its bucket role; and every
    permission in the roles is one some request needed (nothing granted for nothing)."""
    import re

    from spotstack.components.gcp.controller import OBSERVE, SIZE

    test_a_spot_stockout_grows_the_fallback_and_it_shrinks_only_after_the_hold(cloud)
    needed: set[str] = set()
    for call in set(cloud.api.calls):
        perms = [p for pattern, p in CALL_PERMISSIONS if re.match(pattern, call)]
        assert perms, f"a call this test does not know the permission of: {call}"
        needed |= perms[0]
    # roles/storage.objectUser on the controller's bucket (components/gcp/controller.py) covers the objects.
    granted = set(OBSERVE) | set(SIZE) | {"storage.objects.get", "storage.objects.create", "storage.objects.delete"}
    assert needed <= granted, sorted(needed - granted)
    assert set(OBSERVE) | set(SIZE) <= needed, f"granted, never needed: {sorted(set(OBSERVE) | set(SIZE) - needed)}"
