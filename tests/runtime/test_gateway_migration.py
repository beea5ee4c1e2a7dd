"""Streams leaving a node that is due to go, before it goes: each early enough, and not all at one instant."""

from __future__ import annotations

import asyncio
import time

import pytest

from spotstack.runtime.gateway.server import GatewayConfig
from spotstack.runtime.llm.model import decode, encode
from tests.runtime.test_gateway import assert_one_response, close, make_fleet, reference, stream
from tests.waits import wait_for


@pytest.mark.slow
async def test_a_long_stream_leaves_a_node_that_is_due_to_go_before_it_would_end() -> None:
    f = await make_fleet(n=2, cfg=GatewayConfig(wait_s=5.0, migrate_margin_s=0.5))
    try:
        prompt = "a long answer"
        n = 600  # 4 s at 150 tok/s
        expect = decode(reference(encode(prompt), n))

        def notice() -> None:
            i = f.replicas.index(f.serving())
            f.agents[i].leaving_at = time.time() + 2.0  # due in 2 s: the stream needs ~3.5 s more

        s = await stream(f, "/v1/completions", {"prompt": prompt, "max_tokens": n}, (60, notice))
        assert_one_response(s, expect, len(prompt))
        metrics = await (await f.session.get(f.gateway.url + "/metrics")).text()
        assert 'spotstack_gateway_streams_continued_total{why="migrate"} 1.0' in metrics
        assert "cut" not in metrics.split("streams_continued_total{why=")[-1].split("}")[0]
    finally:
        await close(f)


@pytest.mark.slow
async def test_a_nodes_streams_leave_one_at_a_time_and_all_before_it_goes() -> None:
    """Six streams on a node given a notice: each leaves once the one before it has its first token elsewhere
    (`migrate_at_once` = 1), not six prefills landing on the other replicas at one instant; all leave, every one
    byte-identical to its uninterrupted run, and the count of streams leaving goes back to zero."""
    f = await make_fleet(n=3, cfg=GatewayConfig(wait_s=5.0, migrate_margin_s=0.5, migrate_at_once=1))
    try:
        for a in f.agents[1:]:
            a.ready = False  # every stream starts on replica 0
        await wait_for(lambda: sum(v.ready for v in f.gateway.pool.views()) == 1, 10, "one READY replica")
        n = 900  # 6 s at 150 tok/s
        prompts = [f"stream {i}" for i in range(6)]
        tasks = [asyncio.create_task(stream(f, "/v1/completions", {"prompt": p, "max_tokens": n})) for p in prompts]
        await wait_for(lambda: f.replicas[0].active == 6, 10, "six streams on replica 0")
        for a in f.agents[1:]:
            a.ready = True
        f.agents[0].leaving_at = time.time() + 5.0  # each stream needs ~6 s more: all must leave
        view = next(v for v in f.gateway.pool.views() if v.url == f.replicas[0].url)
        most = 0
        while not all(t.done() for t in tasks):
            most = max(most, view.moving)
            await asyncio.sleep(0.002)
        for p, t in zip(prompts, tasks, strict=True):
            assert_one_response(t.result(), decode(reference(encode(p), n)), len(p))
        assert most == 1, most
        assert view.moving == 0
        metrics = await (await f.session.get(f.gateway.url + "/metrics")).text()
        assert 'spotstack_gateway_streams_continued_total{why="migrate"} 6.0' in metrics
    finally:
        await close(f)
