"""The pull's request manager (runtime/cache/requests.py) on its own, with an injected clock: which chunk goes to
which source, the buffer rule, a busy peer's back-off, a swarm owner's grace, a chunk with no source left, and a
worker that waits for a change instead of polling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spotstack.runtime.cache import schedule
from spotstack.runtime.cache.requests import BUSY_BACKOFF_S, Assignment, Requests
from spotstack.runtime.cache.sources import ChunkFailed

CHUNK = 16


@dataclass
class Entry:
    path: str
    key: str
    chunks: list[str]


@dataclass
class Job:
    """What the manager reads of a file's job (runtime/cache/assemble.py FileJob)."""

    entry: Entry
    hashed: int = 0
    stored: set[int] = field(default_factory=set)
    finished: bool = False

    def todo(self) -> list[int]:
        return [i for i in range(len(self.entry.chunks)) if i not in self.stored]

    def span(self, i: int) -> tuple[int, int]:
        return i * CHUNK, CHUNK

    def advance_hash(self, release: object) -> bool:
        while self.hashed in self.stored:
            self.hashed += 1
        return self.hashed == len(self.entry.chunks)

    def finish(self) -> None:
        self.finished = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def manager(
    jobs: list[Job], holders: dict[str, set[str]], *, buffers: int | None = 4, swarm: schedule.Swarm | None = None
) -> tuple[Requests, Clock]:
    clock = Clock()
    src = schedule.Sources(holders, per_peer_limit=1, origin_limit=2, swarm=swarm)
    r = Requests(jobs, src, CHUNK, buffers, has_origin=True, max_attempts=6, max_busy_waits=3, clock=clock)  # type: ignore[arg-type]
    return r, clock


def job(name: str, n: int) -> Job:
    return Job(Entry(name, f"key-{name}", [f"{name}{i}" for i in range(n)]))


def test_chunks_go_round_robin_over_files_to_their_holders_then_the_origin() -> None:
    a, b = job("a", 2), job("b", 2)
    r, _ = manager([a, b], {"a0": {"peer-1"}})
    got = [r.poll() for _ in range(3)]
    assert all(isinstance(g, Assignment) for g in got)
    picks = [(g.request.job.entry.path, g.request.index, g.source) for g in got if isinstance(g, Assignment)]
    # a0 from the peer that holds it; b0 and a1 from the origin (two slots), round-robin over the files.
    assert picks == [("a", 0, "peer-1"), ("b", 0, "origin"), ("a", 1, "origin")]
    assert r.poll() is None  # b1: the origin's two slots are taken, nothing else holds it: wait for a change


def test_without_a_free_buffer_only_the_chunk_a_hash_waits_on_goes() -> None:
    a = job("a", 3)
    r, _ = manager([a], {}, buffers=1)
    first = r.poll()
    assert isinstance(first, Assignment) and first.request.index == 0 and not r.free
    # a1 and a2 would need a pooled buffer; a0 is the one the file's hash waits on, and it is out already.
    second = r.poll()
    assert second is None or (isinstance(second, Assignment) and second.request.index == a.hashed)
    r.failed(first, ChunkFailed("reset"), fatal=False, busy=False)
    again = r.poll()
    assert isinstance(again, Assignment) and again.request.index == 0 and again.request.attempts == 1


def test_streamed_chunks_hold_no_buffer_and_wait_on_none() -> None:
    # Without a file sha256 to feed in order, chunks stream into their files: no pooled buffer is made or
    # waited for, so as many go at once as the sources allow (here the origin's two slots and two peers).
    a = job("a", 6)
    r, _ = manager([a], {"a0": {"peer-1"}, "a1": {"peer-2"}}, buffers=None)
    got = [r.poll() for _ in range(4)]
    assert all(isinstance(g, Assignment) and g.buffer is None for g in got)
    assert not r.free and r.poll() is None  # the sources' slots are full: wait for a change
    first = got[0]
    assert isinstance(first, Assignment)
    r.failed(first, ChunkFailed("reset"), fatal=False, busy=False)
    assert not r.free  # nothing to give back


