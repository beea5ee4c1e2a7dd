"""Runs every monitor in its own loop and turns the first draining notice into exactly one drain.

A monitor that raises is logged, counted and retried with backoff; it never takes the agent or
another monitor down. Repeated notices are de-duplicated by id, and once a drain has started
every later notice is a duplicate (never two drains).

A monitor's poll says what its source shows now, so a deferred notice that its monitor no longer reports is
withdrawn (a canceled scheduled event, a rebalance recommendation gone, a maintenance window passed): its timer
is cancelled and the node serves on, as aws-node-termination-handler cancels on a canceled event. One the source
moved (the same id, a later deadline) follows the new deadline. A drain that has started is never undone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from spotstack.runtime.backoff import Backoff
from spotstack.runtime.drain.decide import Verdict, verdict
from spotstack.runtime.notices.base import Monitor
from spotstack.runtime.notices.event import InterruptionEvent

log = logging.getLogger("spotstack.agent")

MAX_BACKOFF_S = 5.0


class Supervisor:
    def __init__(
        self,
        monitors: Sequence[Monitor],
        on_drain: Callable[[InterruptionEvent], Coroutine[Any, Any, None]],
        *,
        poll_interval_s: float,
        horizon_s: float,
        spot_horizon_s: float | None = None,
        drain_on_rebalance: bool = False,
        on_notice: Callable[[InterruptionEvent, Monitor, Verdict], None] = lambda e, m, v: None,
        on_error: Callable[[Monitor, Exception], None] = lambda m, e: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.monitors = list(monitors)
        self._on_drain = on_drain
        self._poll = poll_interval_s
        self._horizon = horizon_s
        self._spot_horizon = spot_horizon_s
        self._deferred: dict[str, tuple[InterruptionEvent, Monitor]] = {}
        """Notices served through until due (or released), by id."""
        self._timers: dict[str, asyncio.Task[None]] = {}
        """The due-timer of each deferred notice, by id."""
        self._drain_on_rebalance = drain_on_rebalance
        self._on_notice, self._on_error, self._clock = on_notice, on_error, clock
        self.seen: set[str] = set()
        self.draining = False
        self.drain_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def handle(self, event: InterruptionEvent, monitor: Monitor) -> Verdict:
        v = verdict(
            event,
            self._clock(),
            seen=frozenset(self.seen),
            draining=self.draining,
            horizon_s=self._horizon,
            drain_on_rebalance=self._drain_on_rebalance,
            spot_horizon_s=self._spot_horizon,
        )
        # A deferred notice is polled again every interval until due: report it once, not every poll.
        if v is not Verdict.DUPLICATE and not (v is Verdict.DEFER and event.id in self._deferred):
            self._on_notice(event, monitor, v)
        if v is Verdict.DEFER and event.id not in self._deferred:
            log.info("%s: %s; serving until the drain is due", monitor.name, event.detail)
            self._deferred[event.id] = (event, monitor)
            # A long-poll monitor reports a notice once: come back to it when due, whatever the monitor does.
            self._timers[event.id] = asyncio.create_task(self._when_due(event.id, monitor))
        if v in (Verdict.DRAIN, Verdict.OBSERVE):
            self.seen.add(event.id)  # DEFER is not remembered: the same notice is acted on once it is due
        if v is Verdict.OBSERVE:
            log.info("%s: %s (observed, no drain)", monitor.name, event.detail)
        if v is Verdict.DRAIN:
            self._start_drain(event)
        return v

    @property
    def deferred(self) -> set[str]:
        return set(self._deferred)

    def _start_drain(self, event: InterruptionEvent) -> None:
        self.draining = True
        self.drain_task = asyncio.create_task(self._on_drain(event))

    def release(self) -> InterruptionEvent | None:
        """The controller says this node's replacement is READY: drain now for the deferred notice whose
        deadline is nearest, rather than serve on until it is due. None when no notice is deferred (or a
        drain is already under way): nothing to release."""
        if self.draining:
            return None
        waiting = [(e, m) for i, (e, m) in self._deferred.items() if i not in self.seen]
        if not waiting:
            return None
        event, monitor = min(waiting, key=lambda em: em[0].deadline)
        log.info("%s: the replacement is READY; leaving rotation now (%s)", monitor.name, event.detail)
        self._on_notice(event, monitor, Verdict.DRAIN)
        self.seen.add(event.id)
        self._start_drain(event)
        return event

    async def _when_due(self, event_id: str, monitor: Monitor) -> None:
        while not self.draining and event_id not in self.seen:
            await asyncio.sleep(self._poll)
            current = self._deferred.get(event_id)
            if current is None:  # withdrawn meanwhile
                return
            if self.handle(current[0], monitor) is not Verdict.DEFER:
                return

    def _withdraw_stale(self, monitor: Monitor, now_showing: InterruptionEvent | None) -> None:
        """Deferred notices of `monitor` that it no longer shows are withdrawn; one it shows with a new deadline
        follows it."""
        if self.draining:
            return
        for eid, (event, m) in list(self._deferred.items()):
            if m is not monitor or eid in self.seen:
                continue
            if now_showing is not None and now_showing.id == eid:
                if now_showing.deadline != event.deadline:
                    log.info("%s: %s moved: due by %.0f now", m.name, event.detail, now_showing.deadline)
                    self._deferred[eid] = (now_showing, m)
                continue
            del self._deferred[eid]
            timer = self._timers.pop(eid, None)
            if timer is not None:
                timer.cancel()
            log.warning("%s: notice withdrawn (%s): serving on", m.name, event.detail)
            self._on_notice(event, m, Verdict.WITHDRAWN)

    async def _loop(self, monitor: Monitor) -> None:
        backoff = Backoff(self._poll, MAX_BACKOFF_S)
        while True:
            try:
                event = await monitor.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._on_error(monitor, exc)
                log.warning("%s: poll failed: %s", monitor.name, exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self._withdraw_stale(monitor, event)
            if event is not None:
                self.handle(event, monitor)
            if not monitor.long_poll:
                await asyncio.sleep(self._poll)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(m), name=m.name) for m in self.monitors]

    async def stop(self) -> None:
        timers = list(self._timers.values())
        for t in self._tasks + timers:
            t.cancel()
        await asyncio.gather(*self._tasks, *timers, return_exceptions=True)
        self._tasks, self._timers = [], {}
