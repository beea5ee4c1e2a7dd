"""Pull a model into the store from peers (and the origin for what no peer has), then into --dest.

Each chunk is received into a pooled buffer, checked with xxh3-128, written in place into the
partial file in the memory-backed store, and fed to its file's sha256 in order (a chunk that
arrives early waits in its buffer). Fetches run in threads (socket reads and hashing release the GIL), several per
peer, spread over the peers that hold each chunk. A chunk that fails — a dead peer, corrupt
bytes, a stall — is fetched again from another peer or the origin. A file whose sha256 matches is
renamed into the store, then hard-linked (or copied, across file systems) into --dest under a
temporary name and renamed: the model server never sees a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import queue
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotstack.runtime.cache import schedule
from spotstack.runtime.cache.manifest import FileEntry, Manifest, chunk_hash
from spotstack.runtime.cache.store import Store


class PullError(Exception):
    """The pull could not produce a verified model; nothing partial is left in --dest."""


class ChunkFailed(Exception):
    def __init__(self, reason: str, *, fatal: bool = False, busy: bool = False) -> None:
        super().__init__(reason)
        self.fatal, self.busy = fatal, busy


@dataclass
class Progress:
    total: int
    done: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    refetched: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def from_peers(self) -> int:
        return sum(v for k, v in self.by_source.items() if k != schedule.ORIGIN)

    @property
    def from_origin(self) -> int:
        return self.by_source.get(schedule.ORIGIN, 0)


@dataclass
class PullResult:
    manifest: Manifest
    dest: Path
    progress: Progress
    seconds: float
    already_cached: int

    @property
    def gbps(self) -> float:
        return self.progress.done / self.seconds / 1e9 if self.seconds else 0.0


class Origin:
    """The object store (or directory) the model came from, read through fsspec."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")

    def read_into(self, rel: str, offset: int, view: memoryview) -> None:
        data = self.fs.cat_file(f"{self.root}/{rel}", start=offset, end=offset + len(view))
        if len(data) != len(view):
            raise ChunkFailed(f"origin returned {len(data)} of {len(view)} bytes")
        view[:] = data


