"""What the fleet should run, from what it runs now. Pure: state in, decision out, no clock reads.

A spot type stands for a pool (a zone and an instance type: what the cloud preempts together). Policies (after
SkyServe's spot placer and fallback, fixing its issue #3245):
- base on-demand: `base_on_demand` replicas are always on-demand, whatever spot does;
- pools by score: new spot replicas go to pools obtainable now and not flapping (unobtainable within
  `flap_cooldown_s`), the best score first: fewest recent preemptions and failed launches (within `history_s`),
  then the lowest known price, then the user's order; with `spread`, at most `pool_share` of the spot replicas
  in one pool while another pool can take them, so one pool's preemption takes a share of the fleet;
- spare spot: `spare_spot` replicas above the target (within `max`), so a preemption is covered at once;
- dynamic on-demand fallback: one on-demand replica for each wanted spot replica short of READY (spares count),
  never above the target; a noticed replica that will serve until a spot replacement is READY (its deadline,
  less `leave_before_s`, after the replacement's expected `spot_ready_s`) needs none;
- return to spot: a fallback replica goes only once a spot replica has been READY for the hold: `stable_s`, plus
  `hold_per_preemption_s` for each preemption the fleet saw within `hold_window_s` (up to `hold_max_s`), so the fleet
  stays on-demand while the market is turbulent and leaves it soon once it is calm.

Invariants (property-tested in tests/runtime/test_decide_properties.py): never more than `max` base and spot
replicas alive, besides READY ones `held` until their replacement serves, and fallback replicas only as stand-ins
for spot replicas not READY (never more than the spot share); never fewer than `base_on_demand` on-demand;
never a READY replica ended while READY replicas would fall below the target; the same input, the same output.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Market = Literal["spot", "on_demand"]
Role = Literal["base", "spot", "fallback"]
State = Literal["provisioning", "loading", "ready", "draining", "preempted", "failed"]
ALIVE: frozenset[str] = frozenset({"provisioning", "loading", "ready"})


@dataclass(frozen=True)
class Replica:
    id: str
    role: Role
    type: str
    state: State
    launched_at: float
    ready_since: float | None = None
    deadline: float | None = None
    """A noticed (draining) replica: when the cloud takes it."""
    busy: bool = False
    """Running queue tasks (AWS: protected from scale-in): a scale-in ends idle replicas first."""

    @property
    def market(self) -> Market:
        return "spot" if self.role == "spot" else "on_demand"

    @property
    def alive(self) -> bool:
        return self.state in ALIVE


@dataclass(frozen=True)
class Policy:
    spot_types: tuple[str, ...]
    """Spot-eligible types, highest priority first."""
    on_demand_types: tuple[str, ...]
    min: int
    max: int
    base_on_demand: int = 0
    on_demand_above_base_percent: int = 0
    dynamic_fallback: bool = False
    stable_s: float = 30.0
    """A spot replica must be READY this long before a fallback replica makes way for it."""
    flap_cooldown_s: float = 60.0
    """A spot type unobtainable within this window is not chosen for new launches."""
    spread: bool = True
    """Spread spot launches over the usable pools (at most `pool_share` of the spot replicas in one while another
    can take them), so one pool's preemption takes a share of the fleet, not all of it."""
    pool_share: float = 0.5
    """With `spread`: the most of the spot replicas one pool holds (rounded up, at least one)."""
    spare_spot: int = 0
    """Spot replicas above the target (within `max`): a preemption is covered at once instead of by fallback."""
    history_s: float = 3 * 24 * 3600.0
    """How far back preemptions and failed launches count, in the pools' scores and in the hold."""
    hold_per_preemption_s: float = 0.0
    """Added to `stable_s` for each preemption within `hold_window_s`: the hold grows with the preemption rate."""
    hold_window_s: float = 3600.0
    """How far back preemptions lengthen the hold (the market's recent mood, not the pools' record)."""
    hold_max_s: float = 3600.0
    """The most the hold grows to."""
    spot_ready_s: float | None = None
    """Expected seconds from a spot launch to READY (provision + load); None: a noticed replica always needs a
    fallback stand-in."""
    leave_before_s: float = 40.0
    """A noticed replica leaves rotation this long before its deadline (the drain, margin and lead)."""


@dataclass(frozen=True)
class PoolHistory:
    """What the controller has seen of one spot pool."""

    preempted_at: tuple[float, ...] = ()
    """When its replicas got notices (one entry each), oldest first."""
    failed_at: tuple[float, ...] = ()
    """When launches into it were refused, oldest first."""
    price: float | None = None
    """Per hour, when known."""
    capacity: int | None = None
    """How many more replicas it can take now, when the cloud says."""


