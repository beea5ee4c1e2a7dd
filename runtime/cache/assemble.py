"""Putting a file together from verified chunks: writing each in place, marking it servable, and (for a version 1
manifest, or when asked) checking the file's sha256 before it is renamed into the store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from spotstack.runtime.cache.manifest import FileEntry
from spotstack.runtime.cache.store import Store


@contextlib.contextmanager
def _opened(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> Iterator[int]:
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


class PullError(Exception):
    """The pull could not produce a verified model; nothing partial is left in --dest."""


class FileJob:
    """One file being pulled: which chunks are verified, and its sha256 so far.

    Chunks are written into the partial file with pwrite (bulk page-cache writes; receiving into an
    mmap instead costs a page fault per 4 KiB, more than the transfer): streamed in as they arrive
    (`writing`), or whole from a buffer. A chunk's bytes count only once its .ok byte is set, after its
    hash checked: until then no server sends them and a resumed pull fetches them again. sha256 must
    see the file in order: a verified chunk's buffer waits in `pending` until every chunk before it is hashed.
    """

    def __init__(
        self,
        store: Store,
        entry: FileEntry,
        chunk_size: int,
        verify_sha256: bool = True,
        digest: Callable[[memoryview], str] | None = None,
    ) -> None:
        self.entry, self.chunk_size, self.store = entry, chunk_size, store
        self.verify_sha256 = verify_sha256
        self.part = store.part_path(entry.key)
        self.ok_path = store.ok_path(entry.key)
        n = len(entry.chunks)
        # Resume: a partial file of the right size keeps the chunks its .ok file vouches for, each hashed again
        # first (`digest`): only bytes this process checked are ever renamed into files/ as verified.
        marks = b""
        if self.part.exists() and self.part.stat().st_size == entry.size and self.ok_path.exists():
            marks = self.ok_path.read_bytes()[:n]
        marks = marks.ljust(n, b"\x00")
        if digest is not None and b"\x01" in marks:
            marks = self._recheck(marks, digest)
        # No descriptor is held between chunks: a model of thousands of files must pull under a
        # 1024-descriptor limit, and a failure must leak nothing. An open per 16 MiB chunk costs nothing.
        with _opened(self.part) as fd:
            os.ftruncate(fd, entry.size)
        with _opened(self.ok_path) as fd:
            os.ftruncate(fd, 0)
            os.pwrite(fd, marks, 0)
        self.verified = bytearray(marks)
        self.sha = hashlib.sha256()
        self.hashed = 0
        self.pending: dict[int, bytearray] = {}
        self.lock = threading.Lock()

    def _recheck(self, marks: bytes, digest: Callable[[memoryview], str]) -> bytes:
        checked = bytearray(marks)
        with _opened(self.part, os.O_RDONLY) as fd:
            for i, m in enumerate(marks):
                if m == 1:
                    off, size = self.span(i)
                    data = os.pread(fd, size, off)
                    if len(data) != size or digest(memoryview(data)) != self.entry.chunks[i]:
                        checked[i] = 0
        return bytes(checked)

    def todo(self) -> list[int]:
        return [i for i, m in enumerate(self.verified) if m != 1]

    def span(self, i: int) -> tuple[int, int]:
        return self.entry.chunk_span(i, self.chunk_size)

    @contextlib.contextmanager
    def writing(self, i: int) -> Iterator[Callable[[int, memoryview], None]]:
        """`write(offset within the chunk, bytes)`: chunk `i` streamed into the partial file as it arrives, while
        its pieces are still in the CPU's cache (not yet verified: `store_chunk(i, None, None)` marks it after)."""
        start = self.span(i)[0]
        with _opened(self.part) as fd:

            def write(rel: int, piece: memoryview) -> None:
                done = 0
                while done < len(piece):
                    done += os.pwrite(fd, piece[done:], start + rel + done)

            yield write

    def store_chunk(self, i: int, data: memoryview | None, buf: bytearray | None) -> None:
        """Write a verified chunk in place (None: `writing` already did), mark it servable, and hand its buffer
        (if any) to the hasher.

        `verified[i]` flips last: the moment it does, another worker may hash the file's last chunk
        and finish it (closing its descriptors), so every write for this chunk must be done by then.
        """
        if data is not None:
            with self.writing(i) as write:
                write(0, data)
        with _opened(self.ok_path) as fd:
            os.pwrite(fd, b"\x01", i)  # one byte: atomic, and seen by a server in another process
        if buf is not None:
            self.pending[i] = buf
        self.verified[i] = 1

    def advance_hash(self, release: Callable[[bytearray | None], None]) -> bool:
        """Hash every chunk now contiguous from the start; True once the whole file is hashed."""
        n = len(self.entry.chunks)
        while True:
            if not self.lock.acquire(blocking=False):
                return False  # another worker is hashing this file; it will take our chunk too
            try:
                done = self._hash_contiguous(n, release)
            finally:
                self.lock.release()
            # A chunk stored while the lock was held: its worker could not take the lock, so it is ours to hash.
            if done or self.verified[self.hashed] != 1:
                return done

    def _hash_contiguous(self, n: int, release: Callable[[bytearray | None], None]) -> bool:
        """Hash the chunks contiguous from the start (the caller holds the lock); True once all are."""
        while self.hashed < n and self.verified[self.hashed] == 1:
            buf = self.pending.pop(self.hashed, None)
            _, size = self.span(self.hashed)
            if buf is None:
                if self.verify_sha256:  # resumed from an earlier pull: read it back
                    with _opened(self.part, os.O_RDONLY) as fd:
                        self.sha.update(os.pread(fd, size, self.span(self.hashed)[0]))
            else:
                if self.verify_sha256:
                    self.sha.update(memoryview(buf)[:size])
                release(buf)
            self.hashed += 1
        return self.hashed == n

    def finish(self) -> None:
        """sha256 checked: move into files/ (atomic) and make it read-only."""
        if self.verify_sha256 and self.sha.hexdigest() != self.entry.sha256:
            self.discard()
            raise PullError(f"{self.entry.path}: sha256 mismatch after every chunk verified (manifest is wrong?)")
        os.chmod(self.part, 0o444)
        os.replace(self.part, self.store.file_path(self.entry.key))
        self.ok_path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.ok_path.unlink(missing_ok=True)
