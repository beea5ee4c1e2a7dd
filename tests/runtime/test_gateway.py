"""The fleet gateway against real generative replicas (runtime/llm/server.py, greedy decoding: an uninterrupted run
is the exact reference): streams continued across a replica that dies before its first byte, mid-stream and during
the continuation itself; completions and chat, token-id and text forms; a request with no READY replica; API keys;
a client that reads too slowly; the gateway's own drain. Early migration: test_gateway_migration.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.gateway.keys import Keys
from spotstack.runtime.gateway.replicas import Pool
from spotstack.runtime.gateway.server import Gateway, GatewayConfig
from spotstack.runtime.llm.model import TinyLM, decode, encode
from spotstack.runtime.llm.server import EngineTiming, LlmServer, chat_prompt
from spotstack.runtime.net import serve
from tests.waits import wait_for

FAST = EngineTiming(tokens_per_s=150.0, ttft_s=0.02)
MODEL = TinyLM()


def reference(prompt: list[int], n: int) -> list[int]:
    cache = MODEL.new_cache()
    out = [MODEL.prefill(cache, prompt)]
    while len(out) < n:
        out.append(MODEL.step(cache, out[-1]))
    return out


class Readiness:
    """A replica's agent as the gateway sees it: /ready, with the node's due time once a notice stands."""

    def __init__(self) -> None:
        self.ready = True
        self.leaving_at: float | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def ready(request: web.Request) -> web.Response:
            headers = {"X-Spotstack-Leaving-At": f"{self.leaving_at:.3f}"} if self.leaving_at else None
            return web.Response(status=200 if self.ready else 503, headers=headers)

        app = web.Application()
        app.router.add_get("/ready", ready)
        self.runner, self.port = await serve(app, "127.0.0.1", 0)


@dataclass
class Fleet:
    replicas: list[LlmServer]
    agents: list[Readiness]
    gateway: Gateway
    session: aiohttp.ClientSession
    extra: list[web.AppRunner] = field(default_factory=list)

    def serving(self) -> LlmServer:
        (busy,) = [r for r in self.replicas if r.active]
        return busy

    def kill(self, r: LlmServer) -> None:
        """The replica dies: its streams are cut at the transport and its agent stops answering READY."""
        self.agents[self.replicas.index(r)].ready = False
        r.ready = False
        r.abort_streams()


async def make_fleet(
    n: int = 3, cfg: GatewayConfig | None = None, keys: Keys | None = None, before: list[str] | None = None
) -> Fleet:
    replicas, agents, specs = [], [], list(before or [])
    for _ in range(n):
        r, a = LlmServer(timing=FAST), Readiness()
        await r.start()
        await a.start()
        replicas.append(r)
        agents.append(a)
        specs.append(f"{r.url} ready=http://127.0.0.1:{a.port}/ready")
    gw = Gateway(cfg or GatewayConfig(wait_s=5.0), Pool(specs, probe_s=0.05), keys)
    await gw.start()
    return Fleet(replicas, agents, gw, aiohttp.ClientSession())


async def close(f: Fleet) -> None:
    await f.session.close()
    await f.gateway.stop()
    for r in f.replicas:
        await r.stop()
    for a in f.agents:
        assert a.runner is not None
        await a.runner.cleanup()
    for x in f.extra:
        await x.cleanup()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    f = await make_fleet()
    yield f
    await close(f)


@dataclass
class Streamed:
    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0
    error: str | None = None

    @property
    def text(self) -> str:
        out = []
        for e in self.events:
            for c in e.get("choices") or []:
                out.append(c.get("text") or (c.get("delta") or {}).get("content") or "")
        return "".join(out)

    @property
    def usage(self) -> dict[str, int]:
        (u,) = [e["usage"] for e in self.events if e.get("usage")]
        return u


async def stream(
    f: Fleet,
    path: str,
    body: dict[str, Any],
    on_tokens: tuple[int, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Streamed:
    """POST a streaming request through the gateway; `on_tokens` (n, fn): call fn once n tokens have arrived."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with f.session.post(f.gateway.url + path, json=body, headers=headers) as resp:
        out = Streamed(resp.status)
        if resp.status != 200:
            out.error = await resp.text()
            return out
        tokens = 0
        try:
            async for line in resp.content:
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    out.done += 1
                    continue
                doc = json.loads(line[6:])
                out.events.append(doc)
                tokens += sum(
                    1 for c in doc.get("choices") or [] if c.get("text") or (c.get("delta") or {}).get("content")
                )
                if on_tokens and tokens == on_tokens[0]:
                    on_tokens[1]()
        except aiohttp.ClientPayloadError as exc:
            out.error = str(exc)
        return out


def assert_one_response(s: Streamed, expect: str, prompt_tokens: int) -> None:
    assert s.status == 200 and s.error is None, s.error
    assert s.text == expect, (len(s.text), len(expect))
    assert s.done == 1
    assert len({e["id"] for e in s.events}) == 1
    assert s.usage == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(expect),
        "total_tokens": prompt_tokens + len(expect),
    }
    finishes = [c["finish_reason"] for e in s.events for c in e.get("choices") or [] if c.get("finish_reason")]
    assert finishes == ["length"]