@dataclass(frozen=True)
class Observed:
    now: float
    replicas: tuple[Replica, ...]
    target: int
    """Replicas the autoscaler wants (QPS or backlog), before the min/max clamp."""
    spot_obtainable: dict[str, bool]
    """Per spot type: can one be launched right now?"""
    last_unobtainable: dict[str, float] = field(default_factory=dict)
    """Per spot type: when it was last seen unobtainable."""
    pools: dict[str, PoolHistory] = field(default_factory=dict)
    """Per spot type: its recent preemptions, failed launches, price and capacity, when known."""


@dataclass(frozen=True)
class Launch:
    role: Role
    type: str


@dataclass(frozen=True)
class Decision:
    wanted_spot: int
    wanted_on_demand: int
    """Base plus the percentage split plus fallback: every on-demand replica wanted."""
    wanted_fallback: int
    launch: tuple[Launch, ...]
    terminate: tuple[str, ...]
    reasons: tuple[str, ...]
    held: tuple[str, ...] = ()
    """READY replicas the fleet no longer wants, kept until READY would not fall below the target (a surge
    above `max` of these alone, as a rolling update's max surge: availability first)."""


def _recent(times: tuple[float, ...], now: float, window: float) -> int:
    return bisect.bisect_right(times, now) - bisect.bisect_left(times, now - window)


def _ranked_pools(policy: Policy, obs: Observed) -> list[str]:
    """Spot pools obtainable now and not flapping, best first: fewest recent preemptions and failed launches, then
    the lowest known price, then the user's order."""
    scored = []
    for rank, t in enumerate(policy.spot_types):
        recent = obs.last_unobtainable.get(t)
        flapping = recent is not None and obs.now - recent < policy.flap_cooldown_s
        h = obs.pools.get(t)
        if not obs.spot_obtainable.get(t, False) or flapping or (h is not None and h.capacity == 0):
            continue
        trouble = 0.0
        price = math.inf
        if h is not None:
            trouble = _recent(h.preempted_at, obs.now, policy.history_s) + 0.5 * _recent(
                h.failed_at, obs.now, policy.history_s
            )
            price = h.price if h.price is not None else math.inf
        scored.append((trouble, price, rank, t))
    return [t for *_, t in sorted(scored)]


def _place_spot(policy: Policy, obs: Observed, spot: list[Replica], count: int, reasons: list[str]) -> list[Launch]:
    pools = _ranked_pools(policy, obs)
    if not pools:
        reasons.append("no spot type obtainable (or all flapping): no spot launch")
        return []
    room: dict[str, int] = {t: h.capacity for t, h in obs.pools.items() if h.capacity is not None}
    held = dict.fromkeys(pools, 0)
    for r in spot:
        if r.type in held:
            held[r.type] += 1
    cap = max(1, math.ceil((len(spot) + count) * policy.pool_share)) if policy.spread else math.inf
    out: list[Launch] = []
    launches = {t: Launch("spot", t) for t in pools}  # immutable: one per pool serves every launch into it
    for _ in range(count):
        # The best pool under the cap; if every pool is at the cap, the best pool with the fewest.
        best: str | None = None
        for t in pools:
            if room.get(t, 1) <= 0:
                continue
            if held[t] < cap:
                best = t
                break
            if best is None or held[t] < held[best]:
                best = t
        if best is None:
            reasons.append("every obtainable pool is full")
            break
        held[best] += 1
        if best in room:
            room[best] -= 1
        out.append(launches[best])
    used = sorted({x.type for x in out})
    reasons.append(f"launch {len(out)} spot in {', '.join(used)}" if out else "no spot launch")
    return out


def _newest_first(rs: Sequence[Replica]) -> list[Replica]:
    # Not-ready replicas go before ready ones, idle before busy; among equals, the newest goes first.
    return sorted(rs, key=lambda r: (r.state == "ready", r.busy, -r.launched_at))


def _hold_s(policy: Policy, obs: Observed) -> float:
    if not policy.hold_per_preemption_s:
        return policy.stable_s
    # Preemption events, not replicas: one pool taking several replicas at once is one sign of a rough market.
    n = 0
    for h in obs.pools.values():
        lo = bisect.bisect_left(h.preempted_at, obs.now - policy.hold_window_s)
        n += len(set(h.preempted_at[lo : bisect.bisect_right(h.preempted_at, obs.now)]))
    return policy.stable_s + min(policy.hold_max_s, n * policy.hold_per_preemption_s)


