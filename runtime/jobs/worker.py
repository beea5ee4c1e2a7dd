"""The worker in the node agent: takes tasks while the node is READY, runs them, answers for each.

- A task is taken only while the node is READY and a slot is free (`concurrency`); its lease is extended
  every `lease/3` while it runs (heartbeats), so a long task is never handed to a second worker.
- Done: the result is written (result store, then output queue) before the task is deleted: a node that
  dies in between leaves a duplicate, never a lost result (at-least-once; results are keyed by id). A task
  whose result is already stored is not run again: its stored result is published (again) and it is deleted.
- Failed: stored, then given back after a delay with `failures + 1`; the attempt that reaches `max_attempts`
  sends it to the dead-letter queue instead, and only then is stored as failed. Whatever point a node dies at, the
  queues hold a copy of the task that the store does not call stale.
- Spot notice (`preempted`): no task is taken from that moment; training runs are told to checkpoint within
  the notice's budget; every unfinished task is given back at once with its counts (`preemptions + 1`, not a
  failure), so another replica takes it without waiting for a lease to run out.
- Scale-in (`leave`, `finish`): no task is taken; running ones may finish within the drain, and what is
  still running when the drain's wait ends is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from spotstack.runtime.backoff import Backoff
from spotstack.runtime.jobs import claims
from spotstack.runtime.jobs.checkpoint import latest_step
from spotstack.runtime.jobs.lease import delete_done, heartbeat
from spotstack.runtime.jobs.protection import Protection, ProtectionKeeper
from spotstack.runtime.jobs.queue import Delivery, ResultQueue, TaskQueue
from spotstack.runtime.jobs.runner import Outcome
from spotstack.runtime.jobs.store import ResultStore
from spotstack.runtime.jobs.task import Counts, Result
from spotstack.runtime.jobs.worker_state import Running, Stats, WorkerSettings, make_run

log = logging.getLogger("spotstack.jobs")


class Worker:
    name = "jobs"

    def __init__(
        self,
        tasks: TaskQueue,
        results: ResultQueue,
        store: ResultStore | None,
        settings: WorkerSettings,
        *,
        ready: Callable[[], Awaitable[bool]],
        session: aiohttp.ClientSession | None = None,
        protection: Protection | None = None,
    ) -> None:
        self.tasks, self.results, self.store, self.s = tasks, results, store, settings
        self._ready, self._session = ready, session
        self._keeper = ProtectionKeeper(protection, lambda: bool(self.running)) if protection is not None else None
        self.running: dict[str, Running] = {}
        self.accepting = True
        self.stats = Stats()
        self._loop_task: asyncio.Task[None] | None = None
        self._freed = asyncio.Event()
        self._stopping = False
        self._side: set[asyncio.Task[None]] = set()

    # -- contracts the drain uses: Rotation (leave), Inflight (count) ---------------------------
    async def leave(self) -> None:
        """Stop taking tasks (the node leaves rotation)."""
        self.accepting = False

    async def count(self) -> int:
        return len(self.running)

    async def give_back_all(self, deadline: float | None = None, reason: str = "drained") -> None:
        """What is still running when the drain's wait ends goes back to the queue (training runs checkpoint
        first, within the deadline)."""
        await self.hand_back(deadline or time.time(), time.time(), reason)

    # -- notice -----------------------------------------------------------------------------------
    async def preempted(self, deadline: float, seen_at: float | None = None) -> None:
        """A spot notice: take nothing more; training runs checkpoint within the budget; give back the rest."""
        await self.hand_back(deadline, seen_at or time.time(), "spot notice")

    async def hand_back(self, deadline: float, seen: float, reason: str) -> None:
        self.accepting = False
        for r in self.running.values():
            r.leaving = True
        told = [r for r in self.running.values() if r.run.checkpoint(deadline)]
        if told:
            # The run ends on its own once its checkpoint is saved; keep a margin to give the task back.
            budget = max(0.0, deadline - time.time() - 5.0)
            futures = [r.future for r in told if r.future is not None]
            if futures and budget > 0:
                await asyncio.wait(futures, timeout=budget)
        await asyncio.gather(*(self._give_back(r, seen, reason) for r in list(self.running.values())))

    async def _give_back(self, r: Running, seen: float, reason: str, *, preempted: bool = True) -> None:
        if r.given_back:
            return
        if r.handing_on:
            # Its attempt is over and its answer on the way (result, give-back or dead-letter): cut off half-way, the
            # store could record an attempt whose copy never reached the queue. It is let finish, as it would anyway.
            if r.future is not None:
                await asyncio.wait([r.future], timeout=max(1.0, self.s.lease_s))
            self._ended(r)
            return
        r.given_back = True
        if r.future is not None and not r.future.done():
            r.future.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await r.future
        counts = r.delivery.counts
        if preempted:
            counts = counts.model_copy(update={"preemptions": counts.preemptions + 1})
        try:
            await asyncio.to_thread(self.tasks.give_back, r.delivery, counts)
            if preempted:
                self.stats.given_back += 1
                self.stats.give_back_s.append(time.time() - seen)
            log.warning("task %s given back (%s)", r.task.id, reason)
        except Exception as exc:  # its lease runs out and it comes back anyway, only later
            log.error("giving back task %s failed: %s", r.task.id, exc)
        self._ended(r)

    # -- the loop ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.store is None:
            log.warning("jobs: no result store: a task delivered twice (the queue's at-least-once) may run twice")
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """End the loop once its receive returns (within `wait_s`): a receive abandoned in flight would take
        tasks nobody runs, hidden until their lease runs out. What it got and what still runs go back."""
        self._stopping = True
        self._freed.set()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), self.s.wait_s + 10)
            except asyncio.TimeoutError:
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        if self.running:
            await self.give_back_all(reason="agent stopping")

    async def _loop(self) -> None:
        protect = asyncio.create_task(self._keeper.run()) if self._keeper is not None else None
        backoff = Backoff(0.5, 10.0)
        try:
            while not self._stopping:
                try:
                    if not self.accepting or len(self.running) >= self.s.concurrency or not await self._ready():
                        self._freed.clear()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._freed.wait(), 0.2)
                        continue
                    free = self.s.concurrency - len(self.running)
                    got = await asyncio.to_thread(self.tasks.receive, free, self.s.wait_s, self.s.lease_s)
                    backoff.reset()
                    for d in got:
                        if not self.accepting or self._stopping:  # a notice came during the long poll: straight back
                            await asyncio.to_thread(self.tasks.give_back, d, d.counts)
                        else:
                            self._take(d)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    pause = backoff.next()
                    log.warning("receiving tasks failed: %s; retrying in %.1fs", exc, pause)
                    await asyncio.sleep(pause)
        finally:
            if protect is not None:
                protect.cancel()

    def _take(self, d: Delivery) -> None:
        if d.task is None or (d.task.command is not None and not self.s.task_commands):
            why = (
                "not a task (the body is not a task document)"
                if d.task is None
                else "the task names a command, and this fleet runs only its own handler (jobs.task_commands)"
            )
            self._spawn(self._refuse(d, why))
            return
        if any(r.task.id == d.task.id for r in self.running.values()):
            # A second delivery of a task running here (SQS, Pub/Sub deliver at least once): not run twice at once.
            log.warning("task %s: another delivery while it runs here: held back for %.0fs", d.task.id, self.s.lease_s)
            self._spawn(self._hold(d))
            return
        if d.receives > 1:
            # Give-backs re-send the task, so only a delivery that ended without any answer (a node lost without
            # notice, a lease that ran out) counts here; the queue dead-letters the task at `max_attempts` of them.
            log.warning(
                "task %s: delivery %d (an earlier one ended without an answer, or lost its lease)",
                d.task.id,
                d.receives,
            )
        r = Running(d, d.task, make_run(self.s, self._session, d.task), key=d.handle)
        self.running[r.key] = r
        self._busy_changed()
        r.future = asyncio.create_task(self._handle(r))

    def _spawn(self, work: Awaitable[None]) -> None:
        self._side.add(t := asyncio.ensure_future(work))
        t.add_done_callback(self._side.discard)

    def _ended(self, r: Running) -> None:
        self.running.pop(r.key, None)
        self._busy_changed()
        self._freed.set()

    async def _refuse(self, d: Delivery, why: str) -> None:
        try:
            await asyncio.to_thread(self.tasks.dead_letter, d, d.counts, why)
            self.stats.dead_lettered += 1
            log.error("%s: dead-lettered (%s)", f"task {d.task.id}" if d.task else "a message", why)
        except Exception as exc:
            log.error("dead-lettering a refused message failed: %s", exc)

    async def _hold(self, d: Delivery) -> None:
        """Back to the queue unchanged, visible again after a lease: judged again then (done, or still running)."""
        try:
            await asyncio.to_thread(self.tasks.give_back, d, d.counts, self.s.lease_s)
            self.stats.duplicates += 1
        except Exception as exc:  # its lease runs out and it comes back anyway
            log.error("holding back a duplicate delivery failed: %s", exc)

    async def _heartbeat(self, r: Running) -> None:
        deadline = await heartbeat(r, self.tasks, self.store, self.s)
        # Apart from the heartbeat, which ends with the run: the roll-over waits for the run's checkpoint.
        self._spawn(self._roll_over(r, deadline))

    async def _roll_over(self, r: Running, deadline: float) -> None:
        """A training run at the queue's hold limit: checkpoint, then back to the queue (not a preemption)."""
        r.leaving = True
        if r.run.checkpoint(deadline) and r.future is not None:
            await asyncio.wait([r.future], timeout=max(0.0, deadline - time.time() - 1.0))
        await self._give_back(r, time.time(), "the queue's hold limit", preempted=False)
        self.stats.rolled_over += 1

    async def _handle(self, r: Running) -> None:
        task = r.task
        hb: asyncio.Task[None] | None = None
        try:
            if self.store is not None and not await self._claimed(r):
                return
            # One listing of the task's checkpoints, off the event loop: where it resumes from, and so which command.
            resumed = await asyncio.to_thread(latest_step, self.s.checkpoint_url, task)
            if resumed is not None and self.s.resume_command:
                r.run = make_run(self.s, self._session, task, resuming=True)
            hb = asyncio.create_task(self._heartbeat(r))
            outcome = await r.run.run()
            hb.cancel()
            if r.leaving:
                return  # given back by the notice (or the drain's end)
            await self._answer(r, outcome, resumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the lease runs out and the task comes back: logged, not lost
            log.exception("task %s: %s", task.id, exc)
        finally:
            if hb is not None:
                hb.cancel()
            if r.claimed and self.store is not None:
                with contextlib.suppress(Exception):  # a marker left behind expires on its own
                    await asyncio.to_thread(self.store.release, task.id)
            if not r.leaving:
                self._ended(r)

    async def _claimed(self, r: Running) -> bool:
        """Judge the delivery by what the store holds (claims.py); True when this worker runs it (marker set)."""
        assert self.store is not None
        d, task = r.delivery, r.task
        prior = await asyncio.to_thread(self.store.get, task.id)
        marker = await asyncio.to_thread(self.store.running, task.id)
        action, why = claims.judge(prior, marker, d.counts, self.s.node, time.time())
        if action == "run":
            counts = claims.counted(prior, d.counts)
            if counts != d.counts:
                log.warning("task %s: a copy behind the store's attempt %d: run as the next", task.id, counts.failures)
                d.counts = counts
            await asyncio.to_thread(self.store.claim, task.id, self.s.node, time.time() + 2 * self.s.lease_s)
            r.claimed = True
            return True
        log.warning("task %s: %s: %s", task.id, why, {"done": "answered again", "stale": "deleted"}.get(action, "held"))
        self.stats.duplicates += 1
        if action == "done" and prior is not None:
            # Done before: the node that ran it may have died between storing the result and publishing
            # it, so publish it again (consumers de-duplicate by id), then delete without running.
            await asyncio.to_thread(self.results.publish, task.id, prior.for_queue())
        if action == "hold":
            await asyncio.to_thread(self.tasks.give_back, d, d.counts, self.s.lease_s)
        else:
            await asyncio.to_thread(self.tasks.delete, d)
        return False

    async def _answer(self, r: Running, outcome: Outcome, resumed: int | None) -> None:
        d, task = r.delivery, r.task
        r.handing_on = True
        if outcome.unavailable:  # not the task's fault: another replica (or this one, later) takes it
            await self._let_go(r)
            await asyncio.to_thread(self.tasks.give_back, d, d.counts, self.s.retry_delay_s)
            self.stats.retried += 1
            log.warning("task %s: the workload is unavailable (%s); given back", task.id, outcome.error)
            return
        failures = d.counts.failures + (0 if outcome.ok else 1)
        status = "done" if outcome.ok else ("failed" if failures >= self.s.max_attempts else "retrying")
        result = Result(
            id=task.id,
            status=status,
            output=outcome.output,
            error=outcome.error,
            log_tail=outcome.log_tail,
            attempt=failures + (1 if outcome.ok else 0),
            preemptions=d.counts.preemptions,
            node=self.s.node,
            started_at=r.started_at,
            finished_at=time.time(),
            resumed_from=resumed,
        )
        if status == "done":
            # Stored first: a node that dies before the delete leaves a copy that is answered from the store.
            if self.store is not None:
                await asyncio.to_thread(self.store.put, result)
            await asyncio.to_thread(self.results.publish, task.id, result.for_queue())
            await delete_done(self.tasks, d)
            self.stats.done += 1
        elif status == "failed":
            # Dead-lettered before it is stored as failed: stored first, a node that died in between left only the
            # delivered copy, and the store's "failed" had it deleted as stale when it came back (lost).
            await asyncio.to_thread(self.tasks.dead_letter, d, Counts(failures=failures), outcome.error)
            self.stats.dead_lettered += 1
            log.error("task %s failed %d times: dead-lettered (%s)", task.id, failures, outcome.error)
            if self.store is not None:
                await asyncio.to_thread(self.store.put, result)
        else:
            # Stored before the give-back exists: a copy taken from it (and any second copy of it, a SendMessage
            # retried after a lost answer) is judged against this attempt. A node that dies in between leaves its
            # delivered copy, which runs again counted from the store's attempt (claims.counted).
            if self.store is not None:
                await asyncio.to_thread(self.store.put, result)
            counts = d.counts.model_copy(update={"failures": failures})
            await self._let_go(r)  # a give-back with no delay is visible at once: this worker may take it itself
            await asyncio.to_thread(self.tasks.give_back, d, counts, self.s.retry_delay_s * failures)
            self.stats.retried += 1
            log.warning("task %s failed (attempt %d of %d): %s", task.id, failures, self.s.max_attempts, outcome.error)

    async def _let_go(self, r: Running) -> None:
        """The attempt is over here: its claim and its slot go."""
        if r.claimed and self.store is not None:
            with contextlib.suppress(Exception):  # a marker left behind expires on its own
                await asyncio.to_thread(self.store.release, r.task.id)
            r.claimed = False
        self._ended(r)

    def _busy_changed(self) -> None:
        if self._keeper is not None:
            self._keeper.changed.set()

    def status(self) -> dict[str, object]:
        return {
            "accepting": self.accepting,
            "running": sorted(r.task.id for r in self.running.values()),
            "protected": self._keeper.protected if self._keeper is not None else False,
            "done": self.stats.done,
            "retried": self.stats.retried,
            "dead_lettered": self.stats.dead_lettered,
            "given_back": self.stats.given_back,
            "duplicates": self.stats.duplicates,
        }
