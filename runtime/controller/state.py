"""What a cloud controller remembers between rounds (a Lambda invocation has no memory of its own). Pure.

Each pool's recent preemptions and refused launches (the scores and the hold of `decide()`), the notices it has
been told of (instance -> pool and deadline: the interruption event reaches the controller, not the group), and its
last decision. Kept as one JSON document in a small store the components declare, written with optimistic
concurrency (`version`), so two overlapping rounds cannot both act.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from spotstack.runtime.controller.decide import PoolHistory

KEEP_S = 3 * 24 * 3600.0
"""Nothing older than `decide()`'s longest memory (its pool history) is kept."""
MAX_EVENTS_PER_POOL = 500
"""A bound on the document, whatever the market does (a DynamoDB item is at most 400 KB)."""


@dataclass
class Notice:
    pool: str
    deadline: float


@dataclass
class ControllerState:
    version: int = 0
    """The store's version this state was read at; a write succeeds only if it is still current."""
    preempted_at: dict[str, list[float]] = field(default_factory=dict)
    failed_at: dict[str, list[float]] = field(default_factory=dict)
    notices: dict[str, Notice] = field(default_factory=dict)
    """Instance id -> its pool and deadline, from interruption events."""
    last: dict[str, Any] = field(default_factory=dict)
    """The last round: when, the sizes set and why (for `controller once` and the logs)."""
    ready_since: dict[str, float] = field(default_factory=dict)
    """Instance id -> when it was first seen healthy in rotation (the cloud keeps no such time)."""
    spot_ready_after: list[float] = field(default_factory=list)
    """Launch-to-READY of the latest spot instances: how soon a replacement serves (`Policy.spot_ready_s`)."""
    problem: str | None = None
    """Why the stored state could not be used (this round started from an empty memory), for the report."""

    def seen_ready(self, instance: str, now: float, launched_at: float, spot: bool) -> float:
        """When `instance` became READY (first seen healthy); measures spot start times once. On a controller's
        first round nothing is known of the past: what serves has served since its launch (`run_round` takes
        "from now" instead while a fallback runs, so that no fallback is ended on a memory that cannot tell)."""
        if instance not in self.ready_since:
            if "at" not in self.last:
                self.ready_since[instance] = launched_at
            else:
                self.ready_since[instance] = now
                if spot:
                    self.spot_ready_after = [*self.spot_ready_after[-4:], now - launched_at]
        return self.ready_since[instance]

    def preempted(self, instance: str, pool: str, at: float, deadline: float) -> bool:
        """Record an interruption notice once (events are delivered at least once); True if it was new."""
        if instance in self.notices:
            return False
        self.notices[instance] = Notice(pool, deadline)
        _add(self.preempted_at, pool, at)
        return True

    def failed(self, pool: str, at: float) -> None:
        _add(self.failed_at, pool, at)

    def obtainable(self, pools: tuple[str, ...], now: float, retry_s: float) -> dict[str, bool]:
        """A pool that refused a launch in the last `retry_s` counts as unobtainable; the rest as obtainable."""
        recent = {p: ts[-1] for p, ts in self.failed_at.items() if ts}
        return {p: now - recent.get(p, -retry_s) >= retry_s for p in pools}

    def history(self) -> dict[str, PoolHistory]:
        pools = set(self.preempted_at) | set(self.failed_at)
        return {
            p: PoolHistory(tuple(self.preempted_at.get(p, ())), tuple(self.failed_at.get(p, ()))) for p in sorted(pools)
        }

    def prune(self, now: float, alive: set[str] | None = None) -> None:
        """Forget what decide() would not use: events older than KEEP_S, notices of instances gone."""
        for d in (self.preempted_at, self.failed_at):
            for p in list(d):
                d[p] = [t for t in d[p] if now - t <= KEEP_S][-MAX_EVENTS_PER_POOL:]
                if not d[p]:
                    del d[p]
        for i, n in list(self.notices.items()):
            if (alive is not None and i not in alive) or now - n.deadline > KEEP_S:
                del self.notices[i]
        if alive is not None:
            self.ready_since = {i: t for i, t in self.ready_since.items() if i in alive}

    def to_json(self) -> str:
        return json.dumps(
            {
                "preempted_at": self.preempted_at,
                "failed_at": self.failed_at,
                "notices": {i: {"pool": n.pool, "deadline": n.deadline} for i, n in self.notices.items()},
                "last": self.last,
                "ready_since": self.ready_since,
                "spot_ready_after": self.spot_ready_after,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None, version: int, where: str = "the controller's state store") -> ControllerState:
        """The stored state; None (never written) is a fresh one. Anything else that cannot be read — malformed,
        truncated, emptied — is never a crash (a controller that fails every round grows nothing in an outage):
        a fresh state carrying `problem`, which names `where` and the field, and how to reset it. A fresh state
        never ends a fallback early: every replica counts as READY from now."""
        if text is None:
            return cls(version)
        try:
            return cls._parse(text, version)
        except ValueError as exc:
            return cls.unreadable(version, where, str(exc))

    @classmethod
    def unreadable(cls, version: int, where: str, why: str) -> ControllerState:
        return cls(
            version,
            problem=(
                f"controller state in {where} is unreadable ({why}): this round starts from an empty memory "
                f"(every replica READY from now, no pool history); it is overwritten by this round's save, or "
                f"delete it to reset"
            ),
        )

    @classmethod
    def _parse(cls, text: str, version: int) -> ControllerState:
        try:
            doc = json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("empty" if doc is None else "not a JSON object")
        if not doc.keys() & _FIELDS:
            raise ValueError("empty: none of its fields" if not doc else f"none of its fields (has {sorted(doc)[:3]})")

        def read(name: str, convert: Any, empty: Any = None) -> Any:
            try:
                return convert(doc.get(name, {} if empty is None else empty))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ValueError(f"field {name!r}: {exc.__class__.__name__} {exc}") from None

        def times(v: dict[str, Any]) -> dict[str, list[float]]:
            return {str(k): sorted(_finite(t) for t in ts) for k, ts in v.items()}

        return cls(
            version,
            read("preempted_at", times),
            read("failed_at", times),
            read(
                "notices",
                lambda v: {str(i): Notice(str(n["pool"]), _finite(n["deadline"])) for i, n in v.items()},
            ),
            read("last", dict),
            read("ready_since", lambda v: {str(i): _finite(t) for i, t in v.items()}),
            read("spot_ready_after", lambda v: [_finite(x) for x in v] if isinstance(v, list) else _not_list(), []),
        )


_FIELDS = {"preempted_at", "failed_at", "notices", "last", "ready_since", "spot_ready_after"}


def _finite(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise TypeError(f"{x!r} is not a number")
    v = float(x)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{x!r} is not a finite number")
    return v


def _not_list() -> list[float]:
    raise TypeError("not a list")


def _add(d: dict[str, list[float]], pool: str, at: float) -> None:
    times = d.setdefault(pool, [])
    times.append(at)
    times.sort()  # decide() reads them oldest first