def _covered_by_notice(policy: Policy, obs: Observed, spot: list[Replica]) -> int:
    """Noticed replicas that serve until a spot replacement (launched, not yet READY) is expected READY: each
    covers one such replacement, so neither needs a fallback stand-in."""
    if policy.spot_ready_s is None or not spot:
        return 0
    leaving = sorted(
        r.deadline - policy.leave_before_s
        for r in obs.replicas
        if r.role == "spot" and r.state == "draining" and r.deadline is not None and r.ready_since is not None
    )
    coming = sorted(r.launched_at + policy.spot_ready_s for r in spot if r.state != "ready")
    covered = 0
    for due in coming:  # earliest replacement with the noticed replica that leaves first
        if covered < len(leaving) and due <= leaving[covered]:
            covered += 1
    return covered


def decide(policy: Policy, obs: Observed) -> Decision:
    n = max(policy.min, min(policy.max, obs.target))
    base = min(policy.base_on_demand, n)
    above = n - base
    od_split = math.ceil(above * policy.on_demand_above_base_percent / 100) if policy.spot_types else above
    wanted_spot = above - od_split
    spare = min(policy.spare_spot, policy.max - n) if wanted_spot and policy.spot_types else 0
    reasons: list[str] = [
        f"target {n} = {base} base + {od_split} on-demand share + {wanted_spot} spot"
        + (f" (+{spare} spare)" if spare else "")
    ]

    alive = [r for r in obs.replicas if r.state in ALIVE]
    by_role: dict[str, list[Replica]] = {"base": [], "spot": [], "fallback": []}
    for r in alive:
        by_role[r.role].append(r)
    launch: list[Launch] = []
    terminate: list[str] = []
    od_type = policy.on_demand_types[0]

    # Base (and the percentage share, which is on-demand all the time too).
    fixed_od = base + od_split
    have = by_role["base"]
    if len(have) < fixed_od:
        launch += [Launch("base", od_type)] * (fixed_od - len(have))
    elif len(have) > fixed_od:
        terminate += [r.id for r in _newest_first(have)[: len(have) - fixed_od]]

    # Spot; alive spot replicas of any pool count, so nothing churns needlessly.
    spot = by_role["spot"]
    want = wanted_spot + spare
    if len(spot) > want:
        # Drop the lowest-priority types first, then the newest.
        rank = {t: i for i, t in enumerate(policy.spot_types)}
        ordered = sorted(spot, key=lambda r: (-rank.get(r.type, 99), r.state == "ready", r.busy, -r.launched_at))
        terminate += [r.id for r in ordered[: len(spot) - want]]
    elif len(spot) < want:
        launch += _place_spot(policy, obs, spot, want - len(spot), reasons)

    # Fallback: cover the wanted spot replicas short of READY for the hold (spares count; never above the target).
    wanted_fallback, stable, hold = 0, 0, policy.stable_s
    if policy.dynamic_fallback:
        hold = _hold_s(policy, obs)
        stable = sum(
            1 for r in spot if r.state == "ready" and r.ready_since is not None and obs.now - r.ready_since >= hold
        )
        wanted_fallback = max(0, wanted_spot - stable - _covered_by_notice(policy, obs, spot))
    fb = by_role["fallback"]
    if len(fb) < wanted_fallback:
        launch += [Launch("fallback", od_type)] * (wanted_fallback - len(fb))
        reasons.append(f"fallback: {wanted_fallback} wanted spot replicas are not stably READY")
    elif len(fb) > wanted_fallback:
        terminate += [r.id for r in _newest_first(fb)[: len(fb) - wanted_fallback]]
        reasons.append(f"return to spot: {stable} spot replicas READY for {hold:.0f}s")

    ending = _keep_ready(alive, terminate, n, reasons)
    held = tuple(r for r in terminate if r not in ending)
    return Decision(
        wanted_spot,
        fixed_od + wanted_fallback,
        wanted_fallback,
        tuple(launch),
        tuple(ending),
        tuple(reasons),
        held,
    )


def _keep_ready(alive: list[Replica], terminate: list[str], n: int, reasons: list[str]) -> list[str]:
    """Never end a READY replica while the READY ones would fall below the target: a scale-in or a return to
    spot waits (a tick or more) until the replacement serves. Ending a replica that is not READY costs nothing."""
    ready = {r.id for r in alive if r.state == "ready"}
    left = len(ready)
    kept: list[str] = []
    for rid in terminate:
        if rid in ready:
            if left - 1 < n:
                reasons.append(f"keep {rid}: READY would fall below {n}")
                continue
            left -= 1
        kept.append(rid)
    return kept


def track_obtainability(prev: dict[str, float], now: float, obtainable: dict[str, bool]) -> dict[str, float]:
    """Remember when each type was last unobtainable (the flap guard's memory). Pure."""
    out = dict(prev)
    for t, ok in obtainable.items():
        if not ok:
            out[t] = now
    return out
