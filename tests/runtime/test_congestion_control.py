"""The TCP congestion control a node's peer cache sends with: from the fleet spec to the sockets of the
connections it accepts; one the host refuses is logged and the server serves with the host's default."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from spotstack.components import node
from spotstack.components.spec import FleetSpec
from spotstack.runtime.cache.server import PeerServer
from spotstack.runtime.cache.store import Store
from spotstack.runtime.net import TCP_CONGESTION, serve
from tests.conftest import base_fleet
from tests.runtime.cachekit import TOKEN

SYSCTL = Path("/proc/sys/net/ipv4")
pytestmark = pytest.mark.skipif(not (SYSCTL / "tcp_congestion_control").exists(), reason="Linux TCP only")


def host_default() -> str:
    return (SYSCTL / "tcp_congestion_control").read_text().strip()


def other_than_default() -> str:
    """An algorithm this host has that is not its default, so the test sees the setting take effect."""
    available = (SYSCTL / "tcp_available_congestion_control").read_text().split()
    return next(n for n in ("reno", "cubic") if n in available and n != host_default())


async def sent_with(request: web.Request) -> web.Response:
    """The congestion control of the connection this request came on (the server's end)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    assert sock is not None
    return web.Response(text=sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).rstrip(b"\0").decode())


async def ask(port: int) -> str:
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/cc", headers=hdr) as r:
        assert r.status == 200
        return await r.text()


async def test_served_connections_send_with_the_congestion_control_given() -> None:
    app = web.Application()
    app.router.add_get("/cc", sent_with)
    name = other_than_default()
    runner, port = await serve(app, "127.0.0.1", 0, congestion_control=name)
    try:
        assert await ask(port) == name
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("name", ["nosuchcc", "cübic"])
async def test_one_the_host_lacks_is_logged_and_the_server_serves_as_the_host_would(
    caplog: pytest.LogCaptureFixture, name: str
) -> None:
    app = web.Application()
    app.router.add_get("/cc", sent_with)
    runner, port = await serve(app, "127.0.0.1", 0, congestion_control=name)
    try:
        assert await ask(port) == host_default()
    finally:
        await runner.cleanup()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{name!r} is not in this kernel (available: " in m and host_default() in m for m in logged), logged


class ProbedPeer(PeerServer):
    """The peer server with one more route, which says how its connections send."""

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/cc", sent_with)
        return app


async def test_the_peer_cache_sends_chunks_with_it(tmp_path: Path) -> None:
    name = other_than_default()
    server = ProbedPeer(Store(tmp_path / "store", 1 << 30), TOKEN, "127.0.0.1", 0, congestion_control=name)
    await server.start()
    try:
        assert await ask(server.port) == name
    finally:
        await server.stop()
    plain = ProbedPeer(Store(tmp_path / "store", 1 << 30), TOKEN, "127.0.0.1", 0)
    await plain.start()
    try:
        assert await ask(plain.port) == host_default()
    finally:
        await plain.stop()


def test_the_fleet_spec_sets_it_for_every_node() -> None:
    raw = base_fleet()
    raw["model_cache"]["congestion_control"] = "cubic"
    cfg = node.agent_config(FleetSpec.model_validate(raw), "aws", model_scheme="s3", discovery="aws")
    assert cfg.cache.congestion_control == "cubic"
    assert '"congestion_control": "cubic"' in cfg.to_json()
    del raw["model_cache"]["congestion_control"]
    cfg = node.agent_config(FleetSpec.model_validate(raw), "aws", model_scheme="s3", discovery="aws")
    assert cfg.cache.congestion_control is None and "congestion_control" not in cfg.to_json()
