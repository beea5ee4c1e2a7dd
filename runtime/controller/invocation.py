"""What every cloud's controller function shares: its configuration document (`SPOTSTACK_CONTROLLER`, written by
the component) read into a `Policy`, event times, and the round's report as one log line."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

from spotstack.runtime.controller.decide import Policy
from spotstack.runtime.controller.round import RoundResult

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


def when(text: Any) -> float:
    """An event's RFC 3339 time; now when it has none (a schedule's tick)."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def report(result: RoundResult, event: str) -> dict[str, Any]:
    out = result.as_dict()
    out["event"] = event
    log.info("%s", json.dumps(out, default=str))
    return out