def test_a_chunk_only_a_busy_peer_holds_backs_off_then_asks_it_again() -> None:
    a = job("a", 1)
    r, clock = manager([a], {"a0": {"peer-1"}})
    r.src.has_origin = False
    first = r.poll()
    assert isinstance(first, Assignment) and first.source == "peer-1"
    r.failed(first, ChunkFailed("all slots taken", busy=True), fatal=False, busy=True)
    assert r.poll() == clock.now + BUSY_BACKOFF_S  # when to look again: no busy loop meanwhile
    clock.now += BUSY_BACKOFF_S
    again = r.poll()
    assert isinstance(again, Assignment) and again.source == "peer-1" and again.request.busy_waits == 1


def test_a_chunk_owned_by_another_joiner_waits_for_it_then_goes_to_the_origin() -> None:
    a = job("a", 1)
    members = ("me:1", "other:1")
    owner = schedule.owner(members, "a0")
    me = next(m for m in members if m != owner)  # this node is not the chunk's owner
    swarm = schedule.Swarm(me, members, wait_s=30.0)
    r, clock = manager([a], {}, swarm=swarm)
    assert r.poll() == clock.now + 30.0  # deferred to its owner, until the grace runs out
    r.learned(owner, {"a0"})  # the owner has it now: taken from the owner at once
    got = r.poll()
    assert isinstance(got, Assignment) and got.source == owner

    b = job("b", 1)
    swarm = schedule.Swarm(me, members, wait_s=30.0)
    r, clock = manager([b], {}, swarm=swarm)
    if schedule.owner(members, "b0") == me:
        return  # owned here: read from the origin at once (covered above by the other chunk)
    assert isinstance(r.poll(), float)
    clock.now += 30.0
    got = r.poll()
    assert isinstance(got, Assignment) and got.source == schedule.ORIGIN


def test_a_chunk_with_no_source_left_ends_the_pull_with_its_last_failure() -> None:
    a = job("a", 1)
    r, _ = manager([a], {"a0": {"peer-1"}})
    r.src.has_origin = False
    got = r.poll()
    assert isinstance(got, Assignment)
    r.failed(got, ChunkFailed("corrupt bytes (hash mismatch)", fatal=True), fatal=True, busy=False)
    assert r.take() is None and r.over()
    assert r.errors == ["a chunk 0: no source left (last: peer peer-1: corrupt bytes (hash mismatch))"]
    assert "peer-1" in r.src.banned


def test_a_waiting_worker_is_woken_by_a_change_and_the_last_chunk_ends_the_pull() -> None:
    a = job("a", 2)
    r, _ = manager([a], {"a0": {"peer-1"}, "a1": {"peer-1"}})
    r.src.has_origin = False
    first = r.poll()
    assert isinstance(first, Assignment) and first.request.index == 0
    # a1's only holder has its one slot taken: nothing to ask and no time to wait for (no busy loop either).
    assert r.poll() is None and not r.over()
    taken: list[Assignment | None] = []
    worker = threading.Thread(target=lambda: taken.append(r.take()))
    worker.start()
    a.stored.add(0)
    r.done(first, CHUNK)  # the slot is free again: the waiting worker is woken and takes a1
    worker.join(timeout=30)
    assert not worker.is_alive() and isinstance(taken[0], Assignment) and taken[0].request.index == 1
    a.stored.add(1)
    progress = r.done(taken[0], CHUNK)
    assert progress.done == 2 * CHUNK == progress.total and r.over() and a.finished
    assert r.take() is None and r.finished == {id(a)}


