"""The node's HTTP servers under hostile clients (hardening issue, items 3 and 4): the token never reaches a
log, malformed headers get 401, idle and half-sent connections are cut, a connection flood cannot starve
/ready, and a slow reader loses its transfer slot."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.cache.manifest import build_manifest, write_manifest
from spotstack.runtime.cache.server import PeerServer
from spotstack.runtime.cache.store import Store
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.net import Limits, serve
from spotstack.runtime.notices.event import InterruptionEvent, Kind
from tests.runtime.cachekit import TOKEN, MiB, do_pull
from tests.waits import wait_for


async def raw(port: int, data: bytes) -> bytes:
    """Send raw bytes, return whatever comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


@pytest.fixture
async def peer_server(tmp_path: Path) -> PeerServer:
    server = PeerServer(Store(tmp_path / "store", 1 << 30), TOKEN, "127.0.0.1", 0)
    await server.start()
    yield server  # type: ignore[misc]
    await server.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/inventory HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x01\r\n\r\n",
        b"GET /v1/inventory HTTP/1.1\r\nAuthorization: Bearer %s\r\nBad Header Line\r\n\r\n",
        b"GET /v1/inventory HTTP/1.1\r\nAuthorization : Bearer %s\r\n\r\n",
        b"GET /v1/inv\x00entory HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n",
    ],
)
async def test_a_malformed_request_never_logs_the_token(
    peer_server: PeerServer, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await raw(peer_server.port, request_bytes.replace(b"%s", TOKEN.encode()))
    assert answer.startswith(b"HTTP/1.") and answer[9:10] == b"4", answer[:40]
    logged = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert TOKEN not in logged
    assert "Traceback" not in logged


async def test_a_non_utf8_authorization_is_401_not_500(
    peer_server: PeerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await raw(
        peer_server.port,
        b"GET /v1/inventory HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    assert "Traceback" not in caplog.text


async def test_half_sent_requests_are_cut_at_the_header_deadline() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    limits = Limits(max_connections=50, header_timeout_s=0.3, keepalive_timeout_s=0.6)
    runner, port = await serve(app, "127.0.0.1", 0, limits=limits)
    try:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        trickle = await asyncio.open_connection("127.0.0.1", port)
        trickle[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        # A whole request, then partial headers of a second one on the same keep-alive connection.
        kept = await asyncio.open_connection("127.0.0.1", port)
        kept[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await kept[1].drain()
        assert (await kept[0].readuntil(b"hi")).startswith(b"HTTP/1.1 200")
        kept[1].write(b"GET / HTTP/1.1\r\n")
        for reader, _ in [*silent, trickle, kept]:
            assert await asyncio.wait_for(reader.read(-1), 10) == b""  # closed by the server
        assert limits.refused["header_timeout"] >= 6
        for _, writer in [*silent, trickle, kept]:
            writer.close()
    finally:
        await runner.cleanup()


async def test_a_connection_flood_cannot_starve_ready_or_the_drain(tmp_path: Path) -> None:
    """Far more idle connections than the cap: /ready still answers at once and the drain signals the workload."""
    marker = tmp_path / "workload-told"
    cfg = AgentConfig.model_validate(
        {
            "cloud": "gcp",
            "metadata": {"base_url": "http://127.0.0.1:9"},
            "readiness": {"host": "127.0.0.1", "port": 0},
            "workload": {"stop_command": ["touch", str(marker)]},
        }
    )
    agent = Agent(cfg)
    agent.injected.monitors = []
    await agent.start()
    assert agent.server is not None
    url = f"http://127.0.0.1:{agent.server.port}/ready"
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(600):
            conns.append(await asyncio.open_connection("127.0.0.1", agent.server.port))
        async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(5)) as r:
            assert r.status == 200
        # Those over the cap are closed at once: the agent keeps its descriptors for its own work.
        await wait_for(
            lambda: sum(reader.at_eof() for reader, _ in conns) >= 600 - 256, what="over-cap connections closed"
        )
        now = time.time()
        await agent._drain(InterruptionEvent(Kind.SPOT_INTERRUPTION, "gcp", now + 30, "flood", "test", now))
        assert marker.exists()
        assert agent.report is not None and agent.report.ok
    finally:
        for _, writer in conns:
            writer.close()
        await agent.stop()


async def test_a_slow_reader_loses_its_transfer_slot(tmp_path: Path) -> None:
    # 16 MiB chunks: one outgrows any socket buffer, so a reader that never reads stalls the send.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "big.bin").write_bytes(os.urandom(32 * MiB))
    m = build_manifest(str(tmp_path / "model"), chunk_size=16 * MiB)
    write_manifest(str(tmp_path / "model"), m)
    do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")
    server = PeerServer(Store(tmp_path / "store", 1 << 30), TOKEN, "127.0.0.1", 0, max_transfers=2, send_timeout_s=0.5)
    await server.start()
    chunk = m.files[0].chunks[0]
    slow: list[socket.socket] = []
    try:
        for _ in range(2):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(f"GET /v1/chunks/{chunk} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            slow.append(s)
        await wait_for(lambda: server.refused["too_slow"] >= 2, what="both slow readers cut")
        hdr = {"Authorization": f"Bearer {TOKEN}"}
        url = f"http://127.0.0.1:{server.port}/v1/chunks/{chunk}"
        async with aiohttp.ClientSession(headers=hdr) as session, session.get(url) as r:
            assert r.status == 200
            assert len(await r.read()) == 16 * MiB
    finally:
        for s in slow:
            s.close()
        await server.stop()


def test_the_agent_raises_its_open_file_limit() -> None:
    """systemd's default soft limit is 1024; the agent lifts it toward the hard limit at start."""
    import subprocess
    import sys

    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))\n"
        "from spotstack.runtime.net import raise_fd_limit\n"
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["4096", "4096"], out.stderr


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    """A port from inside the kernel's ephemeral range can be taken by an outbound connection's local end before its
    listener starts; free_port keeps below it where there is room, and what it gives can be bound."""
    from spotstack.runtime.net import PORTS_FROM, _ephemeral_low, free_port

    low = _ephemeral_low()
    ports = [free_port() for _ in range(20)]
    if low - PORTS_FROM > 1000:
        assert all(PORTS_FROM <= p < low for p in ports), ports
    assert len(set(ports)) > 10  # random, not one port handed to everyone
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