# ---- continuation ---------------------------------------------------------------------------------
async def test_a_completion_continues_in_token_ids_when_its_replica_dies_mid_stream(fleet: Fleet) -> None:
    prompt = "The spot market opened at"
    expect = decode(reference(encode(prompt), 120))
    s = await stream(
        fleet, "/v1/completions", {"prompt": prompt, "max_tokens": 120}, (30, lambda: fleet.kill(fleet.serving()))
    )
    assert_one_response(s, expect, len(prompt))
    assert "token_ids" not in json.dumps(s.events)  # asked for by the gateway, not by this client
    text = await (await fleet.session.get(fleet.gateway.url + "/metrics")).text()
    assert 'spotstack_gateway_streams_continued_total{why="cut"} 1.0' in text


async def test_a_token_id_prompt_continues_too(fleet: Fleet) -> None:
    ids = encode("tokens in, tokens out")
    # Cut at 45 of 180 tokens: the replica is still generating when the client has read a quarter (with 90, a busy
    # machine's client lagged 45 tokens behind and the replica had finished: nothing left to cut).
    expect = decode(reference(ids, 180))
    s = await stream(
        fleet, "/v1/completions", {"prompt": ids, "max_tokens": 180}, (45, lambda: fleet.kill(fleet.serving()))
    )
    assert_one_response(s, expect, len(ids))


async def test_text_form_continues_a_completion_and_a_chat() -> None:
    f = await make_fleet(cfg=GatewayConfig(form="text", wait_s=5.0))
    try:
        prompt = "Once upon a time"
        expect = decode(reference(encode(prompt), 80))
        s = await stream(f, "/v1/completions", {"prompt": prompt, "max_tokens": 80}, (20, lambda: f.kill(f.serving())))
        assert_one_response(s, expect, len(prompt))

        messages = [{"role": "user", "content": "Tell me about spot GPUs."}]
        chat_ids = encode(chat_prompt(messages, True, False))
        expect = decode(reference(chat_ids, 100))
        s = await stream(
            f, "/v1/chat/completions", {"messages": messages, "max_tokens": 100}, (50, lambda: f.kill(f.serving()))
        )
        assert_one_response(s, expect, len(chat_ids))
        roles = [c["delta"]["role"] for e in s.events for c in e.get("choices") or [] if "role" in c.get("delta", {})]
        assert roles == ["assistant"]  # the continuation's own role event is not repeated to the client
    finally:
        await close(f)


async def test_a_second_cut_during_the_continuation_is_continued_again(fleet: Fleet) -> None:
    prompt = "twice unlucky"
    expect = decode(reference(encode(prompt), 150))
    kills = {"n": 0}

    def kill() -> None:
        kills["n"] += 1
        fleet.kill(fleet.serving())

    body = {"prompt": prompt, "max_tokens": 150}
    async with fleet.session.post(fleet.gateway.url + "/v1/completions", json={**body, "stream": True}) as resp:
        got, text = 0, []
        async for line in resp.content:
            if line.startswith(b"data: {"):
                text.append(json.loads(line[6:])["choices"][0]["text"])
                got += 1
                if got in (30, 90):
                    kill()
    assert "".join(text) == expect and kills["n"] == 2
    metrics = await (await fleet.session.get(fleet.gateway.url + "/metrics")).text()
    assert 'spotstack_gateway_streams_continued_total{why="cut"} 2.0' in metrics


async def test_a_non_streaming_request_is_continued_inside_the_gateway(fleet: Fleet) -> None:
    prompt = "whole answers too"
    expect = decode(reference(encode(prompt), 100))

    async def killer() -> None:
        await wait_for(lambda: any(r.active for r in fleet.replicas), 10, "the request to start")
        busy = fleet.serving()
        # Some tokens generated on it (the client sees none until the end), then it dies.
        await wait_for(lambda: busy.generated >= 20, 10, "20 tokens from the first replica")
        fleet.kill(busy)

    k = asyncio.create_task(killer())
    async with fleet.session.post(
        fleet.gateway.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 100}
    ) as r:
        doc = await r.json()
    await k
    assert r.status == 200 and doc["choices"][0]["text"] == expect
    assert doc["usage"]["completion_tokens"] == 100 and doc["usage"]["prompt_tokens"] == len(prompt)


async def test_sampling_with_a_seed_continues_with_the_same_draws(fleet: Fleet) -> None:
    body = {"prompt": "roll the dice", "max_tokens": 80, "temperature": 0.8, "seed": 7}
    whole = await stream(fleet, "/v1/completions", body)
    cut = await stream(fleet, "/v1/completions", body, (25, lambda: fleet.kill(fleet.serving())))
    assert cut.error is None and cut.text == whole.text and len(whole.text) == 80


