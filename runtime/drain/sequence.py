"""The drain, in order, bounded by the notice's deadline minus a safety margin:

1. readiness off (the agent's /ready answers 503 at once),
2. leave every load balancer (ELBv2 deregister, HAProxy drain),
3. wait a grace period for the balancer to stop routing, then for in-flight requests to reach 0,
4. signal the workload (checkpoint, stop),
5. complete the lifecycle action, with heartbeats sent all along if the drain runs long.

A failing step is logged and recorded, and the sequence goes on: a deregistration that fails must
not stop the workload from being told, nor the lifecycle action from being completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from spotstack.runtime.drain.decide import Budget, budget
from spotstack.runtime.drain.targets import Inflight, Lifecycle, Rotation, Workload
from spotstack.runtime.notices.event import InterruptionEvent

log = logging.getLogger("spotstack.drain")


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    error: str = ""
    skipped: bool = False


@dataclass
class DrainReport:
    event: InterruptionEvent
    budget: Budget
    steps: list[Step] = field(default_factory=list)
    out_of_rotation_at: float = 0.0
    finished_at: float = 0.0
    inflight_left: int = 0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def before_deadline(self) -> bool:
        return self.finished_at <= self.event.deadline


@dataclass
class DrainSettings:
    margin_s: float = 5.0
    timeout_s: float = 90.0
    grace_s: float = 0.0
    heartbeat_interval_s: float = 30.0
    inflight_poll_s: float = 0.1
    signal_reserve_s: float = 3.0
    """Time kept back from the in-flight wait for signalling the workload and completing the hook."""
    action_floor_s: float = 2.0
    """Steps that act (readiness off, leaving a balancer, signalling, completing the hook) always get at
    least this long, even when a notice came late or its deadline has passed: only waits are cut short."""
    dry_run: bool = False


class Drainer:
    def __init__(
        self,
        *,
        readiness_off: Callable[[], None],
        rotations: Sequence[Rotation],
        inflight: Inflight | None,
        workload: Workload,
        lifecycle: Lifecycle | None,
        settings: DrainSettings,
        on_step: Callable[[Step], None] = lambda s: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._readiness_off = readiness_off
        self._rotations = list(rotations)
        self._inflight = inflight
        self._workload = workload
        self._lifecycle = lifecycle
        self.s = settings
        self._on_step = on_step
        self._clock = clock

    async def _step(
        self,
        report: DrainReport,
        name: str,
        action: Callable[[], Awaitable[None]],
        timeout: float,
        mutating: bool = True,
    ) -> None:
        start = self._clock()
        if mutating and self.s.dry_run:
            log.info("dry-run: would %s", name)
            step = Step(name, True, 0.0, skipped=True)
        else:
            try:
                await asyncio.wait_for(action(), max(timeout, 0.001))
                step = Step(name, True, self._clock() - start)
            except Exception as exc:
                step = Step(name, False, self._clock() - start, f"{exc.__class__.__name__}: {exc}")
                log.error("drain step %s failed: %s", name, step.error)
        report.steps.append(step)
        self._on_step(step)

    async def _heartbeats(self, lifecycle: Lifecycle) -> None:
        while True:
            await asyncio.sleep(self.s.heartbeat_interval_s)
            try:
                await lifecycle.heartbeat()
            except Exception as exc:
                log.warning("lifecycle heartbeat failed: %s", exc)

    async def _wait_inflight(self, report: DrainReport) -> None:
        assert self._inflight is not None
        while True:
            try:
                report.inflight_left = await self._inflight.count()
            except Exception as exc:
                log.warning("in-flight count failed: %s", exc)
                report.inflight_left = -1
            if report.inflight_left == 0 or self._clock() >= report.budget.inflight_until:
                return
            await asyncio.sleep(self.s.inflight_poll_s)

    async def run(self, event: InterruptionEvent) -> DrainReport:
        now = self._clock()
        b = budget(
            event.deadline,
            now,
            margin_s=self.s.margin_s,
            drain_timeout_s=self.s.timeout_s,
            signal_reserve_s=self.s.signal_reserve_s,
        )
        report = DrainReport(event, b)
        log.warning(
            "draining for %s (%s): %.1fs until the deadline", event.kind.value, event.detail, event.deadline - now
        )

        hb: asyncio.Task[None] | None = None
        if self._lifecycle is not None and not self.s.dry_run:
            hb = asyncio.create_task(self._heartbeats(self._lifecycle))
        try:

            async def readiness() -> None:
                self._readiness_off()

            floor = self.s.action_floor_s
            await self._step(report, "readiness_off", readiness, max(b.left(self._clock()), floor))
            for rot in self._rotations:
                await self._step(report, f"leave_{rot.name}", rot.leave, max(b.left(self._clock()), floor))
            report.out_of_rotation_at = self._clock()
            if self.s.grace_s:
                grace = min(self.s.grace_s, b.left(self._clock(), b.inflight_until))
                await self._step(report, "grace", lambda: asyncio.sleep(grace), grace + 1, mutating=False)
            if self._inflight is not None:
                await self._step(
                    report,
                    "wait_inflight",
                    lambda: self._wait_inflight(report),
                    b.left(self._clock(), b.inflight_until) + 1,
                    mutating=False,
                )
                if report.inflight_left:
                    log.warning("drain budget spent with %d requests in flight", report.inflight_left)
            await self._step(
                report, f"stop_workload_{self._workload.name}", self._workload.stop, max(b.left(self._clock()), floor)
            )
        finally:
            if hb is not None:
                hb.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hb
        if self._lifecycle is not None:
            await self._step(
                report,
                "complete_lifecycle",
                self._lifecycle.complete,
                max(b.left(self._clock()), self.s.action_floor_s),
            )
        report.finished_at = self._clock()
        log.warning("drain finished in %.2fs (ok=%s)", report.finished_at - b.started, report.ok)
        return report
