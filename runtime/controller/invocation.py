"""What every cloud's controller function shares: its configuration document (`SPOTSTACK_CONTROLLER`, written by
the component) read into a `Policy`, event times, and the round's report as one log line."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import fields
from datetime import datetime
from typing import Any

from spotstack.runtime.controller.decide import Policy
from spotstack.runtime.controller.round import RoundResult

log = logging.getLogger("spotstack.controller")
ENV = "SPOTSTACK_CONTROLLER"


def policy_document(p: Policy) -> dict[str, Any]:
    """Every field of the policy, as JSON: what the components write into the controller's configuration
    document, so the function runs exactly the policy the spec gives (and `simulate` replays)."""
    return {f.name: list(v) if isinstance(v := getattr(p, f.name), tuple) else v for f in fields(Policy)}


def policy_of(cfg: dict[str, Any]) -> Policy:
    """The policy in a controller's configuration document; a field it does not carry (a document written
    before it existed) takes `Policy`'s default, an unknown one is an error."""
    doc = dict(cfg["policy"])
    names = {f.name for f in fields(Policy)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ValueError(f"controller policy: unknown field(s) {', '.join(unknown)}")
    for key in ("spot_types", "on_demand_types"):
        doc[key] = tuple(str(t) for t in doc[key])
    return Policy(**doc)


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
