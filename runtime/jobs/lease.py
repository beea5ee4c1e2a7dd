"""Keeping a running task's place in the queue: its lease extended every `lease/3` (and its running marker in the
result store with it), and the queue's hold limit met before it passes; and a finished task's message deleted."""

from __future__ import annotations

import asyncio
import logging
import time

from spotstack.runtime.backoff import Backoff
from spotstack.runtime.jobs.queue import Delivery, TaskQueue
from spotstack.runtime.jobs.store import ResultStore
from spotstack.runtime.jobs.worker_state import Running, WorkerSettings

log = logging.getLogger("spotstack.jobs")


async def heartbeat(r: Running, tasks: TaskQueue, store: ResultStore | None, s: WorkerSettings) -> float:
    """Runs until cancelled; returns only for a training run at the queue's hold limit, with the deadline by which it
    must be checkpointed and back in the queue (the caller rolls it over)."""
    every = max(1.0, s.lease_s / 3)
    hold: float | None = getattr(tasks, "max_hold_s", None)
    # SQS and MNS keep a message hidden at most 12 h from its receipt, however often it is extended: before
    # then a training run checkpoints and goes back to the queue (resumed at once, here or elsewhere); any
    # other task would be handed to a second worker, which is said once.
    margin = min(max(3 * s.lease_s, 300.0), hold / 2) if hold else 0.0
    warned = False
    while True:
        await asyncio.sleep(every)
        if hold and time.time() >= r.started_at + hold - margin and not r.leaving:
            if r.task.training:
                return r.started_at + hold - every
            if not warned:
                log.warning(
                    "task %s nears the queue's %.0f h hold limit: another worker may take it too",
                    r.task.id,
                    hold / 3600,
                )
                warned = True
        try:
            await asyncio.to_thread(tasks.extend, r.delivery, s.lease_s)
            if r.claimed and store is not None:
                await asyncio.to_thread(store.claim, r.task.id, s.node, time.time() + 2 * s.lease_s)
        except Exception as exc:
            log.warning(
                "task %s: its lease could not be extended (%s): the queue may hand it to another worker while it "
                "runs here",
                r.task.id,
                exc,
            )


async def delete_done(tasks: TaskQueue, d: Delivery) -> None:
    """A finished task's message goes, retried while its lease holds: one left behind would come back and, with
    no store to say it was done, run again until the queue dead-lettered a task that succeeded."""
    backoff = Backoff(0.5, 4.0)
    for attempt in range(4):
        try:
            await asyncio.to_thread(tasks.delete, d)
            return
        except Exception as exc:
            if attempt == 3:
                log.error("task %s is done, but deleting its message failed: %s", d.task.id if d.task else "?", exc)
                return
            await asyncio.sleep(backoff.next())
