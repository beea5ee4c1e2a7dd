"""The fleet controller as a Google Cloud Run function (2nd gen, HTTP): `handler` runs one round per request.

Requested by Cloud Scheduler every minute and at once by Pub/Sub pushes of the fleet's spot preemptions (a log
sink routes `compute.instances.preempted` audit entries to a topic whose push subscription calls this function):
the notice is remembered with its pool and 30 s deadline before the round, so the round replaces the VM now.
Both callers authenticate with an OIDC token of the invoker account the component declares. Configuration: one
JSON document in `SPOTSTACK_CONTROLLER`. Imports this package's controller modules and Google's client libraries
(`requirements.txt` in the function's source).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from spotstack.runtime.controller.adaptors.gcp import GcpFleet, GcsStore
from spotstack.runtime.controller.invocation import ENV, log, policy_of, report, when
from spotstack.runtime.controller.regions import Regions, from_config
from spotstack.runtime.controller.round import Store, run_round

PREEMPTED = "compute.instances.preempted"


def log_entry(body: dict[str, Any]) -> dict[str, Any] | None:
    """The Cloud Logging entry a Pub/Sub push carries (`message.data`, base64 JSON); None for a schedule tick."""
    data = (body.get("message") or {}).get("data")
    if not data:
        return None
    entry = json.loads(base64.b64decode(data))
    return entry if isinstance(entry, dict) else None


def handle(
    body: dict[str, Any],
    cfg: dict[str, Any],
    fleet: GcpFleet | Regions[GcpFleet],
    store: Store,
    now: float | None = None,
) -> dict[str, Any]:
    """One request: remember the preemption it reports (if any), then one round. Testable without Cloud Run.
    Across regions, the preempted VM's zone says whose adaptor records it."""
    now = time.time() if now is None else now
    state = store.load()
    entry = log_entry(body)
    kind = "schedule"
    if entry is not None:
        payload = entry.get("protoPayload") or {}
        kind = str(payload.get("methodName", "log entry"))
        if kind == PREEMPTED and payload.get("resourceName"):
            resource = str(payload["resourceName"])
            adaptor = fleet.adaptor(region_of(resource)) if isinstance(fleet, Regions) else fleet
            new = adaptor.record_preemption(state, resource, when(entry.get("timestamp")))
            log.info("preemption of %s (%s)", payload["resourceName"], "new" if new else "seen before")
    result = run_round(fleet, store, policy_of(cfg), now, state=state, max_launches=int(cfg.get("max_launches", 4)))
    return report(result, kind)


def region_of(resource: str) -> str | None:
    """The region of `projects/P/zones/Z/instances/NAME` (a zone is its region and a letter)."""
    parts = resource.split("/")
    return parts[parts.index("zones") + 1].rsplit("-", 1)[0] if "zones" in parts[:-1] else None


def fleet_of(cfg: dict[str, Any], **kw: Any) -> GcpFleet:
    return GcpFleet(
        cfg["project"],
        cfg["region"],
        {k: v for k, v in cfg["groups"].items() if v},
        cfg["backend_service"],
        tuple(cfg["policy"]["spot_types"]),
        **kw,
    )


def regions_of(cfg: dict[str, Any], kw_of: Callable[[str], dict[str, Any]]) -> Regions[GcpFleet]:
    """A fleet across regions: an adaptor per region (`kw_of(region)`: its client options), composed."""

    def adaptor(r: Mapping[str, Any], types: tuple[str, ...]) -> GcpFleet:
        name = str(r["region"])
        groups = {k: v for k, v in r["groups"].items() if v}
        return GcpFleet(
            cfg["project"], name, groups, cfg["backend_service"], types, pool_prefix=f"{name}/", **kw_of(name)
        )

    return from_config(cfg, adaptor)


def fleet_and_store(
    cfg: dict[str, Any], endpoint_url: str | None = None, *, inside: bool = True
) -> tuple[GcpFleet | Regions[GcpFleet], GcsStore]:
    """The adaptor (across regions, one per region composed) and the controller's memory from its configuration
    document (`inside`: in the function; the same either way here). Credentials: application default credentials."""
    opts = {"api_endpoint": endpoint_url} if endpoint_url else None
    store = GcsStore(cfg["bucket"], cfg["object"])
    if cfg.get("regions"):
        return regions_of(cfg, lambda _: {"client_options": opts}), store
    return fleet_of(cfg, client_options=opts), store


def handler(request: Any) -> tuple[str, int, dict[str, str]]:
    """The functions framework's entry point: a Flask request in, (body, status, headers) out. An error is a 500,
    so Pub/Sub redelivers the preemption and the error alert counts it."""
    logging.getLogger().setLevel(logging.INFO)
    cfg = json.loads(os.environ[ENV])
    body = request.get_json(silent=True) or {}
    out = handle(body, cfg, *fleet_and_store(cfg))
    return json.dumps(out, default=str), 200, {"Content-Type": "application/json"}
