"""What every emulator shares: start/stop on loopback, fault injection, the control routes."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from spotstack.runtime.net import serve

CONTROL = "/_emulator"


@dataclass
class Fault:
    """Answer the next `count` requests under `path` with `status`/`body`, after `delay_s`."""

    path: str
    status: int = 500
    body: str = ""
    delay_s: float = 0.0
    count: int = 1


class EmulatorServer(ABC):
    """An aiohttp app on 127.0.0.1 (or a given host/port); use `async with` or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.faults: list[Fault] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._fault_middleware])
        self.app.router.add_post(f"{CONTROL}/fault", self._post_fault)
        self.app.router.add_post(f"{CONTROL}/reset", self._post_reset)
        self.app.router.add_get(f"{CONTROL}/state", self._get_state)
        self.routes(self.app)

    # -- for subclasses --------------------------------------------------------------------
    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add the cloud's metadata paths and its control routes."""

    def state(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        self.faults.clear()

    def closing(self) -> None:  # noqa: B027 - an optional hook; most emulators have nothing to release
        """Release anything a handler is waiting on (long-polls) before shutdown."""

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        # Short shutdown: a test stopping an emulator must not wait out a client's long-poll.
        self._runner, self.port = await serve(self.app, self.host, self.port, shutdown_timeout=0.5)
        return self.url

    async def stop(self) -> None:
        self.closing()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults and control ------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(CONTROL):
            return await handler(request)  # type: ignore[no-any-return]
        self.requests += 1
        for fault in self.faults:
            if fault.count > 0 and request.path.startswith(fault.path):
                fault.count -= 1
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                return web.Response(status=fault.status, text=fault.body)
        return await handler(request)  # type: ignore[no-any-return]

    async def _post_fault(self, request: web.Request) -> web.Response:
        self.inject(Fault(**await request.json()))
        return web.json_response({"ok": True})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, **self.state()})


def iso_utc(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