class _FileJob:
    """One file being pulled: which chunks are verified, and its sha256 so far.

    Chunks are written into the partial file with pwrite (bulk page-cache writes; receiving into an
    mmap instead costs a page fault per 4 KiB, more than the transfer). sha256 must see the file in
    order: a verified chunk's buffer waits in `pending` until every chunk before it is hashed.
    """

    def __init__(self, store: Store, entry: FileEntry, chunk_size: int, verify_sha256: bool = True) -> None:
        self.entry, self.chunk_size, self.store = entry, chunk_size, store
        self.verify_sha256 = verify_sha256
        self.part = store.part_path(entry.sha256)
        self.ok_path = store.ok_path(entry.sha256)
        n = len(entry.chunks)
        # Resume: a partial file of the right size keeps the chunks its .ok file vouches for.
        marks = b""
        if self.part.exists() and self.part.stat().st_size == entry.size and self.ok_path.exists():
            marks = self.ok_path.read_bytes()[:n]
        marks = marks.ljust(n, b"\x00")
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, entry.size)
        self.ok_fd = os.open(self.ok_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self.ok_fd, marks, 0)
        self.verified = bytearray(marks)
        self.sha = hashlib.sha256()
        self.hashed = 0
        self.pending: dict[int, bytearray] = {}
        self.lock = threading.Lock()

    def todo(self) -> list[int]:
        return [i for i, m in enumerate(self.verified) if m != 1]

    def span(self, i: int) -> tuple[int, int]:
        return self.entry.chunk_span(i, self.chunk_size)

    def store_chunk(self, i: int, data: memoryview, buf: bytearray) -> None:
        """Write a verified chunk in place, mark it servable, and hand its buffer to the hasher.

        `verified[i]` flips last: the moment it does, another worker may hash the file's last chunk
        and finish it (closing its descriptors), so every write for this chunk must be done by then.
        """
        off, _ = self.span(i)
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, data[written:], off + written)
        os.pwrite(self.ok_fd, b"\x01", i)  # one byte: atomic, and seen by a server in another process
        self.pending[i] = buf
        self.verified[i] = 1

    def advance_hash(self, release: Callable[[bytearray], None]) -> bool:
        """Hash every chunk now contiguous from the start; True once the whole file is hashed."""
        if not self.lock.acquire(blocking=False):
            return False  # another worker is hashing this file; it will take our chunk too
        try:
            n = len(self.entry.chunks)
            while self.hashed < n and self.verified[self.hashed] == 1:
                buf = self.pending.pop(self.hashed, None)
                _, size = self.span(self.hashed)
                if buf is None:
                    if self.verify_sha256:  # resumed from an earlier pull: read it back
                        self.sha.update(os.pread(self.fd, size, self.span(self.hashed)[0]))
                else:
                    if self.verify_sha256:
                        self.sha.update(memoryview(buf)[:size])
                    release(buf)
                self.hashed += 1
            return self.hashed == n
        finally:
            self.lock.release()

    def finish(self) -> None:
        """sha256 checked: move into files/ (atomic) and make it read-only."""
        os.close(self.fd)
        os.close(self.ok_fd)
        if self.verify_sha256 and self.sha.hexdigest() != self.entry.sha256:
            self.discard()
            raise PullError(f"{self.entry.path}: sha256 mismatch after every chunk verified (manifest is wrong?)")
        os.chmod(self.part, 0o444)
        os.replace(self.part, self.store.file_path(self.entry.sha256))
        self.ok_path.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in (self.fd, self.ok_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.ok_path.unlink(missing_ok=True)


class _Buffers:
    """A fixed pool of chunk-sized buffers: bounds memory and the lead of out-of-order chunks."""

    def __init__(self, count: int, size: int) -> None:
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(count):
            self._free.put(bytearray(size))

    def get(self, timeout: float) -> bytearray | None:
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            return None

    def put(self, buf: bytearray) -> None:
        self._free.put(buf)


class _Peer:
    """Keep-alive HTTP connections to one peer, one per thread."""

    def __init__(self, base: str, token: str, timeout_s: float) -> None:
        u = urllib.parse.urlsplit(base if "://" in base else f"http://{base}")
        self.name = f"{u.hostname}:{u.port or 80}"
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def manifest(self, url: str) -> Manifest:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=min(self.timeout_s, 3.0))
        try:
            conn.request("GET", "/v1/manifest?" + urllib.parse.urlencode({"url": url}), headers=self.headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise ChunkFailed(f"manifest: HTTP {r.status}")
            return Manifest.model_validate_json(body)
        finally:
            conn.close()

    def inventory(self) -> set[str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=min(self.timeout_s, 3.0))
        try:
            conn.request("GET", "/v1/inventory", headers=self.headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise ChunkFailed(f"inventory: HTTP {r.status}", fatal=r.status in (401, 403))
            return set(json.loads(body))
        finally:
            conn.close()

    def fetch_into(self, digest: str, view: memoryview) -> None:
        conn = self._conn()
        try:
            conn.request("GET", f"/v1/chunks/{digest}", headers=self.headers)
            r = conn.getresponse()
            if r.status not in (200, 206):
                r.read()
                raise ChunkFailed(f"HTTP {r.status}", fatal=r.status in (401, 403), busy=r.status == 503)
            if r.length != len(view):
                self.drop()
                raise ChunkFailed(f"length {r.length}, expected {len(view)}")
            got = 0
            while got < len(view):
                n = r.readinto(view[got:])
                if not n:
                    raise ChunkFailed(f"connection closed after {got} of {len(view)} bytes")
                got += n
        except (OSError, http.client.HTTPException) as exc:
            self.drop()  # a reset or a stall (socket timeout): this connection is done
            raise ChunkFailed(f"{exc.__class__.__name__}: {exc}") from exc
        except ChunkFailed:
            self.drop()
            raise


@dataclass
class PullOptions:
    connections_per_peer: int = 2
    origin_connections: int = 4
    chunk_timeout_s: float = 10.0
    """A peer that sends nothing for this long is a stalled peer."""
    max_attempts_per_chunk: int = 6
    verify_sha256: bool = True
    """Check each file's sha256 before it is renamed into place. Every chunk is always checked
    (xxh3-128); sha256 adds a cryptographic end-to-end check at ~0.7 CPU-seconds per GB."""


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _materialize(store: Store, entry: FileEntry, dest: Path) -> None:
    """Put the verified store file at dest/<path>: a hard link when it can, else a copy; atomically."""
    src = store.file_path(entry.sha256)
    final = dest / entry.path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.spotstack-tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            with open(src, "rb") as fsrc, open(tmp, "wb") as fdst:
                left, off = entry.size, 0
                while left:
                    n = os.sendfile(fdst.fileno(), fsrc.fileno(), off, min(left, 64 << 20))
                    off += n
                    left -= n
                fdst.flush()
                os.fsync(fdst.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise PullError(
                f"destination {dest} is full writing {entry.path} ({entry.size / 1e9:.2f} GB): "
                f"{os.strerror(exc.errno)}; nothing partial was left there"
            ) from None
        raise PullError(f"cannot write {final}: {exc}") from None


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
) -> PullResult:
    opts = options or PullOptions()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    store.add_manifest(manifest)
    store.pin(manifest.model_id)

    missing = [f for f in manifest.files if not store.has_file(f)]
    need = sum(f.size for f in missing)
    store.make_room(need, keep={f.sha256 for f in manifest.files})
    if not _same_fs(store.root, dest):
        to_copy = sum(f.size for f in manifest.files)
        free = free_bytes(dest)
        if free < to_copy:
            raise PullError(f"destination {dest} has {free / 1e9:.2f} GB free, the model needs {to_copy / 1e9:.2f} GB")

    jobs = [_FileJob(store, f, manifest.chunk_size, opts.verify_sha256) for f in missing]
    try:
        prog = _fetch_all(jobs, manifest, peers, token, origin, opts, progress)
    except BaseException:
        for j in jobs:
            j.close()
        raise
    for f in manifest.files:
        _materialize(store, f, dest)
    cached = sum(f.size for f in manifest.files) - need
    return PullResult(manifest, dest, prog, time.monotonic() - started, cached)


def _fetch_all(
    jobs: list[_FileJob],
    manifest: Manifest,
    peers: list[str],
    token: str,
    origin: Origin | None,
    opts: PullOptions,
    progress: Callable[[Progress], None],
) -> Progress:
    total = sum(j.entry.chunk_span(i, manifest.chunk_size)[1] for j in jobs for i in j.todo())
    prog = Progress(total=total)
    by_name: dict[str, _Peer] = {}
    holders: dict[str, set[str]] = {}
    for base in peers:
        p = _Peer(base, token, opts.chunk_timeout_s)
        try:
            inv = p.inventory()
        except (ChunkFailed, OSError, ValueError):
            continue  # an unreachable peer at the start is simply not a source
        by_name[p.name] = p
        for h in inv:
            holders.setdefault(h, set()).add(p.name)
    src = schedule.Sources(
        holders,
        per_peer_limit=opts.connections_per_peer,
        origin_limit=opts.origin_connections,
        has_origin=origin is not None,
    )

    tasks: queue.Queue[tuple[_FileJob, int, frozenset[str], int]] = queue.Queue()
    pending = 0
    # Round-robin over files: each file's sha256 advances while the others download.
    todo = [(j, j.todo()) for j in jobs]
    for k in range(max((len(t) for _, t in todo), default=0)):
        for j, t in todo:
            if k < len(t):
                tasks.put((j, t[k], frozenset(), 0))
                pending += 1
    width = max(2, min(32, len(by_name) * opts.connections_per_peer + (opts.origin_connections if origin else 0)))
    buffers = _Buffers(width * 2 + 2, manifest.chunk_size)
    for j in jobs:
        if not j.todo() and j.advance_hash(buffers.put):
            j.finish()
    cond = threading.Condition()
    errors: list[str] = []
    finished: list[_FileJob] = [j for j in jobs if not j.todo()]

    def complete(job: _FileJob, i: int, source: str, size: int) -> None:
        nonlocal pending
        if job.advance_hash(buffers.put) and job not in finished:
            with cond:
                if job in finished:
                    return
                finished.append(job)
            try:
                job.finish()
            except PullError as exc:
                errors.append(str(exc))
        with cond:
            prog.done += size
            prog.by_source[source] = prog.by_source.get(source, 0) + size
            pending -= 1
            cond.notify_all()
        progress(prog)

    def worker() -> None:
        try:
            work()
        except Exception as exc:
            with cond:
                errors.append(f"internal error: {exc!r}")
                cond.notify_all()

    def work() -> None:
        while True:
            with cond:
                if pending == 0 or errors:
                    return
            try:
                job, i, tried, attempts = tasks.get(timeout=0.05)
            except queue.Empty:
                continue
            digest = job.entry.chunks[i]
            # The chunk a file's sha256 waits on always gets a buffer; others wait for a free one,
            # so early chunks cannot hold every buffer while the one they wait on starves.
            buf = buffers.get(timeout=0.02) or (bytearray(manifest.chunk_size) if i == job.hashed else None)
            if buf is None:
                tasks.put((job, i, tried, attempts))
                continue
            with cond:
                source = schedule.choose(src, digest, set(tried))
                if source is None:
                    if schedule.exhausted(src, digest, set(tried)) or attempts >= opts.max_attempts_per_chunk:
                        errors.append(
                            f"{job.entry.path} chunk {i}: no source left (peers failed"
                            f"{'' if origin else ', and no origin was given'})"
                        )
                        cond.notify_all()
                        buffers.put(buf)
                        return
                    tasks.put((job, i, tried, attempts))
                    buffers.put(buf)
                    cond.wait(0.01)
                    continue
                src.busy[source] = src.busy.get(source, 0) + 1
            failure: Exception | None = None
            _, size = job.span(i)
            view = memoryview(buf)[:size]
            try:
                if source == schedule.ORIGIN:
                    assert origin is not None
                    origin.read_into(job.entry.path, i * manifest.chunk_size, view)
                else:
                    by_name[source].fetch_into(digest, view)
                if chunk_hash(view) != digest:
                    raise ChunkFailed("corrupt bytes (hash mismatch)", fatal=True)
                job.store_chunk(i, view, buf)
            except ChunkFailed as exc:
                failure = exc
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    view.release()
                    buffers.put(buf)
                    raise PullError(f"the cache at {job.store.root} is full: {os.strerror(exc.errno)}") from None
                failure = exc
            except Exception as exc:
                failure = exc
            view.release()
            if failure is not None:
                buffers.put(buf)
                fatal = isinstance(failure, ChunkFailed) and failure.fatal
                busy = isinstance(failure, ChunkFailed) and failure.busy
                with cond:
                    src.busy[source] -= 1
                    if not busy:
                        schedule.record_failure(src, source, fatal=fatal)
                    prog.refetched += 1
                    # The origin gets three tries per chunk; a peer that failed this chunk, none.
                    again = tried if busy or (source == schedule.ORIGIN and attempts < 2) else tried | {source}
                    tasks.put((job, i, frozenset(again), attempts + 1))
                    cond.notify_all()
                continue
            with cond:
                src.busy[source] -= 1
            complete(job, i, source, size)

    threads = [threading.Thread(target=worker, name=f"pull-{n}", daemon=True) for n in range(width)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for p in by_name.values():
        p.drop()
    if errors:
        for j in jobs:
            if j not in finished:
                j.close()
        raise PullError("; ".join(errors[:3]))
    return prog


def resolve_manifest(url: str, peers: list[str], token: str, timeout_s: float = 3.0) -> tuple[Manifest, str]:
    """The model's manifest from its origin; if the origin cannot be read, from a peer that pulled it."""
    from spotstack.runtime.cache.manifest import read_manifest

    problems: list[str] = []
    try:
        return read_manifest(url), "origin"
    except Exception as exc:
        problems.append(f"origin: {exc.__class__.__name__}: {exc}")
    for base in peers:
        peer = _Peer(base, token, timeout_s)
        try:
            return peer.manifest(url), peer.name
        except (ChunkFailed, OSError, ValueError) as exc:
            problems.append(f"{peer.name}: {exc}")
    raise PullError(f"no manifest for {url}: " + "; ".join(problems))


def describe(result: PullResult) -> dict[str, Any]:
    p = result.progress
    return {
        "model_id": result.manifest.model_id,
        "dest": str(result.dest),
        "bytes": p.done,
        "from_peers": p.from_peers,
        "from_origin": p.from_origin,
        "already_cached": result.already_cached,
        "refetched_chunks": p.refetched,
        "seconds": round(result.seconds, 3),
        "gbps": round(result.gbps, 3),
        "by_source": p.by_source,
    }
