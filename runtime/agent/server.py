"""The agent's HTTP server: /ready (the load balancer's probe), /healthz, /metrics, /status."""

from __future__ import annotations

import time

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spotstack.runtime.agent.metrics import AgentMetrics
from spotstack.runtime.agent.state import AgentState
from spotstack.runtime.net import serve


class AgentServer:
    def __init__(
        self,
        state: AgentState,
        metrics: AgentMetrics,
        host: str,
        port: int,
        ready_path: str,
        workload_health_url: str | None,
        session: aiohttp.ClientSession,
    ) -> None:
        self.state, self.metrics = state, metrics
        self.host, self.port, self.ready_path = host, port, ready_path
        self.workload_health_url = workload_health_url
        self._session = session
        self._health_cache: tuple[float, bool] = (0.0, False)
        self._runner: web.AppRunner | None = None

    async def _workload_healthy(self) -> bool:
        if self.workload_health_url is None:
            return True
        checked, ok = self._health_cache
        if time.monotonic() - checked < 0.5:  # the LB and HAProxy probe often; the workload needn't see each
            return ok
        try:
            async with self._session.get(self.workload_health_url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self._health_cache = (time.monotonic(), ok)
        return ok

    async def ready(self, request: web.Request) -> web.Response:
        if self.state.draining:
            return web.Response(status=503, text="draining\n")
        if self.state.blocked:
            return web.Response(status=503, text=f"not ready: {self.state.blocked}\n")
        if self.state.model_pending:
            return web.Response(status=503, text="model loading\n")
        if not await self._workload_healthy():
            return web.Response(status=503, text="workload not ready\n")
        if self.state.state == "starting":
            self.state.state = "serving"
            self.metrics.state.state("serving")
        return web.Response(text="ready\n")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.to_dict())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.ready_path, self.ready)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/status", self.status)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
