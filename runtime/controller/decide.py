"""What the fleet should run, from what it runs now. Pure: state in, decision out, no clock reads.

Policies (after SkyServe's spot placer and fallback, fixing its issue #3245):
- base on-demand: `base_on_demand` replicas are always on-demand, whatever spot does;
- priority order: new spot replicas use the first spot type that is obtainable now and has not
  flapped recently (a type that was unobtainable within `flap_cooldown_s` is skipped);
- dynamic on-demand fallback: one on-demand replica for each wanted spot replica that is not READY;
- return to spot: a fallback replica goes only once a spot replica has been READY for `stable_s`
  to replace it, so a spot replica that is preempted again at once does not leave a gap.

Invariants (property-tested in tests/runtime/test_decide_properties.py): never more than `max` base and spot
replicas alive, besides READY ones `held` until their replacement serves, and fallback replicas only as stand-ins
for spot replicas not READY (never more than the spot share); never fewer than `base_on_demand` on-demand;
never a READY replica ended while READY replicas would fall below the target; the same input, the same output.
"""

from __future__ import annotations

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
    spread: bool = False
    """Spread spot launches over the usable pools (fewest replicas first, then priority), so one pool's
    preemption takes a share of the fleet, not all of it."""


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


def _usable_spot_types(policy: Policy, obs: Observed) -> list[str]:
    """Spot types obtainable now and not flapping, in priority order."""
    out = []
    for t in policy.spot_types:
        recent = obs.last_unobtainable.get(t)
        flapping = recent is not None and obs.now - recent < policy.flap_cooldown_s
        if obs.spot_obtainable.get(t, False) and not flapping:
            out.append(t)
    return out


def _newest_first(rs: Sequence[Replica]) -> list[Replica]:
    # Not-ready replicas go before ready ones; among equals, the newest goes first.
    return sorted(rs, key=lambda r: (r.state == "ready", -r.launched_at))


def decide(policy: Policy, obs: Observed) -> Decision:
    n = max(policy.min, min(policy.max, obs.target))
    base = min(policy.base_on_demand, n)
    above = n - base
    od_split = math.ceil(above * policy.on_demand_above_base_percent / 100) if policy.spot_types else above
    wanted_spot = above - od_split
    reasons: list[str] = [f"target {n} = {base} base + {od_split} on-demand share + {wanted_spot} spot"]

    alive = [r for r in obs.replicas if r.alive]
    by_role = {role: [r for r in alive if r.role == role] for role in ("base", "spot", "fallback")}
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

    # Spot, in priority order; alive spot replicas of any type count, so nothing churns needlessly.
    spot = by_role["spot"]
    if len(spot) > wanted_spot:
        # Drop the lowest-priority types first, then the newest.
        rank = {t: i for i, t in enumerate(policy.spot_types)}
        ordered = sorted(spot, key=lambda r: (-rank.get(r.type, 99), r.state == "ready", -r.launched_at))
        terminate += [r.id for r in ordered[: len(spot) - wanted_spot]]
    elif len(spot) < wanted_spot:
        usable = _usable_spot_types(policy, obs)
        if not usable:
            reasons.append("no spot type obtainable (or all flapping): no spot launch")
        elif policy.spread:
            rank = {t: i for i, t in enumerate(policy.spot_types)}
            counts = {t: sum(1 for r in spot if r.type == t) for t in usable}
            for _ in range(wanted_spot - len(spot)):
                t = min(usable, key=lambda u: (counts[u], rank[u]))
                counts[t] += 1
                launch.append(Launch("spot", t))
            reasons.append(f"launch {wanted_spot - len(spot)} spot over {len(usable)} pools")
        else:
            t = usable[0]
            launch += [Launch("spot", t)] * (wanted_spot - len(spot))
            reasons.append(f"launch {wanted_spot - len(spot)} spot {t}")

    # Fallback: cover every wanted spot replica that has not been READY for stable_s.
    stable = [
        r
        for r in spot
        if r.state == "ready" and r.ready_since is not None and obs.now - r.ready_since >= policy.stable_s
    ]
    wanted_fallback = max(0, wanted_spot - len(stable)) if policy.dynamic_fallback else 0
    fb = by_role["fallback"]
    if len(fb) < wanted_fallback:
        launch += [Launch("fallback", od_type)] * (wanted_fallback - len(fb))
        reasons.append(f"fallback: {wanted_fallback} wanted spot replicas are not stably READY")
    elif len(fb) > wanted_fallback:
        terminate += [r.id for r in _newest_first(fb)[: len(fb) - wanted_fallback]]
        reasons.append(f"return to spot: {len(stable)} spot replicas READY for {policy.stable_s:.0f}s")

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
