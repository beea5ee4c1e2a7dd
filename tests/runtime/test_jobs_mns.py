"""The queue worker on Alibaba Cloud: Simple Message Queue (MNS) over its signed REST API, with the node's RAM role
credentials from the metadata emulator, against a loopback queue service that follows the documented behaviour."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.jobs.mns import MnsApi, MnsError, MnsResults, MnsTasks, send, unwrap, wrap
from spotstack.runtime.jobs.task import Counts, Task
from spotstack.runtime.jobs.worker import Worker
from spotstack.runtime.jobs.worker_state import WorkerSettings
from spotstack.runtime.net import serve
from spotstack.runtime.secrets import alicloud_ram_credentials
from tests.clouds.mns import MnsFake
from tests.runtime.test_jobs_worker import Workload
from tests.waits import wait_for, wait_until


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    wl = Workload()
    await wl.start()
    async with AlicloudMetadataEmulator() as emu, aiohttp.ClientSession() as session:
        creds = await asyncio.to_thread(alicloud_ram_credentials, emu.url)
        fake = MnsFake(creds["AccessKeyId"], creds["AccessKeySecret"], creds["SecurityToken"])
        fake.queue("dead")
        fake.queue("output")
        fake.queue("input", visibility_s=10, dead_letter="dead", max_receives=5)
        runner, port = await serve(fake.app(), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        api = MnsApi(base, lambda: alicloud_ram_credentials(emu.url))

        def worker(**kw: Any) -> Worker:
            # The components set the queue's VisibilityTimeout to `jobs.lease`: a lease longer than the queue's
            # would leave a message visible again while it runs, whenever a busy machine delays the first heartbeat.
            q = fake.queues["input"]
            q.visibility_s = max(q.visibility_s, kw.get("lease_s", 0))

            async def ready() -> bool:
                return True

            return Worker(
                MnsTasks(f"{base}/queues/input", f"{base}/queues/dead", api),
                MnsResults(f"{base}/queues/output", api),
                None,
                WorkerSettings(
                    node="a1", http_url=f"http://127.0.0.1:{wl.port}/task", wait_s=1, workdir=tmp_path, **kw
                ),
                ready=ready,
                session=session,
            )

        def submit(*tasks: Task) -> None:
            for t in tasks:
                send(api, "/queues/input", t.encode())

        yield {"fake": fake, "worker": worker, "submit": submit, "api": api, "base": base, "wl": wl}
        await runner.cleanup()
    await wl.stop()


async def test_tasks_through_mns_results_sent_and_deleted(world: dict[str, Any]) -> None:
    fake, w = world["fake"], world["worker"](concurrency=3, lease_s=10)
    await asyncio.to_thread(world["submit"], *[Task(id=f"t{i}", body={"n": i}) for i in range(12)])
    w.start()
    try:
        await wait_for(lambda: w.stats.done == 12, 60, "12 tasks done")
    finally:
        await w.stop()
    results = {json.loads(b)["id"]: json.loads(b)["output"] for b in fake.bodies("output")}
    assert results == {f"t{i}": {"double": 2 * i} for i in range(12)}
    assert fake.queues["input"].messages == []  # every task deleted once its result was sent
    assert fake.refused == 0


async def test_notice_resends_running_tasks_with_counts_and_poison_goes_to_the_dead_queue(
    world: dict[str, Any],
) -> None:
    fake, w = world["fake"], world["worker"](concurrency=2, lease_s=300, max_attempts=2, retry_delay_s=0)
    await asyncio.to_thread(world["submit"], Task(id="bad", body={"poison": True}))
    w.start()
    try:
        await wait_for(lambda: w.stats.dead_lettered == 1, 60, "the poison task dead-lettered")
        (dead,) = fake.bodies("dead")
        body, counts = unwrap(dead)
        assert json.loads(body)["id"] == "bad" and counts.failures == 2
        assert json.loads(dead)["spotstack.reason"]
        await asyncio.to_thread(world["submit"], Task(id="held", body={"hold": True}))
        await wait_for(lambda: len(w.running) == 1, 30, "the held task running")
        await w.preempted(time.time() + 30)
        (left,) = fake.bodies("input")
        body, counts = unwrap(left)
        assert json.loads(body)["id"] == "held" and counts == Counts(failures=0, preemptions=1)
        assert w.stats.give_back_s and max(w.stats.give_back_s) < 5
    finally:
        await w.stop()


async def test_a_task_given_back_at_once_is_run_again_not_held_as_a_duplicate(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed attempt gives its task back with no delay: visible at once, so this worker's own receive can take it
    before the attempt's bookkeeping is over. It must run it again (that attempt has ended), not hold it back for a
    whole lease as a duplicate of itself. The race is made certain: the give-back returns only once it is taken."""
    fake, w = world["fake"], world["worker"](concurrency=2, lease_s=300, max_attempts=2, retry_delay_s=0)
    original = MnsTasks.give_back

    def give_back_then_wait(self: MnsTasks, d: Any, counts: Counts, delay_s: float = 0.0) -> None:
        before = {m.id for m in fake.queues["input"].messages}
        original(self, d, counts, delay_s)
        resent = [m for m in fake.queues["input"].messages if m.id not in before]
        wait_until(lambda: any(m.dequeues for m in resent), 30, "the re-sent copy received by the worker's free slot")

    monkeypatch.setattr(MnsTasks, "give_back", give_back_then_wait)
    await asyncio.to_thread(world["submit"], Task(id="bad", body={"poison": True}))
    w.start()
    try:
        await wait_for(lambda: w.stats.dead_lettered == 1, 60, "the poison task dead-lettered after its 2 attempts")
        assert w.stats.duplicates == 0
    finally:
        await w.stop()


