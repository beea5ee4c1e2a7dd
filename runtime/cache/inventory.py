"""What each peer holds, as it changes while a swarm pulls.

A joiner learns what its fellow joiners gained from each one's inventory stream (`GET /v1/inventory/stream`): one
long-lived response per pair, a line each time the peer holds new chunks (the first 16 hex digits of each hash, all
a joiner needs to tell the chunks of its own manifest apart; every chunk is verified by its full hash when it
arrives), and an empty line every `HEARTBEAT_S` so a dead peer is noticed. Kraken pushes the same way. Until now
each joiner asked each peer every 0.25 s on a new connection: N joiners made N*(N-1)*4 requests a second.

Server side: `InventoryWatch` re-reads the store (a local read, every 0.1 s, only while a stream is open) and wakes
the streams when it changed; `InventoryLog` numbers hashes for the polled form (`?since=`), kept for peers of an
older version. Client side: `Following` runs one thread per peer of a pull (a peer without the stream is polled).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import re
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spotstack.runtime.cache.schedule import Swarm
    from spotstack.runtime.cache.sources import Peer

log = logging.getLogger("spotstack.cache")

PREFIX = 16
"""Hex digits of a hash a stream names a chunk by (64 bits: no two chunks of one model share them in practice,
and a wrong guess would only fail its hash check)."""
HEARTBEAT_S = 5.0
"""An empty line this often on a quiet stream; a reader that hears nothing for 3x as long takes the peer as gone."""
STREAM_MAX_S = 900.0
"""A stream ends after this (its reader opens another if its pull still runs)."""
STREAM_PATH = "/v1/inventory/stream"
SINCE = re.compile(r"^([0-9a-f]{16}):(\d{1,12})$")


class InventoryLog:
    """Each chunk hash this server has listed, numbered in the order it first appeared, for the polled form
    (`?since=E:N`): an answer carries only what is new. The epoch changes when the server restarts: a client that
    saw another epoch gets everything again. Hashes are only added: a chunk evicted later is simply not served (404).
    """

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self._seq: dict[str, int] = {}
        self._order: list[str] = []

    def since(self, now: list[str], since: str) -> dict[str, Any]:
        for h in now:
            if h not in self._seq:
                self._seq[h] = len(self._order) + 1
                self._order.append(h)
        m = SINCE.match(since)
        seq = len(self._order)
        if m is None or m[1] != self.epoch or int(m[2]) > seq:
            return {"epoch": self.epoch, "seq": seq, "full": True, "chunks": sorted(set(now))}
        return {"epoch": self.epoch, "seq": seq, "full": False, "chunks": self._order[int(m[2]) :]}


class InventoryWatch:
    """The store's inventory, re-read every `every_s` while a stream listens (and only then), each change
    numbered."""

    def __init__(self, read: Callable[[], list[str]], every_s: float = 0.1) -> None:
        self.read, self.every_s = read, every_s
        self.version = 0
        self.current: frozenset[str] = frozenset()
        self._cond = asyncio.Condition()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def changes(
        self, heartbeat_s: float = HEARTBEAT_S, max_s: float = STREAM_MAX_S
    ) -> AsyncIterator[frozenset[str]]:
        """What the store holds: at once, then at each change, and again (unchanged) after `heartbeat_s` of quiet,
        for `max_s`."""
        loop = asyncio.get_running_loop()
        self._listeners += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        try:
            seen, end = 0, loop.time() + max_s
            while loop.time() < end:
                async with self._cond:
                    if self.version == seen and not self._closed:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._cond.wait_for(partial(self._moved, seen)), heartbeat_s)
                    if self._closed:
                        return
                    seen, now = self.version, self.current
                yield now
        finally:
            self._listeners -= 1

    def _moved(self, seen: int) -> bool:
        return self.version != seen or self._closed

    async def _run(self) -> None:
        try:
            while self._listeners > 0 and not self._closed:
                try:
                    now = frozenset(await asyncio.to_thread(self.read))
                except OSError as exc:  # the store's files could not be read this time: the last answer stands
                    log.warning("inventory: reading the store failed: %s", exc)
                    await asyncio.sleep(self.every_s * 10)
                    continue
                if now != self.current or self.version == 0:
                    async with self._cond:
                        self.current, self.version = now, self.version + 1
                        self._cond.notify_all()
                await asyncio.sleep(self.every_s)
        finally:
            self._task = None

    async def close(self) -> None:
        """End every stream (the server stops)."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Following:
    """A swarm pull's view of what its peers hold, kept current by each peer's inventory stream: one thread per
    peer that does not yet hold all the pull wants. `learned(name, hashes)` is called (from those threads) with
    what a peer gained; a peer that fails `gone_after` times in a row is marked gone in the swarm (its chunks pass
    to the others) and taken back when it answers again."""

    def __init__(
        self,
        peers: dict[str, Peer],
        wanted: set[str],
        learned: Callable[[str, set[str]], None],
        swarm: Swarm,
        lock: threading.Condition,
        *,
        stream: bool = True,
        poll_s: float = 0.25,
        gone_after: int = 8,
    ) -> None:
        self.peers, self.wanted, self.learned, self.swarm, self.lock = peers, wanted, learned, swarm, lock
        self.stream, self.poll_s, self.gone_after = stream, poll_s, gone_after
        self._stop = threading.Event()
        self._open: set[http.client.HTTPConnection] = set()
        self._threads: list[threading.Thread] = []

    def start(self, full: set[str]) -> None:
        for name, peer in self.peers.items():
            if name not in full:
                t = threading.Thread(target=self._follow, args=(name, peer), name=f"pull-follow-{name}", daemon=True)
                self._threads.append(t)
                t.start()

    def stop(self) -> None:
        """End every stream at once (shutting its socket wakes the reading thread)."""
        self._stop.set()
        with self.lock:
            conns = list(self._open)
        for conn in conns:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)

    def _opened(self, conn: http.client.HTTPConnection, add: bool) -> None:
        with self.lock:
            if add:
                self._open.add(conn)
            else:
                self._open.discard(conn)
        if add and self._stop.is_set() and conn.sock is not None:  # stopped while this one was connecting
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _follow(self, name: str, peer: Peer) -> None:
        from spotstack.runtime.cache.sources import ChunkFailed, NoStream

        misses, stream = 0, self.stream
        while not self._stop.is_set() and not self.wanted <= peer.known():
            try:
                if stream:
                    peer.follow(self.wanted, lambda got: self._heard(name, got), self._opened, self._stop)
                else:
                    self._heard(name, peer.inventory() & self.wanted)
                misses = 0
            except NoStream:
                stream = False  # a peer from before the stream: poll it
                continue
            except (ChunkFailed, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                misses += 1
                log.debug("inventory of %s: %s", name, exc)
                if misses >= self.gone_after:
                    with self.lock:
                        self.swarm.gone.add(name)  # its chunks pass to the others meanwhile
                        self.lock.notify_all()  # the pull's workers waiting on its chunks may go on
            if stream and misses == 0:
                continue  # the stream ended (its bound, or the peer holds all we want): the loop decides
            self._stop.wait(self.poll_s)

    def _heard(self, name: str, got: set[str]) -> None:
        with self.lock:
            self.swarm.gone.discard(name)
        self.learned(name, got)