# ---- failures before the first byte, and no replica at all -----------------------------------------
async def test_a_replica_that_fails_before_its_first_byte_is_skipped() -> None:
    hits = []

    async def reset(request: web.Request) -> web.Response:
        hits.append(1)
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/completions", reset)

    async def ready(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/ready", ready)
    runner, port = await serve(app, "127.0.0.1", 0)
    f = await make_fleet(n=1, before=[f"http://127.0.0.1:{port}"])  # listed first: the router's first choice
    f.extra.append(runner)
    try:
        prompt = "first try fails"
        s = await stream(f, "/v1/completions", {"prompt": prompt, "max_tokens": 40})
        assert_one_response(s, decode(reference(encode(prompt), 40)), len(prompt))
        assert hits == [1]  # tried once, then the request went on to the working replica
    finally:
        await close(f)


async def test_with_no_ready_replica_a_request_waits_then_gets_503_with_a_reason() -> None:
    f = await make_fleet(n=2, cfg=GatewayConfig(wait_s=1.0))
    try:
        for a in f.agents:
            a.ready = False
        await wait_for(lambda: not any(r.ready for r in f.gateway.pool.views()), 10, "the probes to see it")
        t = time.monotonic()
        async with f.session.post(f.gateway.url + "/v1/completions", json={"prompt": "x", "max_tokens": 5}) as r:
            doc = await r.json()
        assert r.status == 503 and time.monotonic() - t >= 1.0
        assert "no replica could serve the request: no READY replica" in doc["error"]["message"]
        # One that becomes READY while a request waits takes it.
        task = asyncio.create_task(stream(f, "/v1/completions", {"prompt": "late", "max_tokens": 5}))
        await wait_for(lambda: f.gateway.inflight == 1, 10, "the request to be waiting in the gateway")
        f.agents[1].ready = True
        assert (await task).text == decode(reference(encode("late"), 5))
    finally:
        await close(f)


# ---- keys, slow clients, drain --------------------------------------------------------------------
async def test_without_a_valid_key_401_and_nothing_reaches_a_replica(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("# team A\nsk-alpha-123\nsk-beta-456\n")
    keyfile.chmod(0o600)
    f = await make_fleet(n=1, keys=Keys.from_file(keyfile))
    try:
        body = {"prompt": "secret", "max_tokens": 5}
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "sk-alpha-123"}):
            async with f.session.post(f.gateway.url + "/v1/completions", json=body, headers=headers) as r:
                assert r.status == 401, headers
                assert "sk-" not in await r.text()
        assert f.replicas[0].served == 0
        s = await stream(f, "/v1/completions", body, headers={"Authorization": "Bearer sk-beta-456"})
        assert s.status == 200 and s.text == decode(reference(encode("secret"), 5))
    finally:
        await close(f)


@pytest.mark.slow
async def test_a_client_that_does_not_read_is_cut_and_frees_its_replica() -> None:
    f = await make_fleet(n=1, cfg=GatewayConfig(client_buffer_bytes=64 << 10))
    f.replicas[0].timing = EngineTiming(tokens_per_s=5000.0, ttft_s=0.0)
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", f.gateway.port)
        # A tiny receive window, and this client never reads past the headers.
        sock = writer.get_extra_info("socket")
        import socket

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        body = json.dumps({"prompt": "flood", "max_tokens": 8000, "stream": True}).encode()
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        # The stream started (its tokens were generated); a window check on `active == 1` could miss a short one.
        await wait_for(lambda: f.replicas[0].generated > 0, 10, "the stream to start")
        # The gateway cuts the client once 64 KiB wait for it; the replica's request ends with it.
        await wait_for(lambda: f.replicas[0].active == 0, 30, "the replica to be freed")
        assert f.replicas[0].served == 1
        metrics = await (await f.session.get(f.gateway.url + "/metrics")).text()
        assert 'spotstack_gateway_requests_total{outcome="client_gone"} 1.0' in metrics
        writer.close()
    finally:
        await close(f)


@pytest.mark.slow
async def test_drain_finishes_streams_in_flight_and_refuses_new_ones(fleet: Fleet) -> None:
    prompt = "finish what you started"
    expect = decode(reference(encode(prompt), 300))
    task = asyncio.create_task(stream(fleet, "/v1/completions", {"prompt": prompt, "max_tokens": 300}))
    await wait_for(lambda: fleet.gateway.inflight == 1, 10, "the stream to start")
    drained = asyncio.create_task(fleet.gateway.drain(30))
    await wait_for(lambda: fleet.gateway.draining, 5, "the drain")
    async with fleet.session.get(fleet.gateway.url + "/ready") as r:
        assert r.status == 503
    async with fleet.session.post(fleet.gateway.url + "/v1/completions", json={"prompt": "new", "max_tokens": 3}) as r:
        assert r.status == 503
    s = await task
    assert_one_response(s, expect, len(prompt))
    assert await drained
