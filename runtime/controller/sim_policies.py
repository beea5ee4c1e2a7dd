"""The controllers `spotstack simulate` compares, and what they see of the simulated fleet.

- `Ours`: the fleet's `decide()`, as the local fleet and the cloud controllers run it.
- `SkyServe`: SkyServe as its code behaves: `sky/serve/autoscalers.py` FallbackRequestRateAutoscaler and
  `sky/serve/spot_placer.py` DynamicFallbackSpotPlacer (read from skypilot-org/skypilot; no code copied).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from spotstack.runtime.controller.decide import Observed, Policy, PoolHistory, Replica, decide


@dataclass
class SimReplica:
    id: str
    pool: str | None
    """The spot pool it runs in; None for on-demand."""
    role: str
    launched_at: float
    booted_at: float
    loaded_at: float = math.inf
    """When it is READY, unless it dies first (known once it has booted and chosen where to load from)."""
    dies_at: float | None = None
    notice_at: float | None = None
    ended_at: float | None = None

    def ready(self, t: float) -> bool:
        return self.ended_at is None and self.loaded_at <= t and (self.dies_at is None or t < self.dies_at)


@dataclass
class World:
    """What the controller may see: the replicas and what the cloud has said about each pool."""

    now: float
    replicas: list[SimReplica]
    known_obtainable: dict[str, bool]
    last_unobtainable: dict[str, float]
    pools: tuple[str, ...]
    preempted_at: dict[str, list[float]] = field(default_factory=dict)
    """Per pool: when its replicas got notices (the cloud's preemption events)."""
    failed_at: dict[str, list[float]] = field(default_factory=dict)
    """Per pool: when launches into it were refused."""


@dataclass(frozen=True)
class Act:
    launch: tuple[tuple[str, str | None], ...]
    """(role, pool); pool None = on-demand."""
    terminate: tuple[str, ...]


class Controller(Protocol):
    name: str
    serves_notice: bool
    """Whether a replica keeps serving after its notice (until it dies)."""
    serve_through_notice: bool
    """Whether a noticed replica serves until its death less the drain (the agent's notice window)."""
    uses_warm_pool: bool
    """Whether fallback replicas start from a warm pool when the timings model one."""

    @property
    def quiet_after_s(self) -> float:
        """How long after the world last changed its decisions may still change by time alone."""
        return 0.0

    def act(self, world: World, n: int) -> Act: ...

    def observe_ready(self, r: SimReplica) -> None: ...

    def observe_lost(self, pool: str) -> None: ...


@dataclass
class Ours:
    """The fleet's `decide()`, with spot pools as its ordered spot types."""

    base_on_demand: int = 0
    stable_s: float = 30.0
    flap_cooldown_s: float = 60.0
    spread: bool = True
    spare_spot: int = 0
    hold_per_preemption_s: float = 0.0
    history_s: float = Policy.history_s
    pool_share: float = Policy.pool_share
    leave_before_s: float = 40.0
    """The agents' drain timeout, margin and lead: how long before its deadline a noticed node leaves."""
    on_demand_above_base_percent: int = 0
    dynamic_fallback: bool = True
    name: str = "spotstack"
    serves_notice: bool = False  # it leaves before its death: see `serve_through_notice`
    uses_warm_pool: bool = True
    """Start fallback replicas from the warm pool when the timings model one."""
    serve_through_notice: bool = True
    """The agent's notice window: a noticed replica serves until its death less the drain (and margin and lead);
    off, it leaves rotation at the notice."""

    _ready_after: list[float] = field(default_factory=list)
    """Launch-to-READY of the last spot replicas: the controller's measure of how soon a replacement serves."""

    @property
    def quiet_after_s(self) -> float:
        # A hold shrinks as preemptions age out of the history: time alone may then end a fallback.
        hold = Policy.hold_window_s + self.stable_s if self.hold_per_preemption_s else self.stable_s
        return max(hold, self.flap_cooldown_s)

    def policy(self, pools: tuple[str, ...], n: int) -> Policy:
        """The policy `decide()` runs in the replay: the fleet's (a stack's `fleet_policy`, or the flags), with the
        traces' pools as its spot types and N as its size (SIMULATED lists what the replay sets itself)."""
        return Policy(
            spot_types=pools,
            on_demand_types=("on-demand",),
            min=n,
            max=n + self.spare_spot,
            base_on_demand=self.base_on_demand,
            on_demand_above_base_percent=self.on_demand_above_base_percent,
            dynamic_fallback=self.dynamic_fallback,
            stable_s=self.stable_s,
            flap_cooldown_s=self.flap_cooldown_s,
            spread=self.spread,
            spare_spot=self.spare_spot,
            hold_per_preemption_s=self.hold_per_preemption_s,
            history_s=self.history_s,
            pool_share=self.pool_share,
            spot_ready_s=max(self._ready_after) if self._ready_after else None,
            leave_before_s=self.leave_before_s,
        )

    def act(self, world: World, n: int) -> Act:
        policy = self.policy(world.pools, n)
        now = world.now
        replicas = []
        for r in world.replicas:
            if r.notice_at is not None and r.notice_at <= now:
                state = "draining"  # the controller replaces a noticed replica at once, whether it still serves
            elif r.loaded_at <= now:
                state = "ready"
            else:
                state = "provisioning"
            deadline = r.dies_at if r.notice_at is not None else None
            replicas.append(
                Replica(r.id, r.role, r.pool or "on-demand", state, r.launched_at, r.loaded_at, deadline)  # type: ignore[arg-type]
            )
        window = now - policy.history_s
        history = {
            p: PoolHistory(_since(world.preempted_at.get(p, []), window), _since(world.failed_at.get(p, []), window))
            for p in world.pools
        }
        obs = Observed(
            now=now,
            replicas=tuple(replicas),
            target=n,
            spot_obtainable={p: world.known_obtainable.get(p, True) for p in world.pools},
            last_unobtainable=dict(world.last_unobtainable),
            pools=history,
        )
        d = decide(policy, obs)
        launch = tuple((x.role, None if x.role != "spot" else x.type) for x in d.launch)
        return Act(launch, d.terminate)

    def observe_ready(self, r: SimReplica) -> None:
        if r.pool is not None:
            self._ready_after = [*self._ready_after[-4:], r.loaded_at - r.launched_at]

    def observe_lost(self, pool: str) -> None:
        pass


@dataclass
class SkyServe:
    """SkyServe's FallbackRequestRateAutoscaler with its DynamicFallbackSpotPlacer (see the module doc)."""

    base_on_demand: int = 0
    overprovision: int = 0
    name: str = "skyserve"
    serves_notice: bool = True  # it ignores notices: a replica serves until it dies
    serve_through_notice: bool = False
    uses_warm_pool: bool = False  # SkyServe has none
    preempted: set[str] = field(default_factory=set)
    _pools: tuple[str, ...] = ()

    @property
    def quiet_after_s(self) -> float:
        return 0.0  # its decisions follow from the replicas' states alone

    def act(self, world: World, n: int) -> Act:
        self._pools = world.pools
        now = world.now
        # SkyServe sees a replica until it dies (no notices).
        alive = [r for r in world.replicas if r.dies_at is None or now < r.dies_at]
        target = n + self.overprovision
        spot = [r for r in alive if r.role == "spot"]
        od = [r for r in alive if r.role != "spot"]
        ready_spot = sum(1 for r in spot if r.loaded_at <= now)
        want_spot = target - self.base_on_demand
        launch: list[tuple[str, str | None]] = []
        terminate: list[str] = []
        if len(spot) < want_spot:
            current = [r.pool for r in spot if r.pool is not None]
            for _ in range(want_spot - len(spot)):
                pool = self._select(current)
                launch.append(("spot", pool))
                current.append(pool)
        elif len(spot) > want_spot:
            terminate += [r.id for r in _scale_down_order(spot, now)[: len(spot) - want_spot]]
        want_od = self.base_on_demand + max(0, want_spot - ready_spot)
        if want_od > len(od):
            launch += [("fallback", None)] * (want_od - len(od))
        elif want_od < len(od):
            terminate += [r.id for r in _scale_down_order(od, now)[: len(od) - want_od]]
        return Act(tuple(launch), tuple(terminate))

    def _select(self, current: list[str]) -> str:
        active = [p for p in self._pools if p not in self.preempted]
        candidates = [p for p in current if p not in active]  # as the placer's code reads
        return (candidates or active)[0]

    def observe_ready(self, r: SimReplica) -> None:
        if r.pool is not None:
            self.preempted.discard(r.pool)

    def observe_lost(self, pool: str) -> None:
        self.preempted.add(pool)
        if len([p for p in self._pools if p not in self.preempted]) < 2:
            self.preempted.clear()


def _since(times: list[float], start: float) -> tuple[float, ...]:
    # The world's lists are in time order.
    return tuple(times[bisect.bisect_left(times, start) :])


def _scale_down_order(rs: list[SimReplica], now: float) -> list[SimReplica]:
    # Not yet READY first, then the newest (SkyServe's _select_replicas_to_scale_down ranks by status, then age).
    return sorted(rs, key=lambda r: (r.loaded_at <= now, -r.launched_at))


SIMULATED = ("spot_types", "on_demand_types", "min", "max", "spot_ready_s")
"""The policy fields the replay sets itself (its pools, N, the start times it measures); the rest are the fleet's."""


def controllers(
    names: Iterable[str],
    base_on_demand: int = 0,
    *,
    spare_spot: int = 0,
    pool_share: float = Policy.pool_share,
    hold_per_preemption_s: float = 0.0,
    leave_before_s: float = 40.0,
    on_demand_above_base_percent: int = 0,
    dynamic_fallback: bool = True,
) -> list[Controller]:
    """`spotstack` (ours), `spotstack-v1` (leaving rotation at the notice, as before the notice window),
    `skyserve` (over-provision 0) and `skyserve+1` (over-provision 1). The keywords set ours."""
    ours = Ours(
        base_on_demand=base_on_demand,
        spare_spot=spare_spot,
        pool_share=pool_share,
        hold_per_preemption_s=hold_per_preemption_s,
        leave_before_s=leave_before_s,
        on_demand_above_base_percent=on_demand_above_base_percent,
        dynamic_fallback=dynamic_fallback,
    )
    made: dict[str, Controller] = {
        "spotstack": ours,
        "spotstack-v1": replace(ours, serve_through_notice=False, name="spotstack-v1", _ready_after=[]),
        "skyserve": SkyServe(base_on_demand=base_on_demand),
        "skyserve+1": SkyServe(base_on_demand=base_on_demand, overprovision=1, name="skyserve+1"),
    }
    return [made[n] for n in names]
