"""The node's cache: model files in memory-backed storage, addressed by content, shared with peers.

Layout under the store directory (default /dev/shm/spotstack):

    files/<key>               complete, verified files (read-only; hard-linked into --dest); the key is
                              `FileEntry.key`: what a pull verified (BLAKE3 of the chunk list, or the sha256)
    partial/<key>.part        a file being pulled: chunks land here in place, by offset
    partial/<key>.ok          one byte per chunk, 1 once that chunk is verified (so a server in
                              another process can serve it before the file is complete)
    lock                      held (flock) by the one process that changes the store at a time; holds its pid
    manifests/<model_id>.json the manifests of models held here: they map chunk hash -> (file, offset)
    sources/<hash of url>     the model id last pulled from a URL (peers answer manifests by URL)
    pins/<model_id>           a model in use: its files are never evicted

Only files under files/ and partial/ count against the size limit (what this agent stored, not
whatever else uses /dev/shm). When room is needed, whole files of unpinned models go, least
recently used first: a model server reads whole files, so a file is the unit worth keeping.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spotstack.runtime.cache.manifest import FileEntry, Manifest
from spotstack.runtime.files import write_atomic


class StoreFull(Exception):
    """The limit cannot fit what is asked even after evicting every unpinned file."""


@dataclass(frozen=True)
class ChunkRef:
    file_key: str
    offset: int
    size: int
    index: int


class Store:
    def __init__(self, root: str | Path, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit = limit_bytes
        for sub in ("files", "partial", "manifests", "pins", "sources"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, ChunkRef] = {}
        self._manifests: dict[str, Manifest] = {}
        for path in (self.root / "manifests").glob("*.json"):
            try:
                self._add_manifest(Manifest.model_validate_json(path.read_text()))
            except ValueError:
                path.unlink(missing_ok=True)  # a torn manifest from a crash: forget it

    # -- one writer -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, waiting: Callable[[str], None] = lambda message: None) -> Iterator[None]:
        """Be the one process that changes this store: an flock on `lock`, held across everything a pull changes
        (eviction, partial files, the rename into files/). The CLI and the agent default to the same store, and two
        writers of one partial file renamed each other's half-written bytes into files/ as verified. Readers (the
        peer server) take no lock: they read only files/ and chunks marked verified. `waiting` hears once, with the
        holder's pid, when another process holds the lock."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                waiting(f"waiting for another pull into {self.root} (pid {holder}) to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    # -- manifests and the chunk index ----------------------------------------------------------
    def _add_manifest(self, m: Manifest) -> None:
        self._manifests[m.model_id] = m
        for f in m.files:
            for i, h in enumerate(f.chunks):
                off, size = f.chunk_span(i, m.chunk_size)
                self._index.setdefault(h, ChunkRef(f.key, off, size, i))

    def add_manifest(self, m: Manifest) -> None:
        path = self.root / "manifests" / f"{m.model_id}.json"
        if not path.exists():
            write_atomic(path, m.to_json())
        with self._lock:
            self._add_manifest(m)

    @staticmethod
    def _url_key(url: str) -> str:
        return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:32]

    def remember_source(self, url: str, model_id: str) -> None:
        """Which model a URL held when we pulled it, so peers can answer with it if the origin is down."""
        write_atomic(self.root / "sources" / self._url_key(url), model_id)

    def manifest_for_url(self, url: str) -> Manifest | None:
        try:
            model_id = (self.root / "sources" / self._url_key(url)).read_text().strip()
        except OSError:
            return None
        self.refresh()
        return self._manifests.get(model_id)

    def refresh(self) -> None:
        """Pick up manifests another process (a pull) added."""
        for path in (self.root / "manifests").glob("*.json"):
            model_id = path.stem
            if model_id not in self._manifests:
                try:
                    m = Manifest.model_validate_json(path.read_text())
                except (OSError, ValueError):
                    continue
                with self._lock:
                    self._add_manifest(m)

    # -- paths --------------------------------------------------------------------------------
    def file_path(self, key: str) -> Path:
        return self.root / "files" / key

    def part_path(self, key: str) -> Path:
        return self.root / "partial" / f"{key}.part"

    def ok_path(self, key: str) -> Path:
        return self.root / "partial" / f"{key}.ok"

    # -- what peers ask for ---------------------------------------------------------------------
    def locate(self, chunk: str) -> tuple[Path, ChunkRef] | None:
        """Where a verified copy of this chunk lies (a complete file, or a verified partial chunk)."""
        ref = self._index.get(chunk)
        if ref is None:
            self.refresh()
            ref = self._index.get(chunk)
            if ref is None:
                return None
        full = self.file_path(ref.file_key)
        if full.exists():
            return full, ref
        try:
            with open(self.ok_path(ref.file_key), "rb") as f:
                f.seek(ref.index)
                if f.read(1) == b"\x01":
                    return self.part_path(ref.file_key), ref
        except OSError:
            # Its .ok file goes only after the rename into files/ (assemble.FileJob.finish): a pull that finished
            # the file between the look above and this open left it there. A 404 for a chunk this node listed
            # would send a fellow joiner to the origin for it, a second read of a chunk the swarm reads once.
            if full.exists():
                return full, ref
        return None

    def inventory(self) -> list[str]:
        """Every chunk this node can serve now."""
        self.refresh()
        out: list[str] = []
        for m in list(self._manifests.values()):
            for f in m.files:
                if self.file_path(f.key).exists():
                    out.extend(f.chunks)
                    continue
                try:
                    marks = self.ok_path(f.key).read_bytes()
                except OSError:
                    if self.file_path(f.key).exists():  # finished meanwhile (see `locate`)
                        out.extend(f.chunks)
                    continue
                out.extend(h for i, h in enumerate(f.chunks) if i < len(marks) and marks[i] == 1)
        return out

    # -- space ----------------------------------------------------------------------------------
    def usage(self) -> int:
        total = 0
        for sub in ("files", "partial"):
            for p in (self.root / sub).iterdir():
                if p.suffix != ".ok":
                    with contextlib.suppress(FileNotFoundError):  # evicted or renamed meanwhile
                        total += p.stat().st_size
        return total

    def pinned_files(self) -> set[str]:
        shas: set[str] = set()
        for pin in (self.root / "pins").iterdir():
            m = self._manifests.get(pin.name)
            if m is not None:
                shas.update(f.key for f in m.files)
        return shas

    def pin(self, model_id: str) -> None:
        (self.root / "pins" / model_id).touch()

    def unpin(self, model_id: str) -> None:
        (self.root / "pins" / model_id).unlink(missing_ok=True)

    def make_room(self, needed: int, keep: set[str]) -> list[str]:
        """Evict least-recently-used unpinned files until `needed` more bytes fit. Returns what went."""
        with self._lock:
            free = self.limit - self.usage()
            if free >= needed:
                return []
            protected = self.pinned_files() | keep
            candidates = sorted(
                (p for p in (self.root / "files").iterdir() if p.name not in protected),
                key=lambda p: p.stat().st_atime,
            )
            evicted: list[str] = []
            for p in candidates:
                if free >= needed:
                    break
                free += p.stat().st_size
                p.unlink(missing_ok=True)
                evicted.append(p.name)
            if free < needed:
                raise StoreFull(
                    f"cache at {self.root} needs {needed / 2**30:.2f} GiB more but only "
                    f"{max(free, 0) / 2**30:.2f} GiB can be freed under its {self.limit / 2**30:.2f} GiB limit "
                    f"(pinned models stay); raise memory_cache_gib or unpin a model"
                )
            return evicted

    def touch(self, path: Path) -> None:
        """Record a use for LRU (atime is not reliable on every mount)."""
        with contextlib.suppress(OSError):
            os.utime(path, (time.time(), path.stat().st_mtime))

    def has_file(self, f: FileEntry) -> bool:
        return self.file_path(f.key).exists()
