"""Every replica out of rotation at once (hardening round 3, item 9): a real HAProxy sends requests to the fleet's
hold server, which hands them to the first replica READY again instead of HAProxy's immediate 503."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.drain.haproxy import runtime_command
from spotstack.runtime.local.haproxy import BACKEND, HAProxy, Server
from spotstack.runtime.local.hold import HoldServer
from spotstack.runtime.net import free_port, serve
from tests.waits import wait_for

pytestmark = pytest.mark.haproxy
if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
    pytest.skip("haproxy not installed (apt-get install haproxy)", allow_module_level=True)


class Replica:
    def __init__(self, name: str) -> None:
        self.name, self.ready, self.served = name, True, 0
        self.port = self.check_port = 0
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        async def work(request: web.Request) -> web.Response:
            self.served += 1
            return web.Response(text=self.name)

        async def ready(request: web.Request) -> web.Response:
            return web.Response(status=200 if self.ready else 503)

        app, check = web.Application(), web.Application()
        app.router.add_route("*", "/{tail:.*}", work)
        check.router.add_get("/ready", ready)
        runner, self.port = await serve(app, "127.0.0.1", 0)
        check_runner, self.check_port = await serve(check, "127.0.0.1", 0)
        self._runners = [runner, check_runner]

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[HAProxy, list[Replica], HoldServer]]:
    replicas = [Replica("r0"), Replica("r1"), Replica("r2")]
    for r in replicas:
        await r.start()
    replicas[2].ready = False  # the replacement, still loading
    hold = HoldServer(lambda: [(r.port, r.check_port) for r in replicas], hold_s=10)
    await hold.start()
    lb = HAProxy(tmp_path, free_port(), [Server(r.name, r.port, r.check_port) for r in replicas], hold_port=hold.port)
    await lb.start()
    try:
        await lb.wait_healthy(["r0", "r1"])
        # HAProxy takes a server as up until its checks fail: the loading replacement must be seen down first.
        await wait_for(lambda: _down(lb, "r2"), what="HAProxy to see the replacement still loading")
        yield lb, replicas, hold
    finally:
        await lb.stop()
        await hold.stop()
        for r in replicas:
            await r.stop()


async def _down(lb: HAProxy, name: str) -> bool:
    return (await lb.server_states()).get(name, "").startswith("op=0")


async def test_requests_wait_for_a_replacement_when_every_replica_left(
    fleet: tuple[HAProxy, list[Replica], HoldServer],
) -> None:
    lb, replicas, hold = fleet
    url = f"http://127.0.0.1:{lb.listen_port}/embed"
    # Both serving replicas get their notice at once: readiness off and drained through the runtime API.
    for r in replicas[:2]:
        r.ready = False
        await runtime_command(str(lb.socket), f"set server {BACKEND}/{r.name} state drain")
    async with aiohttp.ClientSession() as s:

        async def one() -> int:
            async with s.get(url) as resp:
                await resp.read()
                return resp.status

        pending = [asyncio.create_task(one()) for _ in range(8)]
        await wait_for(lambda: hold.held >= 8, what="the requests to be held, not refused")
        assert not any(t.done() for t in pending)
        replicas[2].ready = True  # the replacement is READY: the held requests go there
        statuses = await asyncio.gather(*pending)
    assert statuses == [200] * 8
    assert replicas[2].served == 8 and hold.gave_up == 0


async def test_a_hold_past_its_bound_is_a_503_with_the_reason() -> None:
    hold = HoldServer(lambda: [], hold_s=0.3)
    await hold.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{hold.port}/embed", data=b"x") as r:
            assert r.status == 503 and "no replica READY within 0.3s" in await r.text()
    finally:
        await hold.stop()
