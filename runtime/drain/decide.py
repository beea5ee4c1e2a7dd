"""Pure rules of draining: whether an event starts a drain, and how long each step may take."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from spotstack.runtime.notices.event import DRAINING_KINDS, InterruptionEvent, Kind


class Verdict(str, Enum):
    DRAIN = "drain"
    DEFER = "defer"  # a real notice, but too far ahead to act on yet (scheduled maintenance)
    DUPLICATE = "duplicate"  # seen before, or a drain is already under way
    OBSERVE = "observe"  # count and log only (rebalance recommendation by default)
    WITHDRAWN = "withdrawn"  # a deferred notice its source no longer shows (canceled, moved, passed): no drain


def verdict(
    event: InterruptionEvent,
    now: float,
    *,
    seen: frozenset[str],
    draining: bool,
    horizon_s: float,
    drain_on_rebalance: bool = False,
    spot_horizon_s: float | None = None,
) -> Verdict:
    """One drain per node life: any later notice, of any kind, is a duplicate.

    With `spot_horizon_s` (serving through the notice), a spot notice is deferred until its deadline is that
    close: the node serves on while its replacement starts."""
    if event.id in seen or draining:
        return Verdict.DUPLICATE
    if event.kind not in DRAINING_KINDS and not drain_on_rebalance:
        return Verdict.OBSERVE
    horizon_s = spot_horizon_s if event.kind is Kind.SPOT_INTERRUPTION and spot_horizon_s is not None else horizon_s
    if event.deadline - now > horizon_s:
        return Verdict.DEFER
    return Verdict.DRAIN


@dataclass(frozen=True)
class Budget:
    """Wall-clock instants bounding the drain."""

    started: float
    finish_by: float
    """Deadline minus the safety margin: lifecycle completion and signalling happen before this."""
    inflight_until: float
    """Stop waiting for in-flight requests at this instant (drain timeout or finish_by, earlier)."""

    def left(self, now: float, until: float | None = None) -> float:
        return max(0.0, (self.finish_by if until is None else until) - now)


def budget(deadline: float, now: float, *, margin_s: float, drain_timeout_s: float, signal_reserve_s: float) -> Budget:
    """A notice whose time is already past still drains, with no time for waiting: never raise."""
    finish_by = max(now, deadline - margin_s)
    # Keep time back for signalling and the lifecycle call, but never most of a short window.
    reserve = min(signal_reserve_s, (finish_by - now) * 0.25)
    inflight_until = max(now, min(now + drain_timeout_s, finish_by - reserve))
    return Budget(now, finish_by, inflight_until)


def spot_horizon(drain_timeout_s: float, margin_s: float, grace_s: float, lead_s: float) -> float:
    """When serving through a spot notice: start the drain once the deadline is this close."""
    return drain_timeout_s + margin_s + grace_s + lead_s


def horizon(drain_timeout_s: float, margin_s: float, notice_window_s: float) -> float:
    """Act on a notice once its deadline is this close: the larger of the drain and the cloud's window."""
    return max(drain_timeout_s + margin_s, notice_window_s)


def leave_before(
    notice_window_s: float, drain_timeout_s: float, margin_s: float, grace_s: float, lead_s: float, serve_through: bool
) -> float:
    """How long before its deadline a noticed node leaves rotation: the whole drain (`spot_horizon`) when it serves
    through its notice, at once (the whole window) when it does not or the window is shorter than the drain. What
    `decide()` must credit a noticed replica with (`Policy.leave_before_s`); the agent's supervisor acts on the same
    sum."""
    if not serve_through:
        return notice_window_s
    return min(notice_window_s, spot_horizon(drain_timeout_s, margin_s, grace_s, lead_s))
