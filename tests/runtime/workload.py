"""A stand-in model server for agent tests: /ready, and /work that takes `ms` milliseconds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from spotstack.runtime.net import serve


class FakeWorkload:
    def __init__(self) -> None:
        self.served = 0
        self.inflight = 0
        self.healthy = True
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def work(self, request: web.Request) -> web.Response:
        self.inflight += 1
        try:
            await asyncio.sleep(float(request.query.get("ms", "20")) / 1000)
            self.served += 1
            return web.Response(text="done\n")
        finally:
            self.inflight -= 1

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/ready", self.ready)
        app.router.add_route("*", "/work", self.work)
        self._runner, self.port = await serve(app, "127.0.0.1", 0)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
