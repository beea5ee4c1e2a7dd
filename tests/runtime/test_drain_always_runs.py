"""A notice path that cannot be skipped (the seams issue, item 3): readiness goes off before anything waits, the
drain's adaptors are built once and off the event loop, and an identity that never resolves or an adaptor that
cannot be built is a failed step while the rest of the drain runs. Before, both ended in "drain failed" with the
node still in rotation, its workload never told and its lifecycle action never completed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.drain import elbv2
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.server import Fault
from spotstack.runtime.net import free_port
from tests.runtime.test_agent_e2e import config, ready_status, signalled
from tests.runtime.test_agent_e2e import workload as workload
from tests.waits import wait_for

TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/llm/0123456789abcdef"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Credentials, and AWS on a loopback port nobody listens on, tried once: the drain's ELB and lifecycle steps
    fail at once (refused) where they reached for AWS's real endpoints, through 16 s of retries."""
    env = {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_MAX_ATTEMPTS": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield


@pytest.fixture
async def emu() -> AsyncIterator[AwsImdsEmulator]:
    async with AwsImdsEmulator(tags={"aws:autoscaling:groupName": "llm-asg"}) as e:
        yield e


def agent_for(emu: AwsImdsEmulator, pid_file: Path) -> Agent:
    return Agent(
        config(
            "aws",
            emu.url,
            pid_file,
            load_balancer={"kind": "elbv2", "target_group_arn": TG, "target_port": 8080},
            lifecycle={"enabled": True, "hook_name": "llm-drain"},
            drain={"timeout_s": 2, "safety_margin_s": 1, "serve_through_notice": False},
        )
    )


async def drained_out_of_rotation(agent: Agent, emu: AwsImdsEmulator, notice_s: int = 60) -> float:
    """Post a notice; return seconds from the agent seeing it to /ready answering 503."""
    emu.post_spot_notice(notice_s)
    await wait_for(lambda: bool(agent.state.notices), what="the notice seen")
    seen = time.time()
    await wait_for(lambda: agent.state.state in ("draining", "drained"), what="readiness off")
    took = time.time() - seen
    assert await ready_status(agent) == 503
    await asyncio.wait_for(agent.drained.wait(), 60)
    return took


def steps(agent: Agent) -> dict[str, Any]:
    assert agent.report is not None
    return {s.name: (s.ok, s.error) for s in agent.report.steps}


@pytest.mark.slow
async def test_an_identity_that_never_resolves_still_drains(
    aws_env: None, emu: AwsImdsEmulator, workload: tuple[Path, Path]
) -> None:
    marker, pid_file = workload
    emu.inject(Fault("/latest/meta-data/instance-id", 500, count=10**6))  # the identity never comes
    agent = agent_for(emu, pid_file)
    await agent.start()
    try:
        assert await ready_status(agent) == 200
        # A 10 s notice: the drain waits a quarter of what it has left (not the 5 s cap) for the identity.
        assert await drained_out_of_rotation(agent, emu, notice_s=10) < 1.0
        await signalled(marker)  # the workload was told
        got = steps(agent)
        assert got["readiness_off"][0] and got["stop_workload_signal"][0]
        assert not got["leave_elbv2"][0] and "identity did not resolve" in got["leave_elbv2"][1]
        assert not got["complete_lifecycle"][0]
    finally:
        await agent.stop()


async def test_an_adaptor_that_cannot_be_built_is_a_failed_step(
    aws_env: None, emu: AwsImdsEmulator, workload: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker, pid_file = workload

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no region configured for elbv2")

    monkeypatch.setattr(elbv2.Elbv2Rotation, "__init__", broken)
    agent = agent_for(emu, pid_file)
    await agent.start()
    try:
        await wait_for(lambda: agent._drain_parts_error is not None, what="the adaptors tried")
        assert await drained_out_of_rotation(agent, emu) < 1.0
        await signalled(marker)
        got = steps(agent)
        assert not got["leave_elbv2"][0] and "no region configured" in got["leave_elbv2"][1]
        assert got["stop_workload_signal"][0]
    finally:
        await agent.stop()


@pytest.mark.slow
async def test_a_slow_credential_endpoint_never_stalls_the_agent(
    aws_env: None, emu: AwsImdsEmulator, workload: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A boto3 client built while the credential chain waits on a slow metadata server (3 s here): built in a
    thread, so /ready keeps answering at once meanwhile, and a notice takes the node out of rotation at once."""
    _, pid_file = workload
    real = elbv2.Elbv2Rotation.__init__
    building = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(self: Any, *args: Any, **kwargs: Any) -> None:
        loop.call_soon_threadsafe(building.set)
        time.sleep(3)  # what a credential lookup against a stalled endpoint does to its caller
        real(self, *args, **kwargs)

    monkeypatch.setattr(elbv2.Elbv2Rotation, "__init__", slow)
    agent = agent_for(emu, pid_file)
    await agent.start()
    try:
        await asyncio.wait_for(building.wait(), 30)
        started = time.monotonic()
        assert await ready_status(agent) == 200
        assert time.monotonic() - started < 0.5, "/ready waited on the adaptor's construction"
        assert await drained_out_of_rotation(agent, emu) < 1.0
    finally:
        await agent.stop()


@pytest.mark.slow
async def test_readiness_goes_off_before_the_drain_waits_for_anything(
    aws_env: None, emu: AwsImdsEmulator, workload: tuple[Path, Path]
) -> None:
    _, pid_file = workload
    emu.inject(Fault("/latest/meta-data/instance-id", 500, count=10**6))
    agent = agent_for(emu, pid_file)
    await agent.start()
    try:
        emu.post_spot_notice(16)  # the drain waits ~4 s of it (a quarter) for the identity that never comes
        await wait_for(lambda: bool(agent.state.notices), what="the notice seen")
        async with aiohttp.ClientSession() as s:
            assert agent.server is not None

            async def off() -> bool:
                async with s.get(f"http://127.0.0.1:{agent.server.port}/ready") as r:  # type: ignore[union-attr]
                    return r.status == 503

            await wait_for(off, 1.0, "readiness off while the drain still waits for its adaptors")
        assert agent.report is None  # the drain is still waiting: readiness did not wait for it
        await asyncio.wait_for(agent.drained.wait(), 60)
    finally:
        await agent.stop()


async def test_a_warm_pool_instance_does_not_wait_for_a_model_not_uploaded(
    aws_env: None, workload: tuple[Path, Path], tmp_path: Path
) -> None:
    """The deployability issue, item 6: a warm pool created before the model's upload held an on-demand GPU for
    its launching hook's whole timeout (30 min). With no manifest anywhere, the hook completes at once (CONTINUE):
    into the pool without the model, which loads when the instance is started."""
    import boto3
    from botocore.stub import Stubber

    from tests.runtime.cachekit import TOKEN

    _, pid_file = workload
    (tmp_path / "model").mkdir()  # the bucket's prefix, nothing uploaded yet
    (tmp_path / "token").write_text(TOKEN)
    asg = boto3.client("autoscaling")
    stub = Stubber(asg)  # moto has no CompleteLifecycleAction: the call is checked against botocore's model
    stub.add_response(
        "complete_lifecycle_action",
        {},
        {
            "AutoScalingGroupName": "llm-fallback-asg",
            "LifecycleHookName": "llm-warm",
            "InstanceId": "i-0123456789abcdef0",
            "LifecycleActionResult": "CONTINUE",
        },
    )
    stub.activate()
    async with AwsImdsEmulator(
        instance_id="i-0123456789abcdef0", tags={"aws:autoscaling:groupName": "llm-fallback-asg"}
    ) as e:
        agent = Agent(
            config(
                "aws",
                e.url,
                pid_file,
                lifecycle={"enabled": True, "hook_name": "llm-drain", "launch_hook_name": "llm-warm"},
                cache={
                    "enabled": True,
                    "model_url": str(tmp_path / "model"),
                    "dest": str(tmp_path / "dest"),
                    "store_dir": str(tmp_path / "store"),
                    "peer_port": 0,
                    "token_file": str(tmp_path / "token"),
                },
            )
        )
        agent.injected.autoscaling_client = asg
        await agent.start()
        try:
            await wait_for(lambda: agent.state.launch_hook == "completed", 30, "the hook completed without a model")
            assert await ready_status(agent) == 503  # not serving: it has no model
            assert (agent.state.model or {}).get("state") == "no_manifest"
            stub.assert_no_pending_responses()
        finally:
            await agent.stop()
