"""The queue worker against SQS (moto's server on loopback) and a real HTTP workload or command."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.jobs.sqs import SqsResults, SqsTasks, create_queues
from spotstack.runtime.jobs.store import ResultStore
from spotstack.runtime.jobs.task import Task
from spotstack.runtime.jobs.worker import Worker
from spotstack.runtime.jobs.worker_state import WorkerSettings
from spotstack.runtime.net import serve
from tests.runtime.jobskit import depth, drain_queue, moto_server, sqs_client
from tests.waits import wait_for


class Workload:
    """A task endpoint: doubles `n`; `poison` answers 500; `hold` waits until released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def task(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(request.headers["X-Spotstack-Task"])
        if body.get("poison"):
            return web.Response(status=500, text="cannot do this one")
        if body.get("hold"):
            await self.release.wait()
        return web.json_response({"double": 2 * body.get("n", 0)})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/task", self.task)
        self._runner, self.port = await serve(app, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._runner is not None
        self.release.set()  # no held request keeps the server from stopping
        await self._runner.cleanup()


class Rig:
    def __init__(self, endpoint: str, tmp: Path, max_attempts: int = 3, lease_s: int = 30) -> None:
        self.sqs = sqs_client(endpoint)
        self.q = create_queues(self.sqs, f"t{time.monotonic_ns()}", max_attempts=max_attempts, lease_s=lease_s)
        self.store = ResultStore(str(tmp / "results"))
        self.tmp = tmp
        self.ready = True

    def worker(self, session: aiohttp.ClientSession, url: str | None, **kw: Any) -> Worker:
        settings = WorkerSettings(node="n1", http_url=url, wait_s=1, workdir=self.tmp / "work", **kw)

        async def ready() -> bool:
            return self.ready

        return Worker(
            SqsTasks(self.q["input"], self.q["dead"], self.sqs),
            SqsResults(self.q["output"], self.sqs),
            self.store,
            settings,
            ready=ready,
            session=session,
        )

    def submit(self, *tasks: Task) -> None:
        for t in tasks:
            self.sqs.send_message(QueueUrl=self.q["input"], MessageBody=t.encode())


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, Workload, aiohttp.ClientSession]]:
    with moto_server() as endpoint:
        w = Workload()
        await w.start()
        async with aiohttp.ClientSession() as session:
            yield Rig(endpoint, tmp_path), w, session
        await w.stop()


@pytest.mark.slow
async def test_every_task_has_one_result_and_leaves_the_queue(rig: Any) -> None:
    r, wl, session = rig
    worker = r.worker(session, f"http://127.0.0.1:{wl.port}/task", concurrency=4)
    tasks = [Task(id=f"t{i}", body={"n": i}) for i in range(25)]
    r.submit(*tasks)
    worker.start()
    try:
        await wait_for(lambda: worker.stats.done == 25, 60, "25 tasks done")
    finally:
        await worker.stop()
    out = drain_queue(r.sqs, r.q["output"])
    assert sorted(m["body"]["id"] for m in out) == sorted(t.id for t in tasks)
    assert all(m["body"]["output"] == {"double": 2 * int(m["body"]["id"][1:])} for m in out)
    assert depth(r.sqs, r.q["input"]) == (0, 0)
    assert r.store.get("t3") is not None and r.store.get("t3").status == "done"  # type: ignore[union-attr]


async def test_poison_task_is_dead_lettered_after_max_attempts_and_never_reaches_output(rig: Any) -> None:
    r, wl, session = rig
    worker = r.worker(session, f"http://127.0.0.1:{wl.port}/task", max_attempts=3, retry_delay_s=0.1)
    r.submit(Task(id="bad", body={"poison": True}), Task(id="good", body={"n": 1}))
    worker.start()
    try:
        await wait_for(lambda: worker.stats.dead_lettered == 1 and worker.stats.done == 1, 60, "poison dead-lettered")
    finally:
        await worker.stop()
    assert wl.calls.count("bad") == 3
    dead = drain_queue(r.sqs, r.q["dead"])
    assert [m["body"]["id"] for m in dead] == ["bad"]
    assert dead[0]["attrs"]["spotstack.failures"]["StringValue"] == "3"
    assert "HTTP 500" in dead[0]["attrs"]["spotstack.reason"]["StringValue"]
    assert [m["body"]["id"] for m in drain_queue(r.sqs, r.q["output"])] == ["good"]
    failed = r.store.get("bad")
    assert failed is not None and failed.status == "failed" and failed.attempt == 3 and "cannot do" in failed.log_tail


