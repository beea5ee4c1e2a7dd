"""The queue worker on GCP: Pub/Sub's REST API (a loopback fake that follows the documented pull / ack-deadline /
acknowledge / publish behaviour) with the node's token from the metadata emulator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.jobs.pubsub import PubSubApi, PubSubResults, PubSubTasks
from spotstack.runtime.jobs.task import Task
from spotstack.runtime.jobs.worker import Worker
from spotstack.runtime.jobs.worker_state import WorkerSettings
from spotstack.runtime.net import serve
from tests.clouds.pubsub import PubSubFake
from tests.runtime.test_jobs_worker import Workload
from tests.waits import wait_for

P = "projects/p"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    fake = PubSubFake()
    for t in ("input", "output", "dead"):
        fake.topic(f"{P}/topics/{t}")
    fake.subscription(f"{P}/subscriptions/tasks", f"{P}/topics/input", ack_deadline_s=10)
    fake.subscription(f"{P}/subscriptions/results", f"{P}/topics/output")
    fake.subscription(f"{P}/subscriptions/dead", f"{P}/topics/dead")
    runner, port = await serve(fake.app(), "127.0.0.1", 0)
    wl = Workload()
    await wl.start()
    async with GcpMetadataEmulator() as emu, aiohttp.ClientSession() as session:
        api = PubSubApi(emu.url, f"http://127.0.0.1:{port}")

        def worker(**kw: Any) -> Worker:
            async def ready() -> bool:
                return True

            return Worker(
                PubSubTasks(f"{P}/subscriptions/tasks", f"{P}/topics/input", f"{P}/topics/dead", api),
                PubSubResults(f"{P}/topics/output", api),
                None,
                WorkerSettings(
                    node="g1", http_url=f"http://127.0.0.1:{wl.port}/task", wait_s=1, workdir=tmp_path, **kw
                ),
                ready=ready,
                session=session,
            )

        def submit(*tasks: Task) -> None:
            for t in tasks:
                api.publish(f"{P}/topics/input", t.encode(), {})

        yield {"fake": fake, "worker": worker, "submit": submit, "wl": wl}
    await wl.stop()
    await runner.cleanup()


async def test_tasks_through_pubsub_results_published_and_acknowledged(world: dict[str, Any]) -> None:
    fake, w = world["fake"], world["worker"](concurrency=3)
    await asyncio.to_thread(world["submit"], *[Task(id=f"t{i}", body={"n": i}) for i in range(12)])
    w.start()
    try:
        await wait_for(lambda: w.stats.done == 12, 60, "12 tasks done")
    finally:
        await w.stop()
    results = {json.loads(b)["id"]: json.loads(b)["output"] for b, _ in fake.bodies(f"{P}/subscriptions/results")}
    assert results == {f"t{i}": {"double": 2 * i} for i in range(12)}
    assert fake.subs[f"{P}/subscriptions/tasks"].messages == []  # every task acknowledged
    assert "modifyAckDeadline" in fake.calls  # the lease set on receipt


async def test_notice_republishes_running_tasks_and_poison_goes_to_the_dead_topic(world: dict[str, Any]) -> None:
    fake, w = world["fake"], world["worker"](concurrency=2, lease_s=300, max_attempts=2, retry_delay_s=0)
    await asyncio.to_thread(world["submit"], Task(id="bad", body={"poison": True}))
    w.start()
    try:
        await wait_for(lambda: w.stats.dead_lettered == 1, 60, "the poison task dead-lettered")
        dead = fake.bodies(f"{P}/subscriptions/dead")
        assert [json.loads(b)["id"] for b, _ in dead] == ["bad"] and dead[0][1]["spotstack.failures"] == "2"
        await asyncio.to_thread(world["submit"], Task(id="held", body={"hold": True}))
        await wait_for(lambda: len(w.running) == 1, 30, "the held task running")
        await w.preempted(time.time() + 30)
        left = fake.bodies(f"{P}/subscriptions/tasks")
        assert [(json.loads(b)["id"], a["spotstack.preemptions"]) for b, a in left] == [("held", "1")]
        assert w.stats.give_back_s and max(w.stats.give_back_s) < 5
    finally:
        await w.stop()
