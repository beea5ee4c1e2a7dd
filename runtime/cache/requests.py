"""The pull's request manager: which chunk is asked of which source next, and what a result or a failure changes.

Bookkeeping only, under one condition: the chunks still wanted (round-robin over files, so each file's hash
advances while the others download), the chunk buffers, the sources' transfer slots (`schedule.Sources`), retries
and the pull's progress. The fetch workers (runtime/cache/pull.py) do the I/O: each takes an assignment, fetches,
and reports the result. Nothing polls: a worker with nothing to do waits on the condition until a result, a failure,
a freed buffer or a peer's new inventory changes what can be asked, or until the earliest time-bound wait runs out (a
busy peer's back-off, a swarm owner's grace), read from an injected clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from spotstack.runtime.cache import schedule
from spotstack.runtime.cache.assemble import FileJob, PullError
from spotstack.runtime.cache.options import Progress

BUSY_BACKOFF_S = 0.1
"""How long a chunk that only a busy peer holds waits before it is asked of that peer again."""


@dataclass(frozen=True)
class Request:
    """One chunk still wanted, with what its earlier tries taught."""

    job: FileJob
    index: int
    tried: frozenset[str] = frozenset()
    """Sources this chunk will not be asked of again (the origin gets three tries)."""
    attempts: int = 0
    busy_waits: int = 0
    not_before: float = 0.0
    """A busy peer's back-off: not asked before this (clock time)."""
    alone: bool = False
    """Asked by itself, never as part of a run (a peer would not send it in one)."""

    @property
    def digest(self) -> str:
        return self.job.entry.chunks[self.index]


@dataclass(frozen=True)
class Assignment:
    request: Request
    source: str
    buffer: bytearray | None
    """Where the chunk is received whole (None: it streams into its file, `Requests(buffers=None)`)."""
    asked_at: float
    holds_slot: bool = True
    """Whether this chunk's end frees its source's transfer slot: in a run (several chunks in one answer) only the
    last one's does, the others' come over the same connection."""


