"""The worker inside the agent: a spot notice gives tasks back at once; a scale-in lets the running task finish
(the drain waits for it) while AWS scale-in protection covers the node; /status and /metrics show the worker.
SQS and Auto Scaling are moto's server on loopback; the node's identity comes from the IMDS emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.jobs.sqs import create_queues
from spotstack.runtime.jobs.task import Task
from tests.runtime.jobskit import depth, drain_queue, moto_server, sqs_client
from tests.runtime.test_jobs_worker import Workload
from tests.waits import wait_for


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with moto_server() as endpoint:
        sqs = sqs_client(endpoint)
        asg = boto3.client("autoscaling", endpoint_url=endpoint)
        ec2 = boto3.client("ec2", endpoint_url=endpoint)
        lt = ec2.create_launch_template(
            LaunchTemplateName="w", LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "g6.xlarge"}
        )["LaunchTemplate"]["LaunchTemplateId"]
        asg.create_auto_scaling_group(
            AutoScalingGroupName="workers",
            LaunchTemplate={"LaunchTemplateId": lt},
            MinSize=1,
            MaxSize=1,
            AvailabilityZones=["us-east-1a"],
        )
        iid = asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
        wl = Workload()
        await wl.start()
        async with AwsImdsEmulator(instance_id=iid, tags={"aws:autoscaling:groupName": "workers"}) as emu:
            yield {"endpoint": endpoint, "sqs": sqs, "asg": asg, "iid": iid, "wl": wl, "emu": emu}
        await wl.stop()


async def start_agent(w: dict[str, Any], tmp: Path, **drain: Any) -> tuple[Agent, dict[str, str]]:
    q = create_queues(w["sqs"], "jobs", max_attempts=3, lease_s=60)
    cfg = AgentConfig.model_validate(
        {
            "cloud": "aws",
            "region": "us-east-1",
            "metadata": {"base_url": w["emu"].url, "poll_interval_s": 0.1},
            "readiness": {"host": "127.0.0.1", "port": 0},
            "workload": {"port": w["wl"].port},
            "drain": {"timeout_s": 30, "safety_margin_s": 1, **drain},
            "jobs": {
                "enabled": True,
                "input_url": q["input"],
                "output_url": q["output"],
                "dead_letter_url": q["dead"],
                "results_url": str(tmp / "results"),
                "endpoint_url": w["endpoint"],
                "wait_s": 1,
                "scale_in_protection": True,
                "workdir": str(tmp / "work"),
            },
            # The scale-in arrives as the lifecycle state Terminated; completing the hook is tested elsewhere
            # (moto has no CompleteLifecycleAction).
            "lifecycle": {"enabled": True, "hook_name": "drain", "endpoint_url": w["endpoint"]},
        }
    )
    agent = Agent(cfg)
    agent.injected.no_lifecycle = True
    await agent.start()
    await wait_for(lambda: agent.worker is not None or (agent._jobs_task is not None and agent._jobs_task.done()), 30)
    assert agent.worker is not None, agent._jobs_task.exception() if agent._jobs_task else None
    return agent, q


def protected(w: dict[str, Any]) -> bool:
    inst = w["asg"].describe_auto_scaling_instances(InstanceIds=[w["iid"]])["AutoScalingInstances"][0]
    return bool(inst["ProtectedFromScaleIn"])


async def get(agent: Agent, path: str) -> str:
    assert agent.server is not None
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{agent.server.port}{path}") as r:
        return await r.text()


async def test_spot_notice_gives_the_running_task_back_at_the_notice(world: dict[str, Any], tmp_path: Path) -> None:
    w = world
    agent, q = await start_agent(w, tmp_path)
    try:
        w["sqs"].send_message(QueueUrl=q["input"], MessageBody=Task(id="held", body={"hold": True}).encode())
        await wait_for(lambda: w["wl"].calls == ["held"], 30, "the task running")
        await wait_for(lambda: protected(w), 30, "scale-in protection on while busy")
        w["emu"].post_spot_notice(120)  # the node serves through its notice; its tasks go back now
        await wait_for(lambda: depth(w["sqs"], q["input"]) == (1, 0), 10, "the task visible again")

        async def shown() -> bool:
            jobs = json.loads(await get(agent, "/status"))["jobs"]
            return jobs["accepting"] is False and jobs["given_back"] == 1

        await wait_for(shown, 10, "/status to show the give-back")
        assert agent.state.state != "draining"  # serving through the notice: only the tasks left
        metrics = await get(agent, "/metrics")
        assert "spotstack_jobs_give_back_seconds_count 1.0" in metrics
        assert 'spotstack_jobs_tasks_total{outcome="given_back"} 1.0' in metrics
        await wait_for(lambda: not protected(w), 30, "protection off once idle")
    finally:
        await agent.stop()


@pytest.mark.slow
async def test_scale_in_waits_for_the_running_task_then_drains(world: dict[str, Any], tmp_path: Path) -> None:
    w = world
    agent, q = await start_agent(w, tmp_path)
    try:
        w["sqs"].send_message(QueueUrl=q["input"], MessageBody=Task(id="held", body={"hold": True, "n": 4}).encode())
        await wait_for(lambda: w["wl"].calls == ["held"], 30, "the task running")
        w["emu"].set_lifecycle_state("Terminated")  # the group scales this node in
        await wait_for(lambda: agent.state.state == "draining", 10, "the drain under way")
        await asyncio.sleep(0.5)
        assert not agent.drained.is_set()  # the drain waits for the task ...
        w["wl"].release.set()
        await asyncio.wait_for(agent.drained.wait(), 30)  # ... which finishes with its result
        out = drain_queue(w["sqs"], q["output"])
        assert [m["body"]["id"] for m in out] == ["held"] and out[0]["body"]["output"] == {"double": 8}
        assert depth(w["sqs"], q["input"]) == (0, 0)
        assert agent.report is not None
        assert [s.name for s in agent.report.steps][:3] == ["readiness_off", "leave_jobs", "wait_inflight"]
        w["sqs"].send_message(QueueUrl=q["input"], MessageBody=Task(id="late", body={"n": 1}).encode())
        await asyncio.sleep(1.5)
        assert depth(w["sqs"], q["input"]) == (1, 0)  # a drained node takes nothing
    finally:
        await agent.stop()
