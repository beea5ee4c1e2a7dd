"""The fleet controller as an Alibaba Cloud Function Compute (3.0) function: `handler` runs one round per call.

Called by a timer trigger every minute and at once by an EventBridge trigger on ECS spot interruption events
(`ecs:Instance:PreemptibleInstanceInterruption`, five minutes before the instance goes): the notice is remembered
with its pool and deadline before the round. Credentials: the function role's STS token, which Function Compute
puts in the environment. Configuration: one JSON document in `SPOTSTACK_CONTROLLER`. Standard library only,
and OSS for the memory through its own V4-signed client (`adaptors/oss.py`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from spotstack.runtime.controller.adaptors.alicloud import AlicloudFleet, Api, OssStore, credentials_from_env
from spotstack.runtime.controller.adaptors.oss import OssBucket
from spotstack.runtime.controller.invocation import ENV, log, policy_of, report, when
from spotstack.runtime.controller.regions import SEP, Regions, from_config
from spotstack.runtime.controller.round import Store, run_round

INTERRUPTION = "ecs:Instance:PreemptibleInstanceInterruption"


def event_of(raw: Any) -> dict[str, Any]:
    """Function Compute passes the event as bytes: a timer's `{"triggerTime", "triggerName", "payload"}` or an
    EventBridge CloudEvent (`type`, `time`, `data`)."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode() or "{}"
    doc = json.loads(raw) if isinstance(raw, str) else raw
    return doc if isinstance(doc, dict) else {}


def handle(
    event: dict[str, Any],
    cfg: dict[str, Any],
    fleet: AlicloudFleet | Regions[AlicloudFleet],
    store: Store,
    now: float | None = None,
) -> dict[str, Any]:
    """One call: remember the interruption it reports (if any), then one round. Testable without FC. Across
    regions, the event's region (`aliyunregionid`) says whose adaptor records it."""
    now = time.time() if now is None else now
    state = store.load()
    kind = str(event.get("type") or ("timer" if "triggerTime" in event else "call"))
    data = event.get("data") or {}
    if kind == INTERRUPTION and isinstance(data, dict) and data.get("instanceId"):
        adaptor = fleet.adaptor(event.get("aliyunregionid")) if isinstance(fleet, Regions) else fleet
        new = adaptor.record_interruption(state, str(data["instanceId"]), when(event.get("time")))
        log.info("interruption notice for %s (%s)", data["instanceId"], "new" if new else "seen before")
    result = run_round(fleet, store, policy_of(cfg), now, state=state, max_launches=int(cfg.get("max_launches", 4)))
    return report(result, kind)


def fleet_of(
    cfg: Mapping[str, Any], api: Api, spot_types: tuple[str, ...] | None = None, pool_prefix: str = ""
) -> AlicloudFleet:
    """One region's adaptor from its part of the document (in one region, the whole document and its policy's
    spot types)."""
    return AlicloudFleet(
        cfg["main_group"],
        cfg.get("fallback_group"),
        cfg["server_group"],
        cfg["listener"],
        tuple(cfg["policy"]["spot_types"]) if spot_types is None else spot_types,
        api,
        cfg.get("config_tag"),
        pool_prefix=pool_prefix,
    )


def fleet_and_store(
    cfg: dict[str, Any], endpoint_url: str | dict[str, str] | None = None, *, inside: bool = True
) -> tuple[AlicloudFleet | Regions[AlicloudFleet], OssStore]:
    """The adaptor and the controller's memory from its configuration document, with the credentials in the
    environment (ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / _SECURITY_TOKEN: the function's role, or a user's; a
    missing one raises PermissionError). `inside`: in Function Compute, which reaches OSS in its region by the internal
    endpoint without the internet; outside, the public one (SPOTSTACK_OSS_ENDPOINT overrides either). Across regions,
    an adaptor per region composed (its memory in the home region); `endpoint_url` may then map a region to its
    endpoint (tests)."""
    try:
        creds = credentials_from_env()
    except KeyError as exc:
        raise PermissionError(f"Alibaba Cloud credentials: {exc.args[0]} is not set") from None
    region = cfg["region"]

    def api(name: str) -> Api:
        url = endpoint_url.get(name) if isinstance(endpoint_url, dict) else endpoint_url
        return Api(name, creds, dict.fromkeys(("ess", "ecs", "alb"), url) if url else None)

    oss = (
        os.environ.get("SPOTSTACK_OSS_ENDPOINT") or f"https://oss-{region}{'-internal' if inside else ''}.aliyuncs.com"
    )
    # Signed V4 by the standard library (the runtime's oss2 signs V1, which new buckets refuse).
    bucket = OssBucket(oss, cfg["bucket"], region, lambda: creds)
    store = OssStore(bucket, f"controller/{cfg['fleet']}")
    if cfg.get("regions"):
        return (
            from_config(cfg, lambda r, types: fleet_of(r, api(str(r["region"])), types, f"{r['region']}{SEP}")),
            store,
        )
    return fleet_of(cfg, api(region)), store


def handler(event: Any, context: Any = None) -> str:
    logging.getLogger().setLevel(logging.INFO)
    cfg = json.loads(os.environ[ENV])
    out = handle(event_of(event), cfg, *fleet_and_store(cfg))
    return json.dumps(out, default=str)
