"""The agent's HTTP server: /ready (the load balancer's probe), /healthz, /metrics, /status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spotstack.runtime.agent.metrics import AgentMetrics
from spotstack.runtime.agent.state import AgentState
from spotstack.runtime.net import bearer_matches, serve

LEAVING_AT_HEADER = "X-Spotstack-Leaving-At"
"""Epoch seconds at which a noticed node is due to go (on /ready answers, while a notice stands)."""


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
        release: Callable[[], bool] = lambda: False,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        """`release`: drain now for a deferred notice (True if one was); `token`: the fleet token that a
        release must carry (None: releases are refused, as nobody could prove they are the controller)."""
        self._release, self._token = release, token
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
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        self._health_cache = (time.monotonic(), ok)
        return ok

    async def not_ready(self) -> str | None:
        """Why this node is not READY, or None when it is (what /ready answers)."""
        if self.state.draining:
            return "draining"
        if self.state.blocked:
            return f"not ready: {self.state.blocked}"
        if self.state.model_pending:
            return "model loading"
        if not await self._workload_healthy():
            return "workload not ready"
        return None

    async def ready(self, request: web.Request) -> web.Response:
        # A gateway in front of the fleet reads when the node is due to go (LEAVING_AT_HEADER), to move long
        # streams off it before then; load balancers read the status alone.
        leaving = self.state.leaving_at
        headers = {LEAVING_AT_HEADER: f"{leaving:.3f}"} if leaving is not None else None
        why = await self.not_ready()
        if why is not None:
            return web.Response(status=503, text=f"{why}\n", headers=headers)
        if self.state.state == "starting":
            self.state.state = "serving"
            self.metrics.state.state("serving")
        return web.Response(text="ready\n", headers=headers)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.to_dict())

    async def release(self, request: web.Request) -> web.Response:
        """POST /release, from the fleet's controller once a noticed node's replacement is READY: the node
        leaves rotation now instead of at its deadline less the drain. Bearer-authenticated with the fleet
        token, since anyone else able to reach the port could otherwise take nodes out of rotation."""
        token = self._token()
        if token is None:
            return web.Response(status=403, text="no fleet token on this node: release is off\n")
        if not bearer_matches(request, token):
            return web.Response(status=401, text="a release needs the fleet token\n")
        if self._release():
            return web.json_response({"released": True}, status=202)
        return web.json_response({"released": False, "reason": "no deferred notice"}, status=409)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.ready_path, self.ready)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/status", self.status)
        app.router.add_post("/release", self.release)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
