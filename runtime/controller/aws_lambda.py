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
from typing import Any

from spotstack.runtime.controller.adaptors.aws import AwsFleet, DynamoStore
from spotstack.runtime.controller.invocation import ENV, log, policy_of, report, when
from spotstack.runtime.controller.round import run_round

__all__ = ["fleet_and_store", "handle", "handler", "policy_of"]


def handle(
    event: dict[str, Any], cfg: dict[str, Any], fleet: AwsFleet, store: DynamoStore, now: float | None = None
) -> dict[str, Any]:
    """One invocation: remember what the event says, then one round. Testable without Lambda."""
    now = time.time() if now is None else now
    state = store.load()
    kind = str(event.get("detail-type", "Scheduled Event"))
    detail = event.get("detail") or {}
    if kind == "EC2 Spot Instance Interruption Warning" and detail.get("instance-id"):
        new = fleet.record_interruption(state, str(detail["instance-id"]), when(event.get("time")))
        log.info("interruption warning for %s (%s)", detail["instance-id"], "new" if new else "seen before")
    elif (
        kind.startswith("EC2 Instance Launch Unsuccessful") and detail.get("AutoScalingGroupName") == cfg["main_group"]
    ):
        for t in fleet.failed_types(str(detail.get("StatusMessage", ""))):
            state.failed(t, when(event.get("time")))
    result = run_round(fleet, store, policy_of(cfg), now, state=state, max_launches=int(cfg.get("max_launches", 4)))
    return report(result, kind)


def fleet_and_store(
    cfg: dict[str, Any], endpoint_url: str | None = None, *, inside: bool = True
) -> tuple[AwsFleet, DynamoStore]:
    """The adaptor and the controller's memory from its configuration document (`inside`: in the function; the
    same either way here). Credentials: boto3's chain."""
    region = cfg.get("region")
    fleet = AwsFleet(
        cfg["main_group"],
        cfg.get("fallback_group"),
        cfg["target_group_arn"],
        tuple(cfg["policy"]["spot_types"]),
        region=region,
        endpoint_url=endpoint_url,
    )
    return fleet, DynamoStore(cfg["table"], cfg["fleet"], region=region, endpoint_url=endpoint_url)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.INFO)
    cfg = json.loads(os.environ[ENV])
    return handle(event, cfg, *fleet_and_store(cfg))