def test_a_chunk_stored_while_another_worker_hashes_its_file_is_hashed_by_that_worker(tmp_path: Path) -> None:
    """Worker B stores chunk 1 while worker A holds the file's hash lock: B cannot take the lock and leaves the chunk
    to A, which must hash it before it returns (else the file's last chunk waited for a call that never came)."""
    from spotstack.runtime.cache.assemble import FileJob
    from spotstack.runtime.cache.manifest import build_manifest
    from spotstack.runtime.cache.store import Store

    src = tmp_path / "model"
    src.mkdir()
    size = 1 << 20  # the smallest chunk a manifest takes
    data = bytes(range(256)) * (2 * size // 256)  # two chunks
    (src / "w.bin").write_bytes(data)
    entry = build_manifest(str(src), chunk_size=size).files[0]
    job = FileJob(Store(tmp_path / "store", 1 << 24), entry, size)
    released: list[bytearray] = []
    real = job._hash_contiguous
    b_said: list[bool] = []

    def a_hashing(n: int, release: Callable[[bytearray], None]) -> bool:
        done = real(n, release)
        if not b_said:  # B's chunk arrives now, while A holds the lock
            job.store_chunk(1, memoryview(data[size:]), bytearray(data[size:]))
            b_said.append(job.advance_hash(released.append))
        return done

    job._hash_contiguous = a_hashing  # type: ignore[method-assign]
    job.store_chunk(0, memoryview(data[:size]), bytearray(data[:size]))
    assert job.advance_hash(released.append) is True  # A hashed B's chunk too: the file is whole
    assert b_said == [False] and job.hashed == 2 and len(released) == 2
    job.finish()
    assert Path(job.store.file_path(entry.key)).read_bytes() == data


def runs_manager(jobs: list[Job], holders: dict[str, set[str]], run: int = 4) -> Requests:
    src = schedule.Sources(holders, per_peer_limit=1, origin_limit=2)
    return Requests(
        jobs,  # type: ignore[arg-type]
        src,
        CHUNK,
        None,
        has_origin=True,
        max_attempts=6,
        max_busy_waits=3,
        clock=Clock(),
        run_of=lambda source: run if source.startswith("peer") else 1,
    )


def test_a_run_takes_the_chunks_that_follow_in_the_file_while_its_peer_holds_them_and_one_slot() -> None:
    a = job("a", 6)
    holds = {f"a{i}": {"peer-1"} for i in (0, 1, 2, 4, 5)}  # not a3
    r = runs_manager([a], holds)
    run = r.take_run()
    assert run is not None and [x.request.index for x in run] == [0, 1, 2] and {x.source for x in run} == {"peer-1"}
    assert [x.holds_slot for x in run] == [False, False, True] and r.src.busy["peer-1"] == 1  # one connection
    nxt = r.take_run()  # a3: only the origin has it, and the origin sends no runs
    assert nxt is not None and [(x.request.index, x.source) for x in nxt] == [(3, schedule.ORIGIN)]
    for x in run[:2]:
        r.done(x, CHUNK)
    assert r.src.busy["peer-1"] == 1  # the connection is still busy with the run's last chunk
    r.done(run[2], CHUNK)
    assert r.src.busy["peer-1"] == 0
    last = r.take_run()
    assert last is not None and [x.request.index for x in last] == [4, 5]


def test_a_run_broken_off_fails_the_chunk_it_struck_and_gives_the_rest_back_untried() -> None:
    a = job("a", 4)
    r = runs_manager([a], {f"a{i}": {"peer-1", "peer-2"} for i in range(4)})
    run = r.take_run()
    assert run is not None and len(run) == 4
    r.done(run[0], CHUNK)
    for x in reversed(run[2:]):
        r.give_back(x)
    r.failed(run[1], ChunkFailed("corrupt bytes (hash mismatch)", fatal=True), fatal=True, busy=False)
    assert r.src.busy[run[0].source] == 0 and run[0].source in r.src.banned
    assert [(q.index, q.attempts, q.tried) for q in r.queue] == [
        (1, 1, frozenset({run[0].source})),
        (2, 0, frozenset()),
        (3, 0, frozenset()),
    ]
    again = r.take_run()  # from the other peer, as one run again
    assert again is not None and [x.request.index for x in again] == [1, 2, 3] and again[0].source != run[0].source


def test_chunks_a_peer_would_not_send_as_a_run_are_asked_alone() -> None:
    a = job("a", 3)
    r = runs_manager([a], {f"a{i}": {"peer-1"} for i in range(3)})
    run = r.take_run()
    assert run is not None and len(run) == 3
    for x in reversed(run):
        r.give_back(x, alone=True)
    assert r.src.busy["peer-1"] == 0 and r.progress.refetched == 0
    single = r.take_run()
    assert single is not None and [x.request.index for x in single] == [0] and single[0].holds_slot
