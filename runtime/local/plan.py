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
    workload: str = "minilm"
    """What the nodes run, from the spec's image: `minilm-server` (embeddings) or `llm-server` (generation)."""
    gateway: dict[str, Any] | None = None
    """The spec's `service.gateway` (replicas, continue_as, api_keys, rate_limit): gateways between the load
    balancer and the nodes."""
    node: dict[str, Any] | None = None
    """The nodes' agent configuration as a cloud node of the spec gets it (`components.node.agent_config`, AWS's
    form); the supervisor changes only what is local (`node_config.agent_config`). None: the local form alone."""
    regions: tuple[str, ...] = ()
    """A fleet across regions (`runtime/local/regions.py`): its regions, the home region first; empty: one."""
    policy: Policy | None = None
    """The controller policy the spec gives (`components.controller_policy.fleet_policy`, the clouds' own); the
    supervisor runs it with its time scale (`LocalFleet.policy`). None: built from the fields above."""


TIME_SCALED = ("stable_s", "flap_cooldown_s", "leave_before_s")
"""The policy fields a local fleet sets itself (`local_policy`); every other one is the spec's."""


def local_policy(plan: FleetPlan, stable_s: float, notice_s: float) -> Policy:
    """The spec's policy, with a local fleet's time scale in the fields listed in TIME_SCALED: its hold and flap
    cooldown in seconds of a fast demo, and when its nodes leave (their shorter drain)."""
    from dataclasses import replace

    from spotstack.runtime.drain.decide import leave_before
    from spotstack.runtime.local.node_config import DRAIN_LEAD_S, DRAIN_MARGIN_S

    p = plan
    base = p.policy or Policy(
        p.spot_types,
        p.on_demand_types,
        p.min,
        p.max,
        p.base_on_demand,
        p.on_demand_above_base_percent,
        p.dynamic_fallback,
    )
    leave = leave_before(notice_s, p.drain_timeout_s, DRAIN_MARGIN_S, 0.0, DRAIN_LEAD_S, True)
    return replace(base, stable_s=stable_s, flap_cooldown_s=stable_s * 2, leave_before_s=leave)
