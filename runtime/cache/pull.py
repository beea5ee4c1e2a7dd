"""Pull a model into the store from peers (and the origin for what no peer has), then into --dest.

Each chunk is hashed as it arrives (BLAKE3; xxh3-128 for version 1 manifests), 1 MiB at a time, and each piece written
in place into the partial file in the memory-backed store while it is still in the CPU's cache; the chunk is marked
servable once its hash checks. Where a file's sha256 is checked too (version 1 manifests), chunks are received whole
into pooled buffers instead, written once checked and fed to the sha256 in order (a chunk that arrives early waits
in its buffer). Fetches run in threads (socket reads
and hashing release the GIL), several per peer, spread over the peers that hold each chunk, same-zone peers first;
in a swarm, chunks no peer has yet wait for their owner (`schedule.Swarm`). A chunk that fails — a dead peer,
corrupt bytes, a stall — is fetched again from another peer or the origin. A complete file is renamed into the
store, then placed into --dest (`place.py`): the model server never sees a partial file.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from spotstack.runtime.cache import schedule
from spotstack.runtime.cache.assemble import FileJob, PullError
from spotstack.runtime.cache.inventory import Following
from spotstack.runtime.cache.manifest import Manifest
from spotstack.runtime.cache.options import Progress, PullOptions, PullResult
from spotstack.runtime.cache.place import (
    PLACED,
    TMP_MARK,
    clean_leftovers,
    materialize,
    placed_files,
    record_placed,
    same_fs,
)
from spotstack.runtime.cache.requests import Assignment, Requests
from spotstack.runtime.cache.sources import ChunkFailed, Origin, Peer, usable_peers
from spotstack.runtime.cache.store import Store

__all__ = [
    "TMP_MARK",
    "ChunkFailed",
    "Origin",
    "Progress",
    "PullError",
    "PullOptions",
    "PullResult",
    "clean_leftovers",
    "pull",
]


def pull(
    store: Store,
    manifest: Manifest,
    dest: str | Path,
    *,
    peers: list[str],
    token: str,
    origin: Origin | None,
    options: PullOptions | None = None,
    progress: Callable[[Progress], None] = lambda p: None,
    free_bytes: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
    waiting: Callable[[str], None] = lambda message: None,
) -> PullResult:
    """Pull `manifest` into `store` and place it in `dest`. One pull changes a store at a time (`Store.writer`):
    another waits, is told so through `waiting`, and then finds in the store what the first one verified."""
    opts = options or PullOptions()
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise PullError(f"the destination {dest} is a file; give a folder (it is created if missing)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PullError(f"cannot create the destination {dest}: {exc.strerror or exc}") from None
    started = time.monotonic()
    with store.writer(waiting):
        clean_leftovers(dest)
        return _pull_locked(store, manifest, dest, peers, token, origin, opts, progress, free_bytes, started)


def _pull_locked(
    store: Store,
    manifest: Manifest,
    dest: Path,
    peers: list[str],
    token: str,
    origin: Origin | None,
    opts: PullOptions,
    progress: Callable[[Progress], None],
    free_bytes: Callable[[Path], int],
    started: float,
) -> PullResult:
    store.add_manifest(manifest)
    store.pin(manifest.model_id)
    kept = placed_files(dest, manifest)
    (dest / PLACED).unlink(missing_ok=True)  # rewritten once every file is in place again
    # Bytes whose every copy in dest is already in place need no fetch.
    still_needed = {f.key for f in manifest.files if f.path not in kept}

    # The store is addressed by content: files with the same bytes (or two empty files) are one job.
    unique = list({f.key: f for f in manifest.files if f.key in still_needed}.values())
    missing = [f for f in unique if not store.has_file(f)]
    need = sum(f.size for f in missing)
    store.make_room(need, keep={f.key for f in manifest.files})
    if not same_fs(store.root, dest):
        to_copy = sum(f.size for f in manifest.files if f.path not in kept)
        free = free_bytes(dest)
        if free < to_copy:
            raise PullError(f"destination {dest} has {free / 1e9:.2f} GB free, the model needs {to_copy / 1e9:.2f} GB")

    check_files = not manifest.cryptographic if opts.verify_sha256 is None else opts.verify_sha256
    jobs = [FileJob(store, f, manifest.chunk_size, check_files, manifest.digest) for f in missing]
    prog = _fetch_all(jobs, manifest, peers, token, origin, opts, progress)
    for f in manifest.files:
        if f.path not in kept:
            materialize(store, f, dest)
    record_placed(dest, manifest)
    cached = sum(f.size for f in unique) - need
    on_disk = sum(f.size for f in manifest.files if f.path in kept)
    return PullResult(manifest, dest, prog, time.monotonic() - started, cached, on_disk)


def _fetch_all(
    jobs: list[FileJob],
    manifest: Manifest,
    peers: list[str],
    token: str,
    origin: Origin | None,
    opts: PullOptions,
    progress: Callable[[Progress], None],
) -> Progress:
    by_name: dict[str, Peer] = {}
    holders: dict[str, set[str]] = {}
    wanted = {j.entry.chunks[i] for j in jobs for i in j.todo()}
    full_peers: set[str] = set()
    """Peers that hold every chunk this pull needs: nothing to learn from asking them again (a serving node is
    not polled by every joiner)."""
    for base in usable_peers(peers)[0]:
        p = Peer(base, token, opts.chunk_timeout_s)
        if p.name == opts.swarm_self:
            continue  # the peers file lists this node too
        try:
            inv = p.inventory()
        except (ChunkFailed, OSError, ValueError):
            if opts.swarm_self:
                by_name[p.name] = p  # a joiner whose server is not up yet: a member, asked again while pulling
            continue  # an unreachable peer at the start is not a source
        by_name[p.name] = p
        for h in inv:
            holders.setdefault(h, set()).add(p.name)
        if wanted <= inv:
            full_peers.add(p.name)
    src = schedule.Sources(
        holders,
        per_peer_limit=opts.connections_per_peer,
        origin_limit=opts.origin_connections,
        has_origin=origin is not None,
        swarm=schedule.Swarm(opts.swarm_self, tuple(sorted({opts.swarm_self, *by_name})), opts.swarm_wait_s)
        if opts.swarm_self
        else None,
        zone_of=dict(opts.peer_zones),
        zone=opts.zone,
    )
    width = max(2, min(32, len(by_name) * opts.connections_per_peer + (opts.origin_connections if origin else 0)))
    requests = Requests(
        jobs,
        src,
        manifest.chunk_size,
        width * 2 + 2 if any(j.verify_sha256 for j in jobs) else None,
        has_origin=origin is not None,
        max_attempts=opts.max_attempts_per_chunk,
        max_busy_waits=opts.max_busy_waits,
        run_of=lambda source: min(opts.chunks_per_request, by_name[source].max_run) if source in by_name else 1,
    )
    requests.settle(final=False)

    def worker() -> None:
        try:
            while (run := requests.take_run()) is not None:
                if run[0].source == schedule.ORIGIN or run[0].buffer is not None:
                    fetch(run[0])
                else:
                    fetch_run(run)
        except Exception as exc:
            requests.fail(f"internal error: {exc!r}")

    def fetch_run(run: list[Assignment]) -> None:
        """Consecutive chunks of one file from one peer in one answer (one chunk, or a run), each streamed into its
        file, verified and stored as it arrives. A failure fails the chunk it struck; the chunks after it go back
        in line untried."""
        source, left = run[0].source, list(run)
        spans = [a.request.job.span(a.request.index) for a in run]
        started = run[0].asked_at  # each chunk's time (for metrics) from the end of the one before it
        try:
            with by_name[source].run([a.request.digest for a in run], sum(size for _, size in spans)) as body:
                for a, (_, size) in zip(run, spans, strict=True):
                    job, i = a.request.job, a.request.index
                    hasher = manifest.hasher()
                    with job.writing(i) as write:
                        body(size, hasher, write=write)
                    if hasher.hexdigest() != a.request.digest:
                        raise ChunkFailed("corrupt bytes (hash mismatch)", fatal=True)
                    job.store_chunk(i, None, None)
                    left.pop(0)
                    progress(requests.done(replace(a, asked_at=started), size))
                    started = requests.clock()
        except (ChunkFailed, OSError) as exc:  # (anything else is a fault of ours: the worker ends the pull)
            chunk = exc if isinstance(exc, ChunkFailed) else None
            if chunk is not None and chunk.alone:  # the peer would not send these as one: ask each by itself
                for a in reversed(left):
                    requests.give_back(a, alone=True)
                return
            for a in reversed(left[1:]):
                requests.give_back(a)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                requests.give_back(left[0])
                requests.fail(f"the cache at {left[0].request.job.store.root} is full: {os.strerror(exc.errno)}")
                return
            requests.failed(left[0], exc, fatal=bool(chunk and chunk.fatal), busy=bool(chunk and chunk.busy))

    def fetch(a: Assignment) -> None:
        """A chunk received whole: the origin's answer, or a peer's into its buffer (for the file's sha256)."""
        job, i, source = a.request.job, a.request.index, a.source
        _, size = job.span(i)
        data: memoryview | None = None
        try:
            if source == schedule.ORIGIN:
                assert origin is not None
                data = memoryview(origin.read(job.entry.path, i * manifest.chunk_size, size))
                got = manifest.digest(data)
                if a.buffer is not None:  # the file's sha256 takes it from the buffer, in order
                    memoryview(a.buffer)[:size] = data
            else:
                assert a.buffer is not None
                hasher = manifest.hasher()
                data = memoryview(a.buffer)[:size]
                by_name[source].fetch(a.request.digest, size, hasher, into=data)
                got = hasher.hexdigest()
            if got != a.request.digest:
                raise ChunkFailed("corrupt bytes (hash mismatch)", fatal=True)
            job.store_chunk(i, data, a.buffer)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                requests.release(a.buffer)
                requests.fail(f"the cache at {job.store.root} is full: {os.strerror(exc.errno)}")
                return
            requests.failed(a, exc, fatal=False, busy=False)
            return
        except Exception as exc:
            chunk = exc if isinstance(exc, ChunkFailed) else None
            requests.failed(a, exc, fatal=bool(chunk and chunk.fatal), busy=bool(chunk and chunk.busy))
            return
        finally:
            if data is not None:
                data.release()
        # The callback runs on this worker's thread, outside the lock: it gets this chunk's snapshot.
        progress(requests.done(a, size))

    following = (
        Following(
            by_name,
            wanted,
            requests.learned,
            src.swarm,
            requests.cond,
            stream=opts.inventory_stream,
            poll_s=opts.inventory_refresh_s,
            gone_after=opts.swarm_gone_after,
        )
        if src.swarm is not None
        else None
    )
    threads = [threading.Thread(target=worker, name=f"pull-{n}", daemon=True) for n in range(width)]
    for th in threads:
        th.start()
    if following is not None:
        following.start(full_peers)
    for th in threads:
        th.join()
    if following is not None:
        following.stop()
    prog = requests.progress
    prog.inventory_requests = sum(p.inventory_requests for p in by_name.values())
    prog.inventory_bytes = sum(p.inventory_bytes for p in by_name.values())
    for p in by_name.values():
        p.drop()
    if not requests.errors:
        requests.settle(final=True)
    if requests.errors:
        raise PullError("; ".join(requests.errors[:3]))
    return prog


def describe(result: PullResult) -> dict[str, Any]:
    p = result.progress
    return {
        "model_id": result.manifest.model_id,
        "dest": str(result.dest),
        "bytes": p.done,
        "from_peers": p.from_peers,
        "from_origin": p.from_origin,
        "already_cached": result.already_cached,
        "on_disk": result.on_disk,
        "refetched_chunks": p.refetched,
        "seconds": round(result.seconds, 3),
        "gbps": round(result.gbps, 3),
        "by_source": p.by_source,
    }
