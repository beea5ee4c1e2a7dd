"""The node's servers and clients, hardening round 3 (items 12, 19 and 20): a non-UTF-8 Authorization is a 401, not
a 500; a malformed request's 400 never echoes its headers; HEAD on a chunk answers as documented; a slow reader is
one log line, not a traceback; a metadata server's 50 MB answer is refused, not read."""

from __future__ import annotations

import logging
import os
import socket
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.agent.metrics import AgentMetrics
from spotstack.runtime.agent.server import AgentServer
from spotstack.runtime.agent.state import AgentState
from spotstack.runtime.cache.manifest import build_manifest, write_manifest
from spotstack.runtime.cache.server import PeerServer
from spotstack.runtime.cache.store import Store
from spotstack.runtime.net import serve
from spotstack.runtime.notices.metadata import MetadataError, aws_imds
from tests.runtime.cachekit import TOKEN, MiB, do_pull
from tests.runtime.test_server_hardening import raw
from tests.waits import wait_for


async def test_release_with_a_non_utf8_authorization_is_401_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with aiohttp.ClientSession() as session:
        server = AgentServer(
            AgentState("aws", "n1"),
            AgentMetrics(),
            "127.0.0.1",
            0,
            "/ready",
            None,
            session,
            release=lambda: True,
            token=lambda: TOKEN,
        )
        await server.start()
        try:
            answer = await raw(
                server.port,
                b"POST /release HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
                b"Authorization: Bearer \xff\xfe\xc3\x28\r\n\r\n",
            )
        finally:
            await server.stop()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN-1234\x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN-1234\r\nBad\x01Header: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nAuthorization: Bearer SECRET-TOKEN-1234" + b"a" * 9000 + b"\r\n\r\n",
    ],
)
async def test_a_400_never_echoes_the_request(request_bytes: bytes) -> None:
    app = web.Application()
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        answer = await raw(port, request_bytes)
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert b"SECRET" not in answer and b"Header" not in answer.split(b"\r\n\r\n", 1)[1]


@pytest.fixture
async def peer_with_chunk(tmp_path: Path) -> tuple[PeerServer, str]:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "big.bin").write_bytes(os.urandom(32 * MiB))
    m = build_manifest(str(tmp_path / "model"), chunk_size=16 * MiB)
    write_manifest(str(tmp_path / "model"), m)
    do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")
    server = PeerServer(Store(tmp_path / "store", 1 << 30), TOKEN, "127.0.0.1", 0, max_transfers=2, send_timeout_s=0.5)
    await server.start()
    yield server, m.files[0].chunks[0]  # type: ignore[misc]
    await server.stop()


async def test_head_on_a_chunk_answers_its_size(peer_with_chunk: tuple[PeerServer, str]) -> None:
    server, chunk = peer_with_chunk
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=hdr) as s,
        s.head(f"http://127.0.0.1:{server.port}/v1/chunks/{chunk}") as r,
    ):
        assert r.status == 200 and r.headers["Content-Length"] == str(16 * MiB)
        assert r.headers["X-Chunk-Hash"] == chunk


async def test_a_slow_reader_is_one_line_not_a_traceback(
    peer_with_chunk: tuple[PeerServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, chunk = peer_with_chunk
    caplog.set_level(logging.INFO)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(("127.0.0.1", server.port))
        s.sendall(f"GET /v1/chunks/{chunk} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        await wait_for(lambda: server.refused["too_slow"] >= 1, what="the slow reader cut")
        await wait_for(lambda: "too slowly" in caplog.text, what="its one line")
    finally:
        s.close()
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


async def test_a_huge_metadata_answer_is_refused_without_reading_it() -> None:
    big = b"x" * (50 << 20)

    async def token(request: web.Request) -> web.Response:
        return web.Response(text="tok")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the reader cannot know the size up front
        await resp.prepare(request)
        for i in range(0, len(big), 1 << 20):
            try:
                await resp.write(big[i : i + (1 << 20)])
            except ConnectionError:
                break
        return resp

    app = web.Application()
    app.router.add_put("/latest/api/token", token)
    app.router.add_get("/latest/meta-data/spot/instance-action", huge)
    runner, port = await serve(app, "127.0.0.1", 0)
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = aws_imds(session, f"http://127.0.0.1:{port}", timeout_s=10)
            with pytest.raises(MetadataError, match="over"):
                await client.get("/latest/meta-data/spot/instance-action")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await runner.cleanup()
    assert peak < 8 << 20, f"the client held {peak / MiB:.0f} MiB"