async def test_notice_gives_running_tasks_back_at_once_without_counting_a_failure(rig: Any) -> None:
    r, wl, session = rig
    worker = r.worker(session, f"http://127.0.0.1:{wl.port}/task", concurrency=2, lease_s=300)
    r.submit(Task(id="long1", body={"hold": True}), Task(id="long2", body={"hold": True}))
    worker.start()
    try:
        await wait_for(lambda: len(worker.running) == 2, 30, "both tasks running")
        seen = time.time()
        await worker.preempted(deadline=seen + 120, seen_at=seen)
        # Visible again at once (the lease was 300 s): another replica can take both now.
        other = r.sqs.receive_message(
            QueueUrl=r.q["input"], MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
        ).get("Messages", [])
        assert sorted(json.loads(m["Body"])["id"] for m in other) == ["long1", "long2"]
        for m in other:
            assert m["MessageAttributes"]["spotstack.preemptions"]["StringValue"] == "1"
            assert m["MessageAttributes"]["spotstack.failures"]["StringValue"] == "0"
        assert worker.stats.given_back == 2 and max(worker.stats.give_back_s) < 5
        # Nothing more is taken after a notice.
        r.submit(Task(id="late", body={"n": 1}))
        await asyncio.sleep(0)
        assert not worker.accepting and not worker.running
    finally:
        wl.release.set()
        await worker.stop()
    assert drain_queue(r.sqs, r.q["output"]) == []


@pytest.mark.slow
async def test_heartbeats_keep_a_long_task_leased_to_its_worker(rig: Any) -> None:
    r, wl, session = rig
    worker = r.worker(session, f"http://127.0.0.1:{wl.port}/task", lease_s=5)
    r.submit(Task(id="slow", body={"hold": True, "n": 2}))
    worker.start()
    try:
        await wait_for(lambda: bool(worker.running), 30, "the task running")
        start = time.monotonic()
        while time.monotonic() - start < 11:  # more than twice the lease: only heartbeats keep it hidden
            assert depth(r.sqs, r.q["input"]) == (0, 1)
            await asyncio.sleep(0.5)
        wl.release.set()
        await wait_for(lambda: worker.stats.done == 1, 30, "the task done")
    finally:
        await worker.stop()
    assert wl.calls == ["slow"]


@pytest.mark.slow
async def test_not_ready_takes_nothing_and_a_stored_result_is_not_run_again(rig: Any) -> None:
    r, wl, session = rig
    worker = r.worker(session, f"http://127.0.0.1:{wl.port}/task")
    r.ready = False
    r.submit(Task(id="a", body={"n": 1}))
    worker.start()
    try:
        await asyncio.sleep(0.5)
        assert depth(r.sqs, r.q["input"]) == (1, 0) and not wl.calls
        r.ready = True
        await wait_for(lambda: worker.stats.done == 1, 30, "a done")
        r.submit(Task(id="a", body={"n": 1}))  # a duplicate delivery of finished work
        r.sqs.send_message(QueueUrl=r.q["input"], MessageBody="not json at all")
        await wait_for(lambda: worker.stats.duplicates == 1 and worker.stats.dead_lettered == 1, 30, "both handled")
    finally:
        await worker.stop()
    assert wl.calls == ["a"]
    # The stored result is published again for the duplicate (its first publisher may have died before it did).
    assert [m["body"]["id"] for m in drain_queue(r.sqs, r.q["output"])] == ["a", "a"]
    assert depth(r.sqs, r.q["input"]) == (0, 0)


