"""One event type for every source of interruption, whatever the cloud."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum


class Kind(str, Enum):
    SPOT_INTERRUPTION = "spot_interruption"  # AWS instance-action, GCP preempted, Alibaba termination-time
    REBALANCE = "rebalance_recommendation"  # AWS: elevated risk, no deadline yet
    SCALE_IN = "scale_in"  # AWS target-lifecycle-state Terminated: the ASG is removing this node
    MAINTENANCE = "scheduled_maintenance"  # AWS scheduled events, GCP maintenance-event


# Kinds that mean "this node goes away": they start a drain. The others are counted and logged.
DRAINING_KINDS = frozenset({Kind.SPOT_INTERRUPTION, Kind.SCALE_IN, Kind.MAINTENANCE})


@dataclass(frozen=True)
class InterruptionEvent:
    kind: Kind
    cloud: str
    deadline: float
    """Wall-clock (epoch seconds) by which the node is gone."""
    id: str
    """Stable across repeated polls of the same notice: the de-duplication key."""
    detail: str = ""
    seen_at: float = field(default=0.0, compare=False)
    """When this agent first read it (epoch seconds)."""


def event_id(cloud: str, kind: Kind, body: str) -> str:
    """A hash of the notice itself, so the same notice polled twice is one event."""
    return hashlib.sha256(f"{cloud}|{kind.value}|{body.strip()}".encode()).hexdigest()[:16]
