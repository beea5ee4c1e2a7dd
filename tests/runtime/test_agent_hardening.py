"""Agent regressions from adversarial testing (hardening issue, items 5, 6 and 7): the cache fails closed without
its token, a late notice still signals the workload, and configs that would crash or shadow the agent are refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.drain.sequence import Drainer, DrainSettings
from spotstack.runtime.notices.event import InterruptionEvent, Kind
from tests.runtime.cachekit import TOKEN, MiB, make_model
from tests.waits import wait_for


def cache_config(tmp_path: Path, token_file: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "cloud": "gcp",
            "metadata": {"base_url": "http://127.0.0.1:9"},
            "readiness": {"host": "127.0.0.1", "port": 0},
            "cache": {
                "enabled": True,
                "model_url": str(tmp_path / "model"),
                "dest": str(tmp_path / "dest"),
                "store_dir": str(tmp_path / "store"),
                "peer_port": 0,
                "token_file": str(token_file),
            },
        }
    )


async def ready_status(agent: Agent) -> int:
    assert agent.server is not None
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{agent.server.port}/ready") as r:
        return r.status


async def test_cache_without_a_token_is_not_ready_until_the_token_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_model(tmp_path / "model", {"w.bin": 2 * MiB})
    token_file = tmp_path / "cache-token"  # not written yet: boot delivers it late
    agent = Agent(cache_config(tmp_path, token_file))
    agent.injected.monitors = []
    await agent.start()
    try:
        await wait_for(lambda: agent.state.blocked is not None, what="the agent to notice the missing token")
        assert await ready_status(agent) == 503
        assert "cache token" in caplog.text
        token_file.write_text(TOKEN)
        await wait_for(lambda: agent.model_ready.is_set(), what="the model once the token is there")
        assert await ready_status(agent) == 200
    finally:
        await agent.stop()


async def test_a_short_token_keeps_the_node_out_of_rotation(tmp_path: Path) -> None:
    make_model(tmp_path / "model", {"w.bin": 1000})
    (tmp_path / "t").write_text("short")
    agent = Agent(cache_config(tmp_path, tmp_path / "t"))
    agent.injected.monitors = []
    await agent.start()
    try:
        await wait_for(lambda: agent.state.blocked is not None and "5 characters" in agent.state.blocked)
        assert await ready_status(agent) == 503
    finally:
        await agent.stop()


async def test_a_taken_peer_port_keeps_the_node_out_of_rotation_until_it_is_free(tmp_path: Path) -> None:
    """The peer cache's port is held by another socket when the agent starts (a connection's local end, a process
    on its way out): the node stays not ready and binds once the port is free, instead of giving up for good."""
    import socket

    make_model(tmp_path / "model", {"w.bin": 1000})
    (tmp_path / "t").write_text(TOKEN)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    cfg = cache_config(tmp_path, tmp_path / "t")
    cfg.cache.peer_port = holder.getsockname()[1]
    agent = Agent(cfg)
    agent.injected.monitors = []
    await agent.start()
    try:
        await wait_for(lambda: "cannot listen" in (agent.state.blocked or ""), what="the taken port noticed")
        assert await ready_status(agent) == 503
        holder.close()
        await wait_for(lambda: agent.model_ready.is_set(), what="the model once the port is free")
        assert agent.state.blocked is None and await ready_status(agent) == 200
    finally:
        holder.close()
        await agent.stop()


class Calls:
    def __init__(self) -> None:
        self.names: list[str] = []


class SlowSignal:
    """A workload stop that takes a little real time (reading a pid file in a thread, running a command)."""

    name = "slow"

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def stop(self) -> None:
        await asyncio.sleep(0.05)
        self.calls.names.append("signalled")


class Lifecycle:
    name = "lc"

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def heartbeat(self) -> None:
        pass

    async def complete(self) -> None:
        await asyncio.sleep(0.05)
        self.calls.names.append("completed")


@pytest.mark.parametrize("in_s", [3.0, 0.5, -10.0])
async def test_a_late_notice_still_signals_the_workload(in_s: float) -> None:
    calls = Calls()
    d = Drainer(
        readiness_off=lambda: calls.names.append("unready"),
        rotations=[],
        inflight=None,
        workload=SlowSignal(calls),
        lifecycle=Lifecycle(calls),
        settings=DrainSettings(margin_s=5.0),
    )
    now = time.time()
    report = await d.run(InterruptionEvent(Kind.SPOT_INTERRUPTION, "aws", now + in_s, "late", "test", now))
    assert calls.names == ["unready", "signalled", "completed"]
    assert report.ok, report.steps


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/status", "/status/"])
def test_a_readiness_path_cannot_shadow_the_agent(path: str) -> None:
    with pytest.raises(ValidationError, match="agent's own endpoint"):
        AgentConfig.model_validate({"cloud": "aws", "readiness": {"path": path}})


def test_ports_must_differ() -> None:
    with pytest.raises(ValidationError, match="same port"):
        AgentConfig.model_validate({"cloud": "aws", "cache": {"enabled": True, "peer_port": 8471}})
    with pytest.raises(ValidationError, match="same port"):
        AgentConfig.model_validate({"cloud": "aws", "inflight": {"proxy_listen_port": 8080}})
    AgentConfig.model_validate({"cloud": "aws", "readiness": {"port": 0}, "cache": {"enabled": True, "peer_port": 0}})