async def test_a_heartbeat_takes_the_new_receipt_handle(world: dict[str, Any]) -> None:
    """ChangeMessageVisibility answers a new handle and retires the old: the delivery must carry the new one."""
    api = world["api"]
    tasks = MnsTasks(f"{world['base']}/queues/input", None, api)
    await asyncio.to_thread(world["submit"], Task(id="x", body={}))
    (d,) = await asyncio.to_thread(tasks.receive, 4, 1, 10)
    old = d.handle
    await asyncio.to_thread(tasks.extend, d, 60)
    assert d.handle != old
    with pytest.raises(MnsError, match="ReceiptHandleError"):
        await asyncio.to_thread(api.call, "DELETE", f"/queues/input/messages?ReceiptHandle={old}")
    await asyncio.to_thread(tasks.delete, d)
    assert world["fake"].queues["input"].messages == []


async def test_a_wrong_secret_is_refused_and_a_plain_task_has_no_counts(world: dict[str, Any]) -> None:
    bad = MnsApi(world["base"], lambda: {"AccessKeyId": "emulated", "AccessKeySecret": "wrong", "SecurityToken": "t"})
    with pytest.raises(MnsError, match="403 SignatureDoesNotMatch"):
        await asyncio.to_thread(send, bad, "/queues/input", "x")
    assert unwrap('{"id": "t", "body": {}}') == ('{"id": "t", "body": {}}', Counts())
    assert unwrap(wrap("task", Counts(failures=1, preemptions=2))) == ("task", Counts(failures=1, preemptions=2))
    assert unwrap("not json <&>") == ("not json <&>", Counts())


