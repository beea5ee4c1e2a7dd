"""One controller round, the same on every cloud: load memory, observe, decide, act, save. The cloud parts are
behind three small protocols (a thin adaptor per cloud); the decision is `decide()`'s.

Safety rules (the issue's): a failed observation raises before anything is acted on, so a broken API or
throttling never scales anything down; growth is bounded per round (`max_launches`); a round that lost the race
for the state store (another invocation saved first) acts on nothing it has not already done, and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from spotstack.runtime.controller.decide import Decision, Observed, Policy, Replica, Role, State, decide
from spotstack.runtime.controller.rollout import Step
from spotstack.runtime.controller.state import ControllerState

log = logging.getLogger("spotstack.controller")


@dataclass(frozen=True)
class Seen:
    """What the cloud says now."""

    replicas: tuple[Replica, ...]
    target: int
    """What the autoscaler wants (the main group's desired size, set by its scaling policies and schedules)."""
    spot_obtainable: dict[str, bool]
    sizes: dict[str, int]
    """Each group's desired size now."""
    notes: tuple[str, ...] = ()
    last_unobtainable: dict[str, float] | None = None
    """When each spot type was last seen unobtainable, where the cloud says so directly (the local market);
    None: from the refused launches the controller remembers."""
    roll: Step | None = None
    """The next step of a rolling replacement, where the adaptor rolls one itself (Alibaba: ESS has none)."""
    parts: dict[str, Seen] | None = None
    """A fleet across regions: what each region that answered showed (runtime/controller/regions.py)."""
    bounds: tuple[int, int, int] | None = None
    """The min, max and on-demand base of the part of the fleet seen, when that is not all of it (a region that did
    not answer): the round decides for that part only."""


@dataclass
class RoundResult:
    decision: Decision
    seen: Seen
    sizes: dict[str, int]
    """What the groups were set to (empty in a dry run or a lost race)."""
    acted: bool
    saved: bool
    reasons: list[str] = field(default_factory=list)
    state_problem: str | None = None
    """The stored state could not be used (the round ran from an empty memory): reported, never a crash."""

    def as_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "target": self.seen.target,
            "replicas": [
                {"id": r.id, "role": r.role, "pool": r.type, "state": r.state, "deadline": r.deadline}
                for r in self.seen.replicas
            ],
            "sizes_before": self.seen.sizes,
            "sizes_after": self.sizes,
            "wanted": {"spot": d.wanted_spot, "on_demand": d.wanted_on_demand, "fallback": d.wanted_fallback},
            "terminate": list(d.terminate),
            "held": list(d.held),
            "acted": self.acted,
            "saved": self.saved,
            "roll": self.seen.roll.reason if self.seen.roll else None,
            "reasons": [*d.reasons, *self.seen.notes, *self.reasons],
            "state_problem": self.state_problem,
        }


def replica(
    state: ControllerState,
    now: float,
    instance: str,
    role: Role,
    pool: str,
    launched: float,
    *,
    leaving: bool,
    starting: bool,
    healthy: bool,
    busy: bool = False,
) -> Replica:
    """One instance as decide() sees it, from what every cloud can say of it: leaving (a notice the controller was
    told of, or the group or load balancer already taking it out), starting (not yet running), healthy (in
    rotation). READY time is the controller's own memory: no cloud keeps it."""
    notice = state.notices.get(instance)
    ready_since = None
    st: State
    if notice is not None or leaving:
        st = "draining"
        ready_since = state.ready_since.get(instance)
    elif starting:
        st = "provisioning"
    elif healthy:
        st = "ready"
        ready_since = state.seen_ready(instance, now, launched, role == "spot")
    else:
        st = "loading"
    return Replica(instance, role, pool, st, launched, ready_since, notice.deadline if notice else None, busy)


class CloudFleet(Protocol):
    def observe(self, state: ControllerState, now: float) -> Seen: ...

    def act(self, d: Decision, seen: Seen, max_launches: int) -> dict[str, int]: ...


class Store(Protocol):
    def load(self) -> ControllerState: ...

    def save(self, state: ControllerState) -> bool:
        """Write if nobody wrote since `state.version` was read; False if someone did."""


