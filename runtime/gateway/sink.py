"""The client's side of a stream: a bounded buffer drained by a writer task, so that the replica's stream is read at
the replica's pace whatever the client's, and a client slower than the buffer is cut (it never holds a replica)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web


class ClientSink:
    """The client's side of a stream: a writer task drains a bounded buffer, so the upstream is read at the
    replica's pace whatever the client's."""

    def __init__(self, resp: web.StreamResponse, request: web.Request, limit: int) -> None:
        self.resp, self.request, self.limit = resp, request, limit
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.broken: str | None = None
        self.task = asyncio.create_task(self._run())

    def put(self, data: bytes) -> bool:
        if self.broken:
            return False
        self.queued += len(data)
        if self.queued > self.limit:
            self.cut(f"the client read too slowly ({self.queued} bytes waiting)")
            return False
        self.queue.put_nowait(data)
        return True

    def cut(self, why: str) -> None:
        self.broken = self.broken or why
        if self.request.transport is not None:
            self.request.transport.abort()

    async def _run(self) -> None:
        while (data := await self.queue.get()) is not None:
            try:
                await self.resp.write(data)
            except (ConnectionError, aiohttp.ClientConnectionResetError, RuntimeError):
                self.broken = self.broken or "the client went away"
                return
            self.queued -= len(data)

    async def close(self, timeout: float) -> bool:
        """Flush what is left (a slow client gets `timeout`); True when the client took everything."""
        self.queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            self.cut("the client did not read the end of its answer")
            self.task.cancel()
        return self.broken is None
