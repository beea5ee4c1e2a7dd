"""The local fleet's last resort behind HAProxy: a backup server that holds a request while no replica is in
rotation, and hands it to the first one READY again.

HAProxy answers "503 no server available" at once when every server is down or draining, and queues only for
servers that are up but full. A fleet whose every replica got its notice at once has such a window: each noticed
node leaves rotation before the replacements are READY (2-4 s of 503s when the adversarial run preempted them
all). A cloud's front door should not turn a short gap into errors either (the gateway of the LLM issue holds
requests the same way). Bounded: past `hold_s` the answer is 503 with the reason (HAProxy retries a 503 three
times, so a client waits at most 4 x `hold_s`, well inside its 60 s server timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from spotstack.runtime.agent.proxy import HOP
from spotstack.runtime.net import serve

Candidate = tuple[int, int]
"""A replica: (traffic port, readiness port)."""


class HoldServer:
    def __init__(self, candidates: Callable[[], list[Candidate]], hold_s: float = 5.0, poll_s: float = 0.05) -> None:
        self.candidates, self.hold_s, self.poll_s = candidates, hold_s, poll_s
        self.port = 0
        self.held = 0
        """Requests that arrived with no replica in rotation."""
        self.gave_up = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2))
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _ready(self, check_port: int) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(
                f"http://127.0.0.1:{check_port}/ready", timeout=aiohttp.ClientTimeout(total=1)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        self.held += 1
        body = await request.read() if request.body_exists else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        end = time.monotonic() + self.hold_s
        while time.monotonic() < end:
            for port, check_port in self.candidates():
                if not await self._ready(check_port):
                    continue
                try:
                    async with self._session.request(
                        request.method, f"http://127.0.0.1:{port}{request.rel_url.path_qs}", headers=headers, data=body
                    ) as up:
                        answer = web.Response(status=up.status, reason=up.reason, body=await up.read())
                        answer.headers.extend((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
                        return answer
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    continue  # it went between its check and the request: the next one
            await asyncio.sleep(self.poll_s)
        self.gave_up += 1
        return web.Response(status=503, text=f"no replica READY within {self.hold_s:g}s\n")
