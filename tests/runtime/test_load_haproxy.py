"""Steady traffic to two replicas behind a real HAProxy; one is preempted with notice: zero failures."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from pathlib import Path

import aiohttp
import pytest

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.local.haproxy import HAProxy, Server, render_config
from spotstack.runtime.net import free_port
from tests.runtime.workload import FakeWorkload
from tests.waits import wait_for

pytestmark = pytest.mark.haproxy

if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
    if os.environ.get("CI"):
        raise RuntimeError("CI must install haproxy (.ci/run does): the load test cannot be skipped there")
    pytest.skip("haproxy not installed (apt-get install haproxy)", allow_module_level=True)


def test_config_renders_checks_on_the_readiness_port(tmp_path: Path) -> None:
    text = render_config(8000, tmp_path / "s.sock", [Server("r0", 9000, 9100)])
    assert "server r0 127.0.0.1:9000 check port 9100" in text
    assert "option httpchk GET /ready" in text and "level admin" in text
    # A check may take 2 s: with only `inter` (200 ms) a busy machine marked every replica down at once.
    assert "timeout check 2s" in text and "fall 3" in text


@pytest.mark.slow
async def test_preempting_one_of_two_replicas_loses_no_request(tmp_path: Path) -> None:
    replicas = []
    lb_port = free_port()
    for i in range(2):
        wl = FakeWorkload()
        await wl.start()
        emu = AwsImdsEmulator(instance_id=f"i-{i}")
        await emu.start()
        replicas.append((wl, emu, free_port(), free_port()))
    haproxy = HAProxy(tmp_path, lb_port, [Server(f"r{i}", r[2], r[3]) for i, r in enumerate(replicas)])
    agents: list[Agent] = []
    try:
        await haproxy.start()
        for i, (wl, emu, proxy_port, ready_port) in enumerate(replicas):
            cfg = AgentConfig.model_validate(
                {
                    "cloud": "aws",
                    "metadata": {"base_url": emu.url, "poll_interval_s": 0.2},
                    "readiness": {"host": "127.0.0.1", "port": ready_port},
                    "inflight": {"proxy_listen_port": proxy_port},
                    "workload": {"port": wl.port},
                    "load_balancer": {
                        "kind": "haproxy",
                        "haproxy_socket": str(haproxy.socket),
                        "haproxy_backend": "replicas",
                        "haproxy_server": f"r{i}",
                    },
                    "drain": {"timeout_s": 10, "safety_margin_s": 1},
                }
            )
            agent = Agent(cfg)
            await agent.start()
            agents.append(agent)
        await haproxy.wait_healthy(["r0", "r1"])

        ok = failed = 0
        stop = asyncio.Event()

        async def client(session: aiohttp.ClientSession) -> None:
            nonlocal ok, failed
            while not stop.is_set():
                try:
                    async with session.get(f"http://127.0.0.1:{lb_port}/work?ms=30") as r:
                        await r.read()
                        ok, failed = (ok + 1, failed) if r.status == 200 else (ok, failed + 1)
                except aiohttp.ClientError:
                    failed += 1

        async with aiohttp.ClientSession() as session:
            workers = [asyncio.create_task(client(session)) for _ in range(8)]
            await wait_for(lambda: ok >= 50, what="traffic through both replicas")
            served_before = replicas[0][0].served
            deadline = replicas[0][1].post_spot_notice(in_s=4)
            await asyncio.wait_for(agents[0].drained.wait(), 60)
            # The cloud reclaims the node at its deadline: its workload, proxy and agent vanish.
            await asyncio.sleep(max(0.0, deadline - time.time()))
            await agents[0].stop()
            await replicas[0][0].stop()
            after = ok
            await wait_for(lambda: ok >= after + 50, what="traffic after the node is gone")
            stop.set()
            await asyncio.gather(*workers)

        assert failed == 0, f"{failed} failed of {ok + failed}"
        assert ok > 200
        assert replicas[0][0].served > served_before  # it served until the notice
        assert replicas[1][0].served > 0
        report = agents[0].report
        assert report is not None and report.ok and report.inflight_left == 0
        assert [s.name for s in report.steps][:3] == ["readiness_off", "leave_haproxy", "wait_inflight"]
    finally:
        for a in agents[1:]:
            await a.stop()
        await haproxy.stop()
        for wl, emu, _, _ in replicas:
            await wl.stop()
            await emu.stop()


async def test_a_token_stream_passes_haproxy_token_by_token(tmp_path: Path) -> None:
    """An LLM answer, one event every 33 ms, reaches the client as it is sent: without `option http-no-delay`
    HAProxy held the small writes and delivered them in ~200 ms bunches (most gaps 0, every seventh 230 ms)."""
    from spotstack.runtime.llm.server import EngineTiming, LlmServer

    server = LlmServer(timing=EngineTiming(tokens_per_s=30.0, ttft_s=0.0))
    await server.start()
    port = free_port()
    lb = HAProxy(tmp_path / "lb", port, [Server("r0", server.port, server.port)])
    await lb.start()
    try:
        async with aiohttp.ClientSession() as s:

            async def up() -> bool:
                try:
                    async with s.get(f"http://127.0.0.1:{port}/ready") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(up, 30, "HAProxy to mark the replica up")
            body = {"prompt": "tick", "max_tokens": 30, "stream": True}
            arrivals = []
            async with s.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        arrivals.append(time.monotonic())
        gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
        assert len(arrivals) == 30
        assert gaps[len(gaps) // 2] > 0.015, gaps  # the median gap is the engine's (33 ms), not a bunch's 0
    finally:
        await lb.stop()
        await server.stop()