def run_round(
    fleet: CloudFleet,
    store: Store,
    policy: Policy,
    now: float,
    *,
    state: ControllerState | None = None,
    dry_run: bool = False,
    max_launches: int = 4,
) -> RoundResult:
    """Observe, decide, act, remember. `state`: already loaded (and updated with this invocation's events)."""
    state = state if state is not None else store.load()
    problem = state.problem
    if problem:
        log.error("%s", problem)
    fresh = "at" not in state.last  # a first round, or a memory lost, emptied or unreadable
    seen = fleet.observe(state, now)  # raises on any API error: nothing below runs
    if fresh:
        seen = _ready_from_now_while_fallback_runs(seen, state, now)
    refused = {p: ts[-1] for p, ts in state.failed_at.items() if ts}
    obs = Observed(
        now,
        seen.replicas,
        seen.target,
        seen.spot_obtainable,
        refused if seen.last_unobtainable is None else {**refused, **seen.last_unobtainable},
        state.history(),
    )
    measured = max(state.spot_ready_after) if state.spot_ready_after else policy.spot_ready_s
    if seen.bounds is not None:
        low, high, base = seen.bounds
        policy = replace(policy, min=low, max=high, base_on_demand=base)
    d = decide(replace(policy, spot_ready_s=measured), obs)
    # A partial view (a region that did not answer) must not forget what it did not see: its READY times, notices.
    state.prune(now, {r.id for r in seen.replicas} if seen.bounds is None else None)
    reasons: list[str] = []
    if dry_run:
        return RoundResult(d, seen, {}, False, False, ["dry run: nothing changed"], problem)
    # Save first: a round that lost the race must not act on a decision made from stale memory.
    state.last = {**state.last, "at": now, "target": seen.target, "fallback": d.wanted_fallback}
    if not store.save(state):
        log.warning("another controller round saved first: this one acts on nothing")
        return RoundResult(d, seen, {}, False, False, ["lost the state store race: no action"], problem)
    try:
        sizes = fleet.act(d, seen, max_launches)
    except Exception as exc:
        raise ActFailed(exc) from exc
    log.info("round: target %d, sizes %s -> %s; %s", seen.target, seen.sizes, sizes, "; ".join(d.reasons))
    return RoundResult(d, seen, sizes, True, True, reasons, problem)


def _ready_from_now_while_fallback_runs(seen: Seen, state: ControllerState, now: float) -> Seen:
    """A memory that cannot tell how long spot has served must not end a fallback: with one running, every READY
    spot replica counts from now (the hold starts again). Without one, from its launch, as before: nothing to end,
    and nothing launched for spot that has served all along."""
    if not any(r.role == "fallback" and r.alive for r in seen.replicas):
        return seen
    replicas = []
    for r in seen.replicas:
        if r.role == "spot" and r.state == "ready":
            state.ready_since[r.id] = now
            r = replace(r, ready_since=now)
        replicas.append(r)
    return replace(seen, replicas=tuple(replicas))


class ActFailed(Exception):
    """The round saved its decision, then the cloud refused part of acting on it (the next round observes what
    did change and decides again)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"saved the round's decision, then failed to act on it: {cause}")
        self.cause = cause


def size_fallback(
    d: Decision,
    seen: Seen,
    group: str,
    max_launches: int,
    set_size: Callable[[int], object],
    end: Callable[[str], object],
) -> dict[str, int]:
    """The clouds' one act: size the on-demand fallback group (the main groups are their autoscalers'). Grow by at
    most `max_launches` a round; shrink by ending exactly the fallback replicas decide() chose (`end` must take the
    group's target size down with it), so the group never picks a replica still needed; trim a target above what
    runs (launches that never came) without ending anything."""
    sizes = dict(seen.sizes)
    alive = {r.id for r in seen.replicas if r.role == "fallback" and r.alive}
    ending = [i for i in d.terminate if i in alive]
    current = sizes[group]
    if d.wanted_fallback > current:
        sizes[group] = min(d.wanted_fallback, current + max_launches)
        set_size(sizes[group])
    for instance in ending:
        end(instance)
        sizes[group] -= 1
    if not ending and d.wanted_fallback < current and len(alive) <= d.wanted_fallback:
        sizes[group] = d.wanted_fallback
        set_size(sizes[group])
    return sizes
