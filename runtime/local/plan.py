"""What the local fleet's supervisor needs from a fleet spec (the runtime does not import components)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spotstack.runtime.controller.decide import Policy


@dataclass
class FleetPlan:
    """What the supervisor needs from the spec (kept free of the components package)."""

    name: str
    spot_types: tuple[str, ...]
    on_demand_types: tuple[str, ...]
    min: int
    max: int
    desired: int
    base_on_demand: int
    on_demand_above_base_percent: int
    dynamic_fallback: bool
    drain_timeout_s: float
    prices: dict[str, tuple[float, float]]
    """Type -> (on-demand, spot cap) USD/h, for the cost figures."""
    warm_pool: int = 0
    """`capacity.warm_pool.size`: fallback nodes that make way for spot keep their model on disk, stopped."""
    jobs: dict[str, Any] | None = None
    """The spec's `jobs` (as the agent's jobs config takes it): the fleet also serves queues (moto's SQS)."""
    policy: Policy | None = None
    """The controller policy the spec gives (`components.controller_policy.fleet_policy`, the clouds' own); the
    supervisor runs it with its time scale (`LocalFleet.policy`). None: built from the fields above."""