class Requests:
    def __init__(
        self,
        jobs: Sequence[FileJob],
        sources: schedule.Sources,
        chunk_size: int,
        buffers: int | None,
        *,
        has_origin: bool,
        max_attempts: int,
        max_busy_waits: int,
        clock: Callable[[], float] = time.monotonic,
        run_of: Callable[[str], int] = lambda source: 1,
    ) -> None:
        self.src, self.chunk_size, self.clock = sources, chunk_size, clock
        self.run_of = run_of
        """How many chunks a source sends in one answer (a peer's /v1/runs); 1: one at a time."""
        self.has_origin, self.max_attempts, self.max_busy_waits = has_origin, max_attempts, max_busy_waits
        self.cond = threading.Condition()
        self.jobs = list(jobs)
        self.queue: deque[Request] = deque()
        todo = [(j, j.todo()) for j in jobs]
        for k in range(max((len(t) for _, t in todo), default=0)):
            for j, t in todo:
                if k < len(t):
                    self.queue.append(Request(j, t[k]))
        self.queued: dict[tuple[int, int], Request] = {(id(r.job), r.index): r for r in self.queue}
        self.pending = len(self.queue)
        self.progress = Progress(total=sum(r.job.span(r.index)[1] for r in self.queue))
        self.buffered = buffers is not None
        """Whether chunks are received whole into pooled buffers: only where a file's sha256 must see them in order
        (a chunk that arrives early waits in its buffer). Otherwise each streams into its file as it is hashed."""
        self.free: list[bytearray] = []
        self.unmade = buffers or 0
        """Buffers of the pool not allocated yet: made on first use (a bytearray is zeroed when made, and a pull of a
        few chunks would otherwise zero width x 2 chunks of memory it never uses)."""
        self.errors: list[str] = []
        self.last_failure: dict[tuple[str, int], str] = {}
        """Each chunk's latest failure, for the error when no source is left (the origin's short read, a 401)."""
        self.finished: set[int] = set()

    # -- the workers' side -------------------------------------------------------------------------------------
    def take(self) -> Assignment | None:
        """Block until a chunk has a source and a buffer; None once the pull is over (every chunk in, or failed)."""
        with self.cond:
            while True:
                got = self.poll()
                if isinstance(got, Assignment):
                    return got
                if self.over():
                    return None
                # Nothing can be asked now: wait for a change, or for the earliest time-bound wait to run out.
                self.cond.wait(None if got is None else max(0.0, got - self.clock()))

    def take_run(self) -> list[Assignment] | None:
        """As `take`, with the chunks that follow the first in its file, where its source holds them and sends runs:
        one answer for all of them (streamed chunks only; buffered ones go alone)."""
        first = self.take()
        if first is None:
            return None
        with self.cond:
            return self._extend(first)

    def _extend(self, a: Assignment) -> list[Assignment]:
        req, source = a.request, a.source
        run = [a]
        if self.buffered or source == schedule.ORIGIN or req.alone:
            return run
        for k in range(1, self.run_of(source)):
            nxt = self.queued.get((id(req.job), req.index + k))
            if (
                nxt is None
                or nxt.alone
                or nxt.not_before > a.asked_at
                or source in nxt.tried
                or source not in self.src.holders.get(nxt.digest, ())
            ):
                break
            self.queue.remove(nxt)
            del self.queued[(id(nxt.job), nxt.index)]
            run.append(Assignment(nxt, source, None, a.asked_at, holds_slot=False))
        if len(run) > 1:  # the slot goes with the last chunk: the connection is busy until then
            run[0], run[-1] = replace(run[0], holds_slot=False), replace(run[-1], holds_slot=True)
        return run

    def over(self) -> bool:
        return self.pending == 0 or bool(self.errors)

    def poll(self) -> Assignment | float | None:
        """What can be asked now (the caller holds `cond`): an assignment; else when to look again (clock time),
        None meaning at the next change. Over, it is None too (`over()` says). Records a chunk with no source left
        as the pull's error."""
        if self.over():
            return None
        now = self.clock()
        wake: float | None = None
        # Without a free buffer, only a chunk a file's hash is waiting on may go (it gets a buffer of its own), so
        # early chunks holding every buffer cannot starve the one they wait on.
        candidates = (
            list(self.queue)
            if self.free or self.unmade or not self.buffered
            else [r for j in self.jobs if (r := self.queued.get((id(j), j.hashed))) is not None]
        )
        for req in candidates:
            if req.not_before > now:
                wake = req.not_before if wake is None else min(wake, req.not_before)
                continue
            source = schedule.choose(self.src, req.digest, set(req.tried), now)
            if source is None:
                if schedule.exhausted(self.src, req.digest, set(req.tried), now) or req.attempts >= self.max_attempts:
                    self._no_source(req)
                    return None
                swarm = self.src.swarm
                since = swarm.waiting.get(req.digest) if swarm is not None else None
                if swarm is not None and since is not None:  # deferred to its owner: until the grace runs out
                    wake = since + swarm.wait_s if wake is None else min(wake, since + swarm.wait_s)
                continue
            self.queue.remove(req)
            del self.queued[(id(req.job), req.index)]
            buf: bytearray | None = None  # unbuffered: the chunk streams into its file
            if self.buffered and self.free:
                buf = self.free.pop()
            elif self.buffered:
                self.unmade = max(0, self.unmade - 1)  # past the pool: the chunk a file's hash waits on
                buf = bytearray(self.chunk_size)
            self.src.busy[source] = self.src.busy.get(source, 0) + 1
            return Assignment(req, source, buf, now)
        return wake

    def _no_source(self, req: Request) -> None:
        why = self.last_failure.get((req.job.entry.key, req.index))
        nothing = "no peer holds it" + ("" if self.has_origin else ", and no origin was given")
        detail = f"last: {why}" if why else nothing
        self.errors.append(f"{req.job.entry.path} chunk {req.index}: no source left ({detail})")
        self.cond.notify_all()

    def release(self, buf: bytearray | None) -> None:
        """A buffer back to the pool (the file's hash has taken its chunk)."""
        if buf is None:
            return
        with self.cond:
            self.free.append(buf)
            self.cond.notify()

    def done(self, a: Assignment, size: int) -> Progress:
        """A chunk verified and stored: its file's hash advances (finishing the file when it is all in); returns the
        progress as of this chunk (for the caller's callback, outside the lock)."""
        job = a.request.job
        finished = False
        if job.advance_hash(self.release):
            with self.cond:
                finished = id(job) not in self.finished
                self.finished.add(id(job))
        if finished:
            try:
                job.finish()
            except PullError as exc:
                with self.cond:
                    self.errors.append(str(exc))
        with self.cond:
            p = self.progress
            self.src.busy[a.source] -= a.holds_slot
            p.done += size
            p.by_source[a.source] = p.by_source.get(a.source, 0) + size
            p.last_chunk = (a.source, size, self.clock() - a.asked_at)
            p.banned = set(self.src.banned)
            self.pending -= 1
            # The finishing worker asks again itself: others need waking only for the end (or an error).
            self.cond.notify_all() if self.over() else self.cond.notify()
            return replace(p, by_source=dict(p.by_source))

    def failed(self, a: Assignment, failure: Exception, *, fatal: bool, busy: bool) -> None:
        """A fetch that failed: the chunk is asked again, of another source where one is left."""
        req, source = a.request, a.source
        with self.cond:
            if a.buffer is not None:
                self.free.append(a.buffer)
            self.src.busy[source] -= a.holds_slot
            self.progress.refetched += 1
            what = "the origin" if source == schedule.ORIGIN else f"peer {source}"
            self.last_failure[(req.job.entry.key, req.index)] = f"{what}: {failure}"
            if busy and not schedule.exhausted(self.src, req.digest, set(req.tried | {source})):
                # A peer with every transfer slot taken: another source has it, ask that one.
                again = replace(req, tried=req.tried | {source})
            elif busy and req.busy_waits < self.max_busy_waits:
                # Only this busy peer has it: back off a little rather than fail.
                again = replace(req, busy_waits=req.busy_waits + 1, not_before=self.clock() + BUSY_BACKOFF_S)
            else:
                schedule.record_failure(self.src, source, fatal=fatal)
                # The origin gets three tries per chunk; a peer that failed this chunk, none.
                tried = req.tried if source == schedule.ORIGIN and req.attempts < 2 else req.tried | {source}
                again = replace(req, tried=frozenset(tried), attempts=req.attempts + 1)
            self._first_in_line(again)

    def give_back(self, a: Assignment, *, alone: bool = False) -> None:
        """A chunk of a run that was not received (the run broke off before it): first in line again, no try
        counted; `alone`: asked by itself from now on (the peer would not send the run)."""
        with self.cond:
            self.src.busy[a.source] -= a.holds_slot
            self._first_in_line(replace(a.request, alone=a.request.alone or alone))

    def _first_in_line(self, req: Request) -> None:
        """Back at the front (the caller holds `cond`): the oldest chunk wanted, the one its file's hash is likeliest
        to wait on."""
        self.queue.appendleft(req)
        self.queued[(id(req.job), req.index)] = req
        self.cond.notify_all()

    def fail(self, message: str) -> None:
        """The pull cannot go on (a full cache, an internal error): every worker stops."""
        with self.cond:
            self.errors.append(message)
            self.cond.notify_all()

    # -- the swarm's side ------------------------------------------------------------------------------------
    def learned(self, peer: str, chunks: set[str]) -> None:
        """A peer's inventory grew: what it holds may be asked of it now. Those chunks go first in line (a scan finds
        them at once, not behind chunks still waiting), and as many workers are woken as chunks became askable."""
        with self.cond:
            for h in chunks:
                self.src.holders.setdefault(h, set()).add(peer)
            askable: list[Request] = []
            rest: list[Request] = []
            for r in self.queue:  # one pass: a remove() per chunk would rescan the queue each time
                (askable if r.digest in chunks else rest).append(r)
            self.queue = deque(askable + rest)
            self.cond.notify(len(askable))

    def settle(self, *, final: bool) -> None:
        """Move into the store every file whose chunks are all in and hashed but which no worker finished: before
        the workers start, the files a resumed pull already holds whole; after they stop (`final`), any left
        behind, and a file still missing a chunk is the pull's error."""
        for j in self.jobs:
            if id(j) in self.finished or (j.todo() and not final):
                continue
            if j.advance_hash(self.release):
                j.finish()
                self.finished.add(id(j))
            elif final:
                self.errors.append(f"{j.entry.path}: not every chunk arrived")
