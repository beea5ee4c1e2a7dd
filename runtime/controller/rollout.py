"""A rolling replacement where the cloud has none of its own (Alibaba ESS applies a changed scaling configuration to
the instances it launches next, never to running ones). Pure: what the group runs in, the next step out.

The roll is spot-safe in the way of GCP's proactive update with one surge and none unavailable: raise the group by
one, wait until the new instance has served for `min_ready_s`, then end one stale instance (the group's desired
size going down with it, its drain hook letting the agent leave cleanly), and again until none is stale. It pauses
while anything in the group is starting or leaving (a preemption, a scale-in, a launch that has not come up), so it
never stacks on a fleet that is already short. At the group's maximum there is no room for a surge: one stale
instance at a time is ended with the desired size kept, the group launching its replacement (one unavailable).
A surge whose instance never comes (spot sold out, a quota) is withdrawn after `surge_timeout_s` and tried again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spotstack.runtime.controller.decide import State

MIN_READY_S = 300.0
"""As GCP's rolling update (components/gcp/mapping.ROLLOUT_MIN_READY_S): a replacement serves this long first."""
SURGE_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class Member:
    """One instance of the group, as the roll sees it."""

    id: str
    current: bool
    """Launched from the configuration deployed now."""
    state: State
    launched_at: float
    ready_since: float | None = None


@dataclass(frozen=True)
class Step:
    surge: int = 0
    """Change the group's desired size by this (1: a surge; -1: a surge withdrawn)."""
    remove: str | None = None
    """End this stale instance now."""
    decrease: bool = True
    """With `remove`: take the desired size down with it (after a surge); False: the group replaces it."""
    reason: str = ""

    @property
    def acts(self) -> bool:
        return bool(self.surge or self.remove)


@dataclass(frozen=True)
class Surge:
    """The roll's memory between rounds (in the controller's state): a surge asked for and not yet used."""

    at: float
    fresh_ready: int
    """Current instances serving when the surge was asked for: its instance is one more than this."""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "fresh_ready": self.fresh_ready}

    @classmethod
    def from_json(cls, doc: Any) -> Surge | None:
        if not isinstance(doc, dict) or "at" not in doc:
            return None
        return cls(float(doc["at"]), int(doc.get("fresh_ready", 0)))


def step(
    members: Sequence[Member],
    desired: int,
    max_size: int,
    surge: Surge | None,
    now: float,
    *,
    min_ready_s: float = MIN_READY_S,
    surge_timeout_s: float = SURGE_TIMEOUT_S,
) -> tuple[Step | None, Surge | None]:
    """The next step and the memory to keep. None: nothing to roll (every instance is current)."""
    alive = [m for m in members if m.state in ("provisioning", "loading", "ready")]
    stale = sorted((m for m in alive if not m.current), key=lambda m: (m.launched_at, m.id))
    if not stale:
        # A surge outstanding when the last stale instance went another way (preempted, scaled in) is left to the
        # autoscaler: its next decision sets the size anyway.
        return None, None
    fresh_ready = [m for m in alive if m.current and m.state == "ready"]
    if surge is not None and len(fresh_ready) <= surge.fresh_ready and now - surge.at >= surge_timeout_s:
        return Step(surge=-1, reason="rolling: the surge's instance never came; withdrawn, to be tried again"), None
    if any(m.state in ("draining", "preempted") for m in members):
        return Step(reason="rolling: paused while an instance leaves"), surge
    starting = [m for m in alive if m.state != "ready"]
    if starting:
        return Step(reason=f"rolling: waiting for {len(starting)} starting instance(s)"), surge
    settling = [m for m in fresh_ready if m.ready_since is not None and now - m.ready_since < min_ready_s]
    if settling:
        return Step(reason=f"rolling: {settling[0].id} serves {min_ready_s:.0f} s before a stale one goes"), surge
    if surge is not None:
        if len(fresh_ready) <= surge.fresh_ready:
            return Step(reason="rolling: waiting for the surge's instance to launch"), surge
        return Step(remove=stale[0].id, reason=f"rolling: {stale[0].id} replaced ({len(stale) - 1} to go)"), None
    if desired < max_size:
        return Step(surge=1, reason=f"rolling: {len(stale)} stale instance(s); one surge first"), Surge(
            now, len(fresh_ready)
        )
    return (
        Step(
            remove=stale[0].id,
            decrease=False,
            reason=f"rolling at the group's maximum: {stale[0].id} replaced in place ({len(stale) - 1} to go)",
        ),
        None,
    )
