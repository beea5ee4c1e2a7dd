"""The controller tests' common policy, clock and replica shorthand (test_controller.py, test_controller_pools.py)."""

from __future__ import annotations

from spotstack.runtime.controller.decide import Policy, Replica

P = Policy(
    spot_types=("g6", "g5"),
    on_demand_types=("g6", "g5"),
    min=1,
    max=6,
    base_on_demand=1,
    dynamic_fallback=True,
    stable_s=30,
    flap_cooldown_s=60,
    spread=False,  # the table pins the priority order; spread and scores: test_controller_pools.py
)
NOW = 1000.0


def r(
    id: str, role: str, type: str = "g6", state: str = "ready", launched: float = 0.0, ready_since: float | None = 0.0
) -> Replica:
    return Replica(id, role, type, state, launched, ready_since if state == "ready" else None)  # type: ignore[arg-type]


BOTH = {"g6": True, "g5": True}