@pytest.mark.slow
async def test_training_run_checkpoints_on_notice_and_resumes_to_the_uninterrupted_loss(rig: Any) -> None:
    r, _, session = rig
    ckpt = r.tmp / "ckpt"
    cmd = [sys.executable, "-m", "spotstack.runtime.jobs.example_train", "--steps", "200", "--every", "50"]
    baseline = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    want = json.loads((await baseline.communicate())[0])["loss"]

    job = Task(id="train", training=True, command=[*cmd, "--step-s", "0.02"])
    first = r.worker(session, None, task_commands=True, checkpoint_url=str(ckpt))
    r.submit(job)
    first.start()
    try:
        await wait_for(lambda: (ckpt / "train" / "progress").exists(), 60, "training under way")
        await wait_for(lambda: int((ckpt / "train" / "progress").read_text()) >= 60, 60, "past one checkpoint")
        await first.preempted(deadline=time.time() + 30)
    finally:
        await first.stop()
    # The notice's checkpoint is at the step it had reached, not the last periodic one.
    stopped_at = int((ckpt / "train" / "progress").read_text())
    assert (ckpt / "train" / f"{stopped_at:012d}.done").exists()

    second = r.worker(session, None, task_commands=True, checkpoint_url=str(ckpt))
    second.start()
    try:
        await wait_for(lambda: second.stats.done == 1, 120, "training finished on the second replica")
    finally:
        await second.stop()
    res = r.store.get("train")
    assert res is not None and res.status == "done" and res.resumed_from == stopped_at and res.preemptions == 1
    assert res.output["loss"] == want
    assert res.output["resumes"] == [{"from": stopped_at, "previous_reached": stopped_at, "redone": 0}]


@pytest.mark.slow
async def test_a_training_run_rolls_over_before_the_queues_hold_limit(rig: Any) -> None:
    """SQS hides a message at most 12 h from its receipt: before that a training run checkpoints and goes back to
    the queue (not counted as a preemption), resumes, and still ends at the uninterrupted loss. The limit is made
    seconds here."""
    r, _, session = rig
    ckpt = r.tmp / "ckpt"
    cmd = [sys.executable, "-m", "spotstack.runtime.jobs.example_train", "--steps", "200", "--every", "50"]
    baseline = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    want = json.loads((await baseline.communicate())[0])["loss"]
    w = r.worker(session, None, task_commands=True, checkpoint_url=str(ckpt), lease_s=1)
    # Rolled over 8 s after each receipt: a 10 s run (plus interpreter starts on a busy machine) needs two or more.
    w.tasks.max_hold_s = 16.0  # type: ignore[attr-defined]
    r.submit(Task(id="long-train", training=True, command=[*cmd, "--step-s", "0.05"]))
    w.start()
    try:
        await wait_for(lambda: w.stats.done == 1, 120, "training finished")
    finally:
        await w.stop()
    res = r.store.get("long-train")
    assert res is not None and res.status == "done" and res.output["loss"] == want
    assert w.stats.rolled_over >= 1 and res.preemptions == 0
    assert res.output["resumes"] and all(x["redone"] >= 0 for x in res.output["resumes"])


@pytest.mark.slow
async def test_a_delivery_after_a_silent_end_is_reported_and_give_backs_are_not(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a delivery whose previous one ended without an answer counts toward the queue's redrive: say so."""
    r, wl, session = rig
    r.submit(Task(id="lost", body={"n": 1}))
    # Another worker takes "lost" and dies with it: its lease (1 s) runs out and nobody answers.
    got = r.sqs.receive_message(QueueUrl=r.q["input"], MaxNumberOfMessages=1, VisibilityTimeout=1)["Messages"]
    assert [json.loads(m["Body"])["id"] for m in got] == ["lost"]
    r.submit(Task(id="bad", body={"poison": True}))
    worker = r.worker(session, f"http://127.0.0.1:{wl.port}/task", max_attempts=3, retry_delay_s=0.1)
    caplog.set_level("WARNING", logger="spotstack.jobs")
    worker.start()
    try:
        await wait_for(lambda: worker.stats.done == 1 and worker.stats.dead_lettered == 1, 60, "both answered")
    finally:
        await worker.stop()
    silent = [rec.getMessage() for rec in caplog.records if "ended without an answer" in rec.getMessage()]
    # "bad" was given back twice (re-sent copies, each delivered once): not reported.
    assert silent == ["task lost: delivery 2 (an earlier one ended without an answer, or lost its lease)"], silent
