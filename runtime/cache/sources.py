"""Where a pull's bytes come from: peers over HTTP (keep-alive, read straight into a buffer) and the
origin object store through fsspec; and where its manifest comes from (the origin, else a peer that pulled it).
A failure is a `ChunkFailed`, which the pull turns into a retry from another source."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from spotstack.runtime.cache.assemble import PullError
from spotstack.runtime.cache.manifest import Manifest, read_manifest
from spotstack.runtime.errors import one_line

STEP = 2 << 20
"""Most bytes read (and hashed) at a time from a peer: each read takes what has arrived, up to this (reads that
waited for every byte of 1 MiB were slower). 2 MiB: a 2.2 GB pull on loopback, peers sending with cubic, took
0.94-1.00 s against 0.99-1.07 s with 4 MiB reads (three A/Bs, 5.5% less CPU; 1 MiB as 2): the workers' buffers stay
in the CPU's cache beside the copies. 4 MiB was better only with BBR pacing on loopback, where each smaller delivery
armed another pacing timer in the peers (docs/cache.md, congestion control)."""


_thread = threading.local()


def _scratch() -> memoryview:
    """This thread's STEP bytes to receive a streamed chunk through: one per pull worker, whichever peers it asks
    (a pull's threads end with it, and their buffers with them)."""
    buf: memoryview | None = getattr(_thread, "scratch", None)
    if buf is None:
        buf = _thread.scratch = memoryview(bytearray(STEP))
    return buf


_BLOCKING_READS = sys.platform == "linux"
"""Receive with blocking reads under the kernel's receive timeout (Linux: SO_RCVTIMEO stands in for Python's)."""


def _body_reads(
    conn: http.client.HTTPConnection, r: http.client.HTTPResponse, timeout_s: float
) -> tuple[Callable[[memoryview], int], Callable[[], None]]:
    """A readinto for the rest of `r`'s body that blocks in the kernel until bytes are there and takes what has
    arrived (Python's timeout makes the socket non-blocking: a poll() and a failed read around each wait instead),
    and `done()`, once the body is read whole, to put the socket back to Python's timeout and end the response (the
    connection carries the next request; after a failure it is dropped instead). The kernel's receive timeout keeps
    a stall an error (EAGAIN after `timeout_s` with nothing received)."""
    sock = conn.sock
    fp = r.fp
    if not _BLOCKING_READS or sock is None or fp is None or not r.length:  # (peek would wait on an empty body)
        return r.readinto, lambda: None
    buffered = len(fp.peek(0)[: r.length])  # body bytes read along with the headers (at most one read, if none)

    def read(piece: memoryview) -> int:
        nonlocal buffered
        if buffered:  # from http.client's buffer first: the socket holds only what comes after
            n = r.readinto(piece[:buffered])
            buffered -= n
            return n
        try:
            return sock.recv_into(piece, len(piece))
        except BlockingIOError:  # SO_RCVTIMEO ran out with nothing received
            raise TimeoutError(f"nothing received in {seconds:g}s") from None

    def done() -> None:
        sock.settimeout(timeout_s)
        r.length = 0
        r.close()

    seconds = max(timeout_s, 0.001)  # a zero timeval would wait forever
    timeval = struct.pack("@ll", int(seconds), int(seconds % 1 * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.settimeout(None)
    return read, done


@contextlib.contextmanager
def _peers_fault() -> Iterator[None]:
    """A peer's answer failing, as the pull takes it: a reset, a stall or a bad answer is the peer's fault
    (ChunkFailed); a write into the store that failed is this node's (its OSError: a full cache)."""
    try:
        yield
    except _WriteFailed as exc:
        raise exc.error from None
    except (OSError, http.client.HTTPException) as exc:
        raise ChunkFailed(f"{exc.__class__.__name__}: {exc}") from exc


class ChunkFailed(Exception):
    def __init__(self, reason: str, *, fatal: bool = False, busy: bool = False, alone: bool = False) -> None:
        super().__init__(reason)
        self.fatal, self.busy = fatal, busy
        self.alone = alone
        """A run the peer would not send as one (not one span there, or a chunk gone): ask its chunks one by one."""


class _WriteFailed(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class NoStream(ChunkFailed):
    """The peer has no inventory stream (a version from before it): poll its inventory instead."""

    def __init__(self) -> None:
        super().__init__("no inventory stream (404)")


def parse_peer(base: str) -> tuple[str, int]:
    """`host:port` (or http://host:port) -> (host, port); ValueError naming the entry when it is not one."""
    u = urllib.parse.urlsplit(base.strip() if "://" in base else f"http://{base.strip()}")
    try:
        port = u.port
    except ValueError:
        port = None
    if not u.hostname or port is None or not 0 < port < 65536 or u.scheme != "http":
        raise ValueError(f"peer {base!r} is not host:port")
    return u.hostname, port


def usable_peers(entries: list[str]) -> tuple[list[str], list[str]]:
    """Split peer entries into those that parse and those that do not (to be skipped with a warning)."""
    good: list[str] = []
    bad: list[str] = []
    for e in entries:
        try:
            parse_peer(e)
        except ValueError:
            bad.append(e)
        else:
            good.append(e)
    return good, bad


class Origin:
    """The object store (or directory) the model came from, read through fsspec."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")

    def read(self, rel: str, offset: int, size: int) -> bytes:
        data: bytes = self.fs.cat_file(f"{self.root}/{rel}", start=offset, end=offset + size)
        if len(data) != size:
            raise ChunkFailed(f"origin returned {len(data)} of {size} bytes")
        return data


class Peer:
    """Keep-alive HTTP connections to one peer, one per thread."""

    def __init__(self, base: str, token: str, timeout_s: float) -> None:
        self.host, self.port = parse_peer(base)
        self.name = f"{self.host}:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._known: set[str] = set()
        self._since = "0" * 16 + ":0"  # no epoch yet: the first answer is the whole list
        self.max_run = 1
        """Most chunks this peer sends in one answer (/v1/runs), as its inventory answer says; 1: one at a time."""
        self._lock = threading.Lock()
        self.inventory_requests = 0
        self.inventory_connections = 0
        self.inventory_bytes = 0
        """HTTP bytes both ways of inventory requests (request line and headers, status and headers, body and chunk
        framing; not TCP's): what a swarm spends learning who holds what."""

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

    def _get(self, path: str) -> bytes:
        """One small request on its own short-lived connection (the chunk connections stay for chunks)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=min(self.timeout_s, 3.0))
        try:
            conn.request("GET", path, headers=self.headers)
            r = conn.getresponse()
            body = r.read()
            if path.startswith("/v1/inventory"):
                self._count(path, r, len(body), connection=True)
            if r.status != 200:
                raise ChunkFailed(f"{path.split('?')[0]}: HTTP {r.status}", fatal=r.status in (401, 403))
            return body
        finally:
            conn.close()

    def manifest(self, url: str) -> Manifest:
        return Manifest.model_validate_json(self._get("/v1/manifest?" + urllib.parse.urlencode({"url": url})))

    def known(self) -> set[str]:
        """What the peer has said it holds, so far."""
        with self._lock:
            return set(self._known)

    def _count(self, path: str, r: http.client.HTTPResponse, body: int, *, connection: bool) -> None:
        request = len(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept-Encoding: identity\r\n\r\n")
        request += sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        response = len(f"HTTP/1.1 {r.status} {r.reason}\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in r.getheaders())
        with self._lock:
            self.inventory_requests += 1
            self.inventory_connections += connection
            self.inventory_bytes += request + response + body

    def follow(
        self,
        wanted: set[str],
        news: Callable[[set[str]], None],
        opened: Callable[[http.client.HTTPConnection, bool], None],
        stop: threading.Event,
    ) -> None:
        """Read the peer's inventory stream: `news` gets each batch of `wanted` hashes it gains (what it holds, first),
        until it holds all of `wanted`, `stop` is set, or the stream ends. `opened(conn, True/False)` lets the caller
        shut the connection from another thread. NoStream: a peer without the stream."""
        from spotstack.runtime.cache.inventory import HEARTBEAT_S, PREFIX, STREAM_PATH

        by_prefix = {h[:PREFIX]: h for h in wanted}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=3 * HEARTBEAT_S)
        try:
            conn.connect()
            opened(conn, True)  # connected: the caller can shut its socket from now on
            conn.request("GET", STREAM_PATH, headers=self.headers)
            r = conn.getresponse()
            self._count(STREAM_PATH, r, 0, connection=True)
            if r.status == 404:
                r.read()
                raise NoStream()
            if r.status != 200:
                r.read()
                raise ChunkFailed(f"{STREAM_PATH}: HTTP {r.status}", fatal=r.status in (401, 403))
            while not stop.is_set():
                line = r.readline()
                if not line:
                    return  # the stream ended: the peer's bound, or it stopped
                with self._lock:
                    self.inventory_bytes += len(line) + len(f"{len(line):x}") + 4  # chunked framing
                got = {by_prefix[p] for p in line.decode("ascii", "replace").split() if p in by_prefix}
                if got:
                    with self._lock:
                        self._known |= got
                        enough = wanted <= self._known
                    news(got)
                    if enough:
                        return
        finally:
            opened(conn, False)
            conn.close()

    def inventory(self) -> set[str]:
        """Every chunk the peer has listed so far: after the first answer, only what it gained since is sent."""
        answer = json.loads(self._get("/v1/inventory?" + urllib.parse.urlencode({"since": self._since})))
        if isinstance(answer, list):  # a peer from before `since`: the whole list every time
            with self._lock:
                self._known = set(answer)
                return set(self._known)
        with self._lock:
            known = set() if answer.get("full") else set(self._known)
            known.update(answer["chunks"])
            self._known, self._since = known, f"{answer['epoch']}:{answer['seq']}"
            runs = answer.get("runs", 1)
            self.max_run = runs if isinstance(runs, int) and runs > 0 else 1
        return set(known)

    def fetch(
        self,
        digest: str,
        size: int,
        hasher: Any = None,
        *,
        into: memoryview | None = None,
        write: Callable[[int, memoryview], None] | None = None,
    ) -> None:
        """The chunk's `size` bytes, fed to `hasher` as they arrive when given: received into `into`, or else through
        this thread's STEP-sized buffer, each piece then given to `write(offset, piece)`. A piece is hashed and
        written while it is still in the CPU's cache (a 16 MiB chunk is not)."""
        with self._answer(f"/v1/chunks/{digest}", size) as body:
            body(size, hasher, into=into, write=write)

    @contextlib.contextmanager
    def run(self, digests: list[str], size: int) -> Iterator[Callable[..., None]]:
        """Consecutive chunks of one file in one answer (`size` bytes in all; one chunk is asked as /v1/chunks):
        `body(n, hasher, write=...)` reads the next chunk's `n` bytes as `fetch` does. Leaving before the answer is
        read whole drops the connection."""
        path = f"/v1/chunks/{digests[0]}" if len(digests) == 1 else "/v1/runs/" + ",".join(digests)
        with self._answer(path, size, run=len(digests) > 1) as body:
            yield body

    @contextlib.contextmanager
    def _answer(self, path: str, size: int, *, run: bool = False) -> Iterator[Callable[..., None]]:
        conn = self._conn()
        try:
            with _peers_fault():
                conn.request("GET", path, headers=self.headers)
                r = conn.getresponse()
                if r.status not in (200, 206):
                    r.read()
                    raise ChunkFailed(
                        f"HTTP {r.status}",
                        fatal=r.status in (401, 403),
                        busy=r.status == 503,
                        alone=run and r.status in (400, 404, 409),
                    )
                if r.length != size:
                    raise ChunkFailed(f"length {r.length}, expected {size}")
                readinto, done = _body_reads(conn, r, self.timeout_s)
            left = size

            def body(
                n: int,
                hasher: Any = None,
                *,
                into: memoryview | None = None,
                write: Callable[[int, memoryview], None] | None = None,
            ) -> None:
                nonlocal left
                with _peers_fault():
                    _receive(readinto, n, hasher, into, write)
                left -= n

            yield body  # what the caller's own steps between reads raise (a corrupt chunk, a full cache) passes as is
            if left:
                raise ChunkFailed(f"{left} bytes of the answer left unread")
            with _peers_fault():
                done()
        except BaseException:
            self.drop()  # the answer is not read to its end, or the connection failed: it cannot carry another
            raise


def _receive(
    readinto: Callable[[memoryview], int],
    size: int,
    hasher: Any,
    into: memoryview | None,
    write: Callable[[int, memoryview], None] | None,
) -> None:
    """Read `size` bytes of an answer: into `into` (whole, where nothing hashes them on the way), or through this
    thread's scratch buffer to `write`, each piece hashed as it arrives."""
    step = size if into is not None and hasher is None else STEP
    buf = into if into is not None else _scratch()
    got = 0
    while got < size:
        want = min(step, size - got)
        piece = buf[got : got + want] if into is not None else buf[:want]
        n = readinto(piece)
        if not n:
            raise ChunkFailed(f"connection closed after {got} of {size} bytes")
        if hasher is not None:
            hasher.update(piece[:n])
        if write is not None:
            try:
                write(got, piece[:n])
            except OSError as exc:
                raise _WriteFailed(exc) from exc
        got += n


def resolve_manifest(
    url: str, peers: list[str], token: str, timeout_s: float = 3.0, digest: str | None = None
) -> tuple[Manifest, str]:
    """The model's manifest from its origin; if the origin cannot be read, from a peer that pulled it. With
    `digest` (the pinned `Manifest.digest_hex`), a manifest that is not that one is refused wherever it came from."""
    problems: list[str] = []

    def pinned(m: Manifest) -> Manifest:
        if digest is not None and m.digest_hex != digest:
            raise ValueError(f"manifest digest {m.digest_hex[:16]}... is not the pinned {digest[:16]}...")
        return m

    try:
        return pinned(read_manifest(url)), "origin"
    except Exception as exc:
        problems.append(f"origin: {exc.__class__.__name__}: {one_line(exc)}")
    for base in usable_peers(peers)[0]:
        peer = Peer(base, token, timeout_s)
        try:
            return pinned(peer.manifest(url)), peer.name
        except (ChunkFailed, OSError, ValueError) as exc:
            problems.append(f"{peer.name}: {one_line(exc)}")
    raise PullError(f"no manifest for {url}: " + "; ".join(problems))