async def test_the_agent_config_builds_an_mns_worker_with_the_nodes_credentials(world: dict[str, Any]) -> None:
    """What an Alibaba node's agent.json says (components/alicloud/fleet.py): queue mns and queue URLs; the worker
    signs with the RAM role's credentials from the metadata server and takes a task."""
    from spotstack.runtime.config import AgentConfig
    from spotstack.runtime.jobs.wiring import build_worker

    async with AlicloudMetadataEmulator() as emu, aiohttp.ClientSession() as session:
        base = world["base"]
        cfg = AgentConfig.model_validate(
            {
                "cloud": "alicloud",
                "metadata": {"base_url": emu.url},
                "jobs": {
                    "enabled": True,
                    "queue": "mns",
                    "input_url": f"{base}/queues/input",
                    "output_url": f"{base}/queues/output",
                    "dead_letter_url": f"{base}/queues/dead",
                    "http_path": "/task",
                },
            }
        )

        async def ready() -> bool:
            return True

        w = build_worker(cfg, "a2", session, ready)
        assert isinstance(w.tasks, MnsTasks)
        await asyncio.to_thread(world["submit"], Task(id="via-config", body={"n": 1}))
        got = await asyncio.to_thread(w.tasks.receive, 1, 1, 30)
        assert [d.task.id for d in got if d.task] == ["via-config"]


@pytest.mark.slow
async def test_a_task_held_across_heartbeats_ends_and_frees_its_slot(world: dict[str, Any]) -> None:
    """Each heartbeat gives the delivery a new receipt handle: the task still ends (deleted with the latest one)
    and its slot is freed (the worker kept running tasks under their first handle and lost track of them)."""
    fake, wl = world["fake"], world["wl"]
    w = world["worker"](concurrency=1, lease_s=3)  # a heartbeat every second
    await asyncio.to_thread(world["submit"], Task(id="long", body={"hold": True, "n": 2}))
    w.start()
    try:
        await wait_for(lambda: fake.calls.count("ChangeMessageVisibility") >= 2, 30, "two heartbeats")
        wl.release.set()
        await wait_for(lambda: w.stats.done == 1 and not w.running, 30, "the task done and its slot free")
        assert fake.queues["input"].messages == []
        await asyncio.to_thread(world["submit"], Task(id="next", body={"n": 3}))
        await wait_for(lambda: w.stats.done == 2, 30, "the next task taken in the freed slot")
    finally:
        await w.stop()


@pytest.mark.slow
async def test_results_go_to_oss_with_the_nodes_ram_role(world: dict[str, Any]) -> None:
    """An Alibaba node keeps results in OSS: ossfs reads anonymously unless told, so the worker sets the node's
    RAM role credentials (from the metadata server) as fsspec's oss:// defaults; the loopback OSS checks each
    request's signature."""
    from spotstack.runtime.config import AgentConfig
    from spotstack.runtime.jobs.wiring import build_worker
    from tests.clouds.alicloud_api import OssFake

    async with AlicloudMetadataEmulator() as emu, aiohttp.ClientSession() as session:
        oss = OssFake({"acme-jobs": {}}, emu.credentials)
        app = web.Application()
        oss.routes(app)
        runner, port = await serve(app, "127.0.0.1", 0)
        base = world["base"]
        cfg = AgentConfig.model_validate(
            {
                "cloud": "alicloud",
                "region": "us-west-1",
                "metadata": {"base_url": emu.url},
                "jobs": {
                    "enabled": True,
                    "queue": "mns",
                    "input_url": f"{base}/queues/input",
                    "output_url": f"{base}/queues/output",
                    "results_url": "oss://acme-jobs/jobs/results",
                    "store_endpoint": f"http://127.0.0.1:{port}",
                    "http_path": "/task",
                },
                "workload": {"port": world["wl"].port},
            }
        )

        async def ready() -> bool:
            return True

        w = build_worker(cfg, "a3", session, ready)
        await asyncio.to_thread(world["submit"], Task(id="stored", body={"n": 4}))
        w.start()
        try:
            await wait_for(lambda: w.stats.done == 1, 60, "the task done")
            stored = json.loads(oss.buckets["acme-jobs"]["jobs/results/stored.json"])
            assert stored["status"] == "done" and stored["output"] == {"double": 8}
            assert w.store is not None and (await asyncio.to_thread(w.store.get, "stored")) is not None
        finally:
            await w.stop()
            await runner.cleanup()
