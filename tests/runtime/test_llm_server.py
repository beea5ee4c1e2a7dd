"""The stand-in engine's metrics: what a node's agent reads for its drain when gateways reach the engine directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from spotstack.runtime.config import AgentConfig
from spotstack.runtime.drain.inflight import PrometheusGauge
from spotstack.runtime.llm.server import EngineTiming, LlmServer
from spotstack.runtime.local.node_config import RUNNING, agent_config
from tests.waits import wait_for


async def test_requests_in_flight_are_a_gauge_the_drain_reads() -> None:
    srv = LlmServer(timing=EngineTiming(tokens_per_s=200.0, ttft_s=0.01))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            gauge = PrometheusGauge(s, f"{srv.url}/metrics", RUNNING)
            assert await gauge.count() == 0

            async def one() -> bytes:
                body = {"prompt": "count me", "max_tokens": 200, "stream": True}
                async with s.post(f"{srv.url}/v1/completions", json=body) as r:
                    return await r.read()

            async def both_counted() -> bool:
                return await gauge.count() == 2

            streams = [asyncio.create_task(one()) for _ in range(2)]
            await wait_for(both_counted, 10, "both streams counted")
            for t in streams:
                assert (await t).endswith(b"data: [DONE]\n\n")
            assert await gauge.count() == 0
    finally:
        await srv.stop()


def test_behind_gateways_a_local_node_is_reached_directly_and_drains_on_the_engines_gauge(tmp_path: Path) -> None:
    ports = {"emulator": 1, "agent": 2, "proxy": 3, "model": 4, "peer": 5}
    common = {"lb": None, "drain_timeout_s": 30.0, "model_url": "s3://b/m/", "workdir": tmp_path}
    direct = AgentConfig.model_validate(agent_config("n", ports, tmp_path, tmp_path, tmp_path, direct=True, **common))  # type: ignore[arg-type]
    assert direct.inflight.proxy_listen_port is None
    assert direct.inflight.metrics_url == "http://127.0.0.1:4/metrics" and direct.inflight.metrics_gauge == RUNNING
    proxied = AgentConfig.model_validate(agent_config("n", ports, tmp_path, tmp_path, tmp_path, **common))  # type: ignore[arg-type]
    assert proxied.inflight.proxy_listen_port == 3 and proxied.inflight.metrics_url is None
