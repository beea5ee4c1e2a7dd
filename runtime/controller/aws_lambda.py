"""The fleet controller as an AWS Lambda function: `handler` runs one round per invocation.

Invoked by an EventBridge schedule (every minute) and at once by the events that matter: an EC2 Spot Instance
Interruption Warning (the notice is remembered with its pool and deadline, so the round replaces the node now),
an EC2 Instance Rebalance Recommendation (a round now), and an Auto Scaling launch that failed (the refusal is
remembered against the pool). Its configuration is one JSON document in `SPOTSTACK_CONTROLLER`, written by the
component. It imports only this package's controller modules and boto3 (the Lambda runtime's), nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from spotstack.runtime.controller.adaptors.aws import AwsFleet, DynamoStore
from spotstack.runtime.controller.invocation import ENV, log, policy_of, report, when
from spotstack.runtime.controller.regions import Regions, from_config
from spotstack.runtime.controller.round import run_round

__all__ = ["fleet_and_store", "handle", "handler", "policy_of"]


def handle(
    event: dict[str, Any],
    cfg: dict[str, Any],
    fleet: AwsFleet | Regions[AwsFleet],
    store: DynamoStore,
    now: float | None = None,
) -> dict[str, Any]:
    """One invocation: remember what the event says, then one round. Testable without Lambda. Across regions,
    another region's events arrive forwarded to the home region's bus, with their `region`."""
    now = time.time() if now is None else now
    state = store.load()
    kind = str(event.get("detail-type", "Scheduled Event"))
    detail = event.get("detail") or {}
    adaptor = (
        fleet.regions.get(str(event.get("region")), fleet.regions[fleet.home]).fleet
        if isinstance(fleet, Regions)
        else fleet
    )
    if kind == "EC2 Spot Instance Interruption Warning" and detail.get("instance-id"):
        new = adaptor.record_interruption(state, str(detail["instance-id"]), when(event.get("time")))
        log.info("interruption warning for %s (%s)", detail["instance-id"], "new" if new else "seen before")
    elif kind.startswith("EC2 Instance Launch Unsuccessful"):
        for t in adaptor.refused(str(detail.get("AutoScalingGroupName")), str(detail.get("StatusMessage", ""))):
            state.failed(t, when(event.get("time")))
    result = run_round(fleet, store, policy_of(cfg), now, state=state, max_launches=int(cfg.get("max_launches", 4)))
    return report(result, kind)


def fleet_and_store(
    cfg: dict[str, Any], endpoint_url: str | None = None, *, inside: bool = True
) -> tuple[AwsFleet | Regions[AwsFleet], DynamoStore]:
    """The adaptor and the controller's memory from its configuration document (`inside`: in the function; the
    same either way here); across regions, an adaptor per region composed (its memory in the home region).
    Credentials: boto3's chain."""
    region = cfg.get("region")
    store = DynamoStore(cfg["table"], cfg["fleet"], region=region, endpoint_url=endpoint_url)
    if cfg.get("regions"):

        def adaptor(r: Mapping[str, Any], types: tuple[str, ...]) -> AwsFleet:
            name = str(r["region"])
            return AwsFleet(
                r["main_group"],
                r.get("fallback_group"),
                r["target_group_arn"],
                types,
                region=name,
                endpoint_url=endpoint_url,
                pool_prefix=f"{name}/",
            )

        return from_config(cfg, adaptor), store
    fleet = AwsFleet(
        cfg["main_group"],
        cfg.get("fallback_group"),
        cfg["target_group_arn"],
        tuple(cfg["policy"]["spot_types"]),
        region=region,
        endpoint_url=endpoint_url,
    )
    return fleet, store


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.INFO)
    cfg = json.loads(os.environ[ENV])
    return handle(event, cfg, *fleet_and_store(cfg))
