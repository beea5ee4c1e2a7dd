"""A notice posted on each cloud's emulator drains the agent end to end, before the deadline."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.emulators.server import Fault
from tests.waits import wait_for, wait_until

# A workload that records the signal it was sent, so the test can see it was told to stop.
WORKLOAD = """
import signal, sys, time, pathlib
marker = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: (marker.write_text("SIGTERM"), sys.exit(0)))
pathlib.Path(sys.argv[2]).write_text(str(__import__("os").getpid()))
while True: time.sleep(0.05)
"""


@pytest.fixture
def workload(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    marker, pid_file = tmp_path / "signalled", tmp_path / "workload.pid"
    proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(marker), str(pid_file)])
    wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", what="the workload's pid file")
    yield marker, pid_file
    proc.kill()
    proc.wait()


def config(cloud: str, url: str, pid_file: Path, **extra: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "cloud": cloud,
            "region": "us-east-1",
            "metadata": {"base_url": url, "poll_interval_s": 0.1},
            "readiness": {"host": "127.0.0.1", "port": 0},
            "workload": {"pid_file": str(pid_file)},
            "drain": {"timeout_s": 10, "safety_margin_s": 5},
            **extra,
        }
    )


async def signalled(marker: Path) -> None:
    """The workload writes its marker from its SIGTERM handler: wait for it, the signal is asynchronous."""
    await wait_for(lambda: marker.exists() and marker.read_text() == "SIGTERM", what="the workload's SIGTERM")


async def ready_status(agent: Agent) -> int:
    assert agent.server is not None
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{agent.server.port}/ready") as r:
        return r.status


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        await a.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)


@pytest.mark.slow
async def test_aws_notice_drains_deregisters_signals_and_completes(
    aws_env: None, workload: tuple[Path, Path], agents: list[Agent]
) -> None:
    marker, pid_file = workload
    with mock_aws():
        ec2, elbv2 = boto3.client("ec2"), boto3.client("elbv2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        tg = elbv2.create_target_group(Name="llm-tg", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="instance")[
            "TargetGroups"
        ][0]["TargetGroupArn"]
        iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        other = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid, "Port": 8080}, {"Id": other, "Port": 8080}])

        # moto has no CompleteLifecycleAction: check the call against botocore's real API model instead.
        asg = boto3.client("autoscaling")
        stub = Stubber(asg)
        stub.add_response(
            "complete_lifecycle_action",
            {},
            {
                "AutoScalingGroupName": "llm-asg",
                "LifecycleHookName": "llm-drain",
                "InstanceId": iid,
                "LifecycleActionResult": "CONTINUE",
            },
        )
        stub.activate()

        async with AwsImdsEmulator(instance_id=iid, tags={"aws:autoscaling:groupName": "llm-asg"}) as emu:
            agent = Agent(
                config(
                    "aws",
                    emu.url,
                    pid_file,
                    load_balancer={"kind": "elbv2", "target_group_arn": tg, "target_port": 8080},
                    lifecycle={"enabled": True, "hook_name": "llm-drain"},
                    # The drain itself, at once (serving through the notice has its own test).
                    drain={"timeout_s": 10, "safety_margin_s": 5, "serve_through_notice": False},
                )
            )
            agent.injected.autoscaling_client = asg
            await agent.start()
            agents.append(agent)
            assert await ready_status(agent) == 200
            deadline = emu.post_spot_notice(120)
            await asyncio.wait_for(agent.drained.wait(), 60)

            assert await ready_status(agent) == 503
            targets = elbv2.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
            assert [t["Target"]["Id"] for t in targets] == [other]
            await signalled(marker)
            stub.assert_no_pending_responses()
            report = agent.report
            assert report is not None and report.ok, report
            assert report.finished_at < deadline
            assert [s.name for s in report.steps] == [
                "readiness_off",
                "leave_elbv2",
                "stop_workload_signal",
                "complete_lifecycle",
            ]


@pytest.mark.slow
async def test_a_spot_notice_is_served_through_until_the_drain_is_due(
    workload: tuple[Path, Path], agents: list[Agent]
) -> None:
    """The policy issue's notice window: the node keeps serving after the notice (its replacement is starting)
    and leaves rotation once the deadline is the drain away (timeout + margin + grace + lead), then drains
    as ever: workload signalled, done before the deadline."""
    marker, pid_file = workload
    async with AwsImdsEmulator() as emu:
        drain = {"timeout_s": 2, "safety_margin_s": 1, "lead_s": 1}  # the drain is due 4 s before the deadline
        agent = Agent(config("aws", emu.url, pid_file, drain=drain))
        await agent.start()
        agents.append(agent)
        assert await ready_status(agent) == 200
        deadline = emu.post_spot_notice(12)
        due = int(deadline) - 4  # AWS gives the time to the second
        await wait_for(lambda: any(n["verdict"] == "defer" for n in agent.state.notices), what="the notice seen")
        answers: list[tuple[float, int]] = []  # (when answered, status)

        async def out_of_rotation() -> bool:
            code = await ready_status(agent)
            answers.append((time.time(), code))
            return code == 503

        await wait_for(out_of_rotation, 30, "readiness to go off")
        await asyncio.wait_for(agent.drained.wait(), 30)
        report = agent.report
        assert report is not None and report.out_of_rotation_at
        # It left rotation only when the drain was due: the agent's own time, not the first 503 this test saw (on a
        # loaded machine its requests stall for seconds, and a gap before the 503 said nothing about the agent)...
        assert report.out_of_rotation_at >= due - 0.5
        # ...and served until then: every answer given before that moment was a 200, and every one after a 503.
        assert all(code == 200 for t, code in answers if t < report.out_of_rotation_at)
        assert answers[-1][1] == 503 and answers[-1][0] >= report.out_of_rotation_at
        await signalled(marker)
        assert report.ok and report.finished_at < deadline
        assert [n["verdict"] for n in agent.state.notices] == ["defer", "drain"]  # reported once each


async def test_gcp_preemption_drains_within_its_30_seconds(workload: tuple[Path, Path], agents: list[Agent]) -> None:
    marker, pid_file = workload
    async with GcpMetadataEmulator() as emu:
        agent = Agent(config("gcp", emu.url, pid_file))
        await agent.start()
        agents.append(agent)
        await wait_for(lambda: emu.requests >= 2, what="the long-polls to be waiting")
        posted = time.time()
        emu.preempt()
        await asyncio.wait_for(agent.drained.wait(), 60)
        assert await ready_status(agent) == 503
        await signalled(marker)
        assert agent.report is not None and agent.report.ok
        # The drain fits GCP's 30 s notice. (Its latency is a benchmark's figure, not a test's:
        # benchmarks/notice_latency.py measures a p99 of 3.4 ms for the long-poll.)
        assert agent.report.finished_at < posted + 30


async def test_alicloud_notice_drains_with_hardened_metadata(workload: tuple[Path, Path], agents: list[Agent]) -> None:
    marker, pid_file = workload
    async with AlicloudMetadataEmulator(tokens_required=True) as emu:
        drain = {"timeout_s": 10, "safety_margin_s": 5, "serve_through_notice": False}
        agent = Agent(config("alicloud", emu.url, pid_file, drain=drain))
        await agent.start()
        agents.append(agent)
        deadline = emu.post_spot_notice(300)
        await asyncio.wait_for(agent.drained.wait(), 60)
        assert await ready_status(agent) == 503
        await signalled(marker)
        assert agent.report is not None and agent.report.ok and agent.report.finished_at < deadline


@pytest.mark.slow
async def test_garbage_from_metadata_never_crashes_and_never_drains_twice(
    workload: tuple[Path, Path], agents: list[Agent]
) -> None:
    _, pid_file = workload
    async with AwsImdsEmulator() as emu:
        spot = "/latest/meta-data/spot/instance-action"
        emu.inject(Fault(spot, status=200, body="{bad json", count=2))
        emu.inject(Fault(spot, status=500, count=2))
        emu.inject(Fault(spot, status=200, delay_s=1.0, count=1))  # longer than the 0.5 s client timeout
        emu.inject(Fault(spot, status=200, body='{"action": "terminate", "time": "not a time"}', count=1))
        agent = Agent(
            config("aws", emu.url, pid_file, metadata={"base_url": emu.url, "poll_interval_s": 0.1, "timeout_s": 0.5})
        )
        await agent.start()
        agents.append(agent)

        def errors() -> float:
            got = agent.metrics.registry.get_sample_value(
                "spotstack_monitor_errors_total", {"monitor": "aws-spot-instance-action"}
            )
            return got or 0.0

        await wait_for(lambda: errors() >= 5, what="every injected fault to be seen and counted")
        assert await ready_status(agent) == 200  # garbage is no notice
        emu.post_spot_notice(at=time.time() - 60)  # a notice whose time is already past
        await asyncio.wait_for(agent.drained.wait(), 60)
        first = agent.report
        emu.post_spot_notice(120)  # a new notice body after the drain, and the old one repeated
        seen = emu.requests
        await wait_for(lambda: emu.requests >= seen + 6, what="the monitors to poll the new notice")

        assert agent.supervisor is not None
        assert all(t.done() is False for t in agent.supervisor._tasks)  # every monitor still polling
        assert agent.report is first and first is not None
        drains = [n for n in agent.state.notices if n["verdict"] == "drain"]
        assert len(drains) == 1
        assert errors() >= 5


TOKEN = "t" * 40


def cache_with_token(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "token").write_text(TOKEN)
    return {
        "enabled": True,
        "token_file": str(tmp_path / "token"),
        "store_dir": str(tmp_path / "store"),
        "peer_port": 0,
    }


async def release(agent: Agent, token: str | None = TOKEN) -> int:
    assert agent.server is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{agent.server.port}/release", headers=headers) as r,
    ):
        return r.status


async def test_a_noticed_node_leaves_rotation_once_the_controller_says_its_replacement_is_ready(
    tmp_path: Path, workload: tuple[Path, Path], agents: list[Agent]
) -> None:
    """The notice window ends early when the replacement is READY: the controller's POST /release (with the
    fleet token) takes the node out of rotation within a second, then the drain runs as ever."""
    marker, pid_file = workload
    async with AwsImdsEmulator() as emu:
        drain = {"timeout_s": 2, "safety_margin_s": 1, "lead_s": 1}
        agent = Agent(config("aws", emu.url, pid_file, drain=drain, cache=cache_with_token(tmp_path)))
        await agent.start()
        agents.append(agent)
        await wait_for(lambda: agent.fleet_token is not None, what="the fleet token read")
        assert await release(agent) == 409  # nothing to release before a notice
        deadline = emu.post_spot_notice(120)
        await wait_for(lambda: any(n["verdict"] == "defer" for n in agent.state.notices), what="the notice seen")
        assert await ready_status(agent) == 200  # serving through the notice
        # Nobody else may end the window: no token, or the wrong one, is refused and changes nothing.
        assert await release(agent, None) == 401
        assert await release(agent, "x" * 40) == 401
        assert await ready_status(agent) == 200
        released = time.time()
        assert await release(agent) == 202

        async def out() -> bool:
            return await ready_status(agent) == 503

        await wait_for(out, 5, "readiness off after the release")
        assert time.time() - released < 1.0
        await asyncio.wait_for(agent.drained.wait(), 30)
        await signalled(marker)
        assert agent.report is not None and agent.report.ok and agent.report.finished_at < deadline
        assert [n["verdict"] for n in agent.state.notices] == ["defer", "drain"]
        assert await release(agent) == 409  # once only


async def test_release_is_off_without_a_fleet_token(workload: tuple[Path, Path], agents: list[Agent]) -> None:
    _, pid_file = workload
    async with AwsImdsEmulator() as emu:
        agent = Agent(config("aws", emu.url, pid_file))
        await agent.start()
        agents.append(agent)
        emu.post_spot_notice(120)
        await wait_for(lambda: bool(agent.state.notices), what="the notice seen")
        assert await release(agent) == 403
        assert await ready_status(agent) == 200


async def test_warm_pool_node_completes_its_launching_hook_once_ready(
    aws_env: None, workload: tuple[Path, Path], agents: list[Agent]
) -> None:
    """AWS warm pool: the launching hook holds the node until its agent says READY (model and workload up), so
    AWS stops it into the pool only with everything on disk. Not before: the workload is down at first."""
    from aiohttp import web

    _, pid_file = workload
    healthy = {"ok": False}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["ok"] else 503)

    app = web.Application()
    app.router.add_get("/ready", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        asg = boto3.client("autoscaling")
        # moto has no CompleteLifecycleAction: check the call against botocore's real API model instead.
        stub = Stubber(asg)
        stub.add_client_error("complete_lifecycle_action", "Throttling", http_status_code=400)  # retried
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
        ) as emu:
            agent = Agent(
                config(
                    "aws",
                    emu.url,
                    pid_file,
                    readiness={"host": "127.0.0.1", "port": 0, "workload_health_url": f"http://127.0.0.1:{port}/ready"},
                    lifecycle={"enabled": True, "hook_name": "llm-drain", "launch_hook_name": "llm-warm"},
                )
            )
            agent.injected.autoscaling_client = asg
            await agent.start()
            agents.append(agent)
            await wait_for(lambda: agent.identity is not None and agent.identity.group_name is not None, what="group")
            assert agent.state.launch_hook is None and await ready_status(agent) == 503
            assert len(stub._queue) == 2  # nothing called while the workload is not READY
            healthy["ok"] = True
            await wait_for(lambda: agent.state.launch_hook == "completed", 15, "the launching hook completed")
            stub.assert_no_pending_responses()
    finally:
        await runner.cleanup()
