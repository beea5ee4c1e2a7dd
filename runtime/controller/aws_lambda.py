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
from datetime import datetime
from typing import Any

from spotstack.runtime.controller.adaptors.aws import AwsFleet, DynamoStore
from spotstack.runtime.controller.decide import Policy
from spotstack.runtime.controller.round import run_round

log = logging.getLogger("spotstack.controller")
ENV = "SPOTSTACK_CONTROLLER"


def policy_of(cfg: dict[str, Any]) -> Policy:
    p = cfg["policy"]
    return Policy(
        spot_types=tuple(p["spot_types"]),
        on_demand_types=tuple(p["on_demand_types"]),
        min=int(p["min"]),
        max=int(p["max"]),
        base_on_demand=int(p["base_on_demand"]),
        on_demand_above_base_percent=int(p["on_demand_above_base_percent"]),
        dynamic_fallback=bool(p["dynamic_fallback"]),
    )


def _when(event: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return time.time()


def handle(
    event: dict[str, Any], cfg: dict[str, Any], fleet: AwsFleet, store: DynamoStore, now: float | None = None
) -> dict[str, Any]:
    """One invocation: remember what the event says, then one round. Testable without Lambda."""
    now = time.time() if now is None else now
    state = store.load()
    kind = str(event.get("detail-type", "Scheduled Event"))
    detail = event.get("detail") or {}
    if kind == "EC2 Spot Instance Interruption Warning" and detail.get("instance-id"):
        new = fleet.record_interruption(state, str(detail["instance-id"]), _when(event))
        log.info("interruption warning for %s (%s)", detail["instance-id"], "new" if new else "seen before")
    elif (
        kind.startswith("EC2 Instance Launch Unsuccessful") and detail.get("AutoScalingGroupName") == cfg["main_group"]
    ):
        for t in fleet.failed_types(str(detail.get("StatusMessage", ""))):
            state.failed(t, _when(event))
    result = run_round(fleet, store, policy_of(cfg), now, state=state, max_launches=int(cfg.get("max_launches", 4)))
    out = result.as_dict()
    out["event"] = kind
    log.info("%s", json.dumps(out, default=str))
    return out


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.INFO)
    cfg = json.loads(os.environ[ENV])
    region = cfg.get("region")
    fleet = AwsFleet(
        cfg["main_group"],
        cfg.get("fallback_group"),
        cfg["target_group_arn"],
        tuple(cfg["policy"]["spot_types"]),
        region=region,
    )
    store = DynamoStore(cfg["table"], cfg["fleet"], region=region)
    return handle(event, cfg, fleet, store)
