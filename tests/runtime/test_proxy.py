"""The agent's counting proxy under hostile traffic (hardening round 3, items 2 and 3): bodies are streamed with a
cap, and a stream the upstream cuts reaches the client visibly broken, never as a clean-looking answer."""

from __future__ import annotations

import asyncio
import http.client
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.agent.proxy import CountingProxy
from spotstack.runtime.net import serve
from tests.waits import wait_for

MiB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def upstream_app(received: list[int]) -> tuple[web.AppRunner, int]:
    async def sink(request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        received.append(n)
        return web.json_response({"bytes": n})

    async def stream_then_die(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"data: token {i}\n\n".encode())
            await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.abort()  # the workload killed mid-answer
        return resp

    async def stream_whole(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"data: token {i}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=1 << 31)
    app.router.add_post("/sink", sink)
    app.router.add_get("/die", stream_then_die)
    app.router.add_get("/whole", stream_whole)
    return await serve(app, "127.0.0.1", 0)


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[CountingProxy, list[int]]]:
    received: list[int] = []
    runner, port = await upstream_app(received)
    proxy = CountingProxy(f"http://127.0.0.1:{port}", "127.0.0.1", 0, max_body_bytes=300 * MiB)
    await proxy.start()
    try:
        yield proxy, received
    finally:
        await proxy.stop()
        await runner.cleanup()


async def body(total: int) -> AsyncIterator[bytes]:
    block = b"x" * MiB
    for _ in range(total // MiB):
        yield block


async def test_a_large_body_streams_through_without_growing_the_agent(
    proxied: tuple[CountingProxy, list[int]],
) -> None:
    proxy, received = proxied
    before = rss()
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    async with aiohttp.ClientSession() as s:
        for _ in range(2):  # two 256 MB POSTs took the agent from 54 MB to 1.3 GB
            async with s.post(f"http://127.0.0.1:{proxy.port}/sink", data=body(256 * MiB)) as r:
                assert r.status == 200
                assert (await r.json())["bytes"] == 256 * MiB
    done.set()
    await sampler
    assert received == [256 * MiB, 256 * MiB]
    assert peak - before < 64 * MiB, f"the proxy grew by {(peak - before) / MiB:.0f} MiB"


@pytest.mark.slow
async def test_a_body_over_the_cap_gets_413_and_never_reaches_the_workload(
    proxied: tuple[CountingProxy, list[int]],
) -> None:
    proxy, received = proxied
    async with aiohttp.ClientSession() as s:
        declared = {"Content-Length": str(301 * MiB)}
        async with s.post(f"http://127.0.0.1:{proxy.port}/sink", data=body(301 * MiB), headers=declared) as r:
            assert r.status == 413
    assert received == []
    # Without a length (chunked), the cap holds as the bytes arrive.
    async with aiohttp.ClientSession() as s:
        try:
            async with s.post(f"http://127.0.0.1:{proxy.port}/sink", data=body(400 * MiB)) as r:
                assert r.status == 413
        except aiohttp.ClientError:
            pass  # the proxy stopped reading: the client may see the connection go instead
    assert all(n <= 300 * MiB for n in received)
    assert proxy.inflight == 0


async def test_a_stream_cut_upstream_is_cut_for_the_client(proxied: tuple[CountingProxy, list[int]]) -> None:
    proxy, _ = proxied
    # aiohttp (what an OpenAI client uses) sees an error, not a hang and not a clean end.
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{proxy.port}/die") as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(r.read(), 10)
    assert proxy.cut == 1

    # http.client (the stdlib): an incomplete read, never a normal end with a 502 inside the body.
    def stdlib() -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            conn.request("GET", "/die")
            return conn.getresponse().read()
        finally:
            conn.close()

    with pytest.raises(http.client.IncompleteRead) as cut:
        await asyncio.to_thread(stdlib)
    assert b"502" not in cut.value.partial
    await wait_for(lambda: proxy.cut == 2 and proxy.inflight == 0, what="the second cut counted")


async def test_a_whole_stream_passes_unchanged(proxied: tuple[CountingProxy, list[int]]) -> None:
    proxy, _ = proxied
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{proxy.port}/whole") as r:
        text = await r.text()
    assert text.endswith("data: [DONE]\n\n") and text.count("data:") == 6
    assert proxy.cut == 0
