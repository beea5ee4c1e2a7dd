"""Jobs (issue 12), against moto's SQS and S3 servers on loopback (own processes):

1. worker overhead: tasks/s through the agent's worker vs a bare receive / process / send result / delete loop,
   on the same queue and workload (a task = an HTTP call that takes `--task-ms`); ratio of medians;
2. give-back latency: a notice while `--slots` tasks run -> each task visible again in the queue; p50/p99;
3. training resume: a notice to a replica running the checkpointed training job -> the job's next step done on
   another (idle) replica; median.

    .venv/bin/python benchmarks/jobs_worker.py [--tasks 200] [--task-ms 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from aiohttp import web

from spotstack.runtime.jobs.sqs import SqsResults, SqsTasks, create_queues
from spotstack.runtime.jobs.store import ResultStore
from spotstack.runtime.jobs.task import Result, Task
from spotstack.runtime.jobs.worker import Worker
from spotstack.runtime.jobs.worker_state import WorkerSettings
from spotstack.runtime.local import motoserver
from spotstack.runtime.net import free_port, serve


async def workload(task_s: float) -> tuple[web.AppRunner, int, asyncio.Event]:
    hold = asyncio.Event()

    async def task(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("hold"):
            await hold.wait()
        await asyncio.sleep(task_s)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/task", task)
    runner, port = await serve(app, "127.0.0.1", 0)
    return runner, port, hold


async def until(cond: Any, every: float = 0.005) -> None:
    """Poll a condition the code under measure changes (no event to wait on without changing it)."""
    while not cond():  # noqa: ASYNC110
        await asyncio.sleep(every)


def fresh(sqs: Any, tag: str) -> dict[str, str]:
    return create_queues(sqs, f"b{tag}{time.monotonic_ns()}", max_attempts=3, lease_s=60)


async def bare_loop(sqs: Any, q: dict[str, str], url: str, n: int) -> float:
    """What a user writes by hand: receive one, call the workload, send the result, delete."""
    done, t0 = 0, time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while done < n:
            got = (
                await asyncio.to_thread(
                    sqs.receive_message, QueueUrl=q["input"], MaxNumberOfMessages=1, WaitTimeSeconds=1
                )
            ).get("Messages", [])
            for m in got:
                task = Task.decode(m["Body"])
                async with s.post(url, json=task.body) as r:
                    out = await r.json()
                res = Result(id=task.id, status="done", output=out)
                await asyncio.to_thread(sqs.send_message, QueueUrl=q["output"], MessageBody=res.for_queue())
                await asyncio.to_thread(sqs.delete_message, QueueUrl=q["input"], ReceiptHandle=m["ReceiptHandle"])
                done += 1
    return n / (time.perf_counter() - t0)


def worker(sqs: Any, q: dict[str, str], url: str | None, tmp: Path, **kw: Any) -> tuple[Worker, aiohttp.ClientSession]:
    session = aiohttp.ClientSession()

    async def ready() -> bool:
        return True

    w = Worker(
        SqsTasks(q["input"], q["dead"], sqs),
        SqsResults(q["output"], sqs),
        kw.pop("store", None),
        WorkerSettings(node="bench", http_url=url, wait_s=1, workdir=tmp, **kw),
        ready=ready,
        session=session,
    )
    return w, session


async def worker_run(sqs: Any, q: dict[str, str], url: str, n: int, tmp: Path) -> float:
    w, session = worker(sqs, q, url, tmp)
    t0 = time.perf_counter()
    w.start()
    await until(lambda: w.stats.done >= n, 0.002)
    rate = n / (time.perf_counter() - t0)
    await w.stop()
    await session.close()
    return rate


def submit(sqs: Any, q: dict[str, str], tasks: list[Task]) -> None:
    for i in range(0, len(tasks), 10):
        sqs.send_message_batch(
            QueueUrl=q["input"],
            Entries=[{"Id": str(k), "MessageBody": t.encode()} for k, t in enumerate(tasks[i : i + 10])],
        )


async def overhead(sqs: Any, args: argparse.Namespace, tmp: Path) -> None:
    runner, port, _ = await workload(args.task_ms / 1000)
    url = f"http://127.0.0.1:{port}/task"
    bare, ours = [], []
    for _ in range(args.runs):
        for kind in ("bare", "worker"):
            q = fresh(sqs, kind)
            submit(sqs, q, [Task(body={"n": i}) for i in range(args.tasks)])
            if kind == "bare":
                bare.append(await bare_loop(sqs, q, url, args.tasks))
            else:
                ours.append(await worker_run(sqs, q, url, args.tasks, tmp))
    await runner.cleanup()
    b, w = statistics.median(bare), statistics.median(ours)
    print(f"1. {args.tasks} tasks of {args.task_ms} ms, concurrency 1, {args.runs} runs each (medians):")
    print(f"   bare receive/process/send/delete loop  {b:7.1f} tasks/s   {[round(x, 1) for x in bare]}")
    print(f"   the agent's worker                      {w:7.1f} tasks/s   {[round(x, 1) for x in ours]}")
    print(f"   ratio worker / bare: {w / b:.2f}")


async def give_back(sqs: Any, args: argparse.Namespace, tmp: Path) -> None:
    runner, port, hold = await workload(0)
    url = f"http://127.0.0.1:{port}/task"
    samples: list[float] = []
    for _ in range(args.trials):
        q = fresh(sqs, "gb")
        submit(sqs, q, [Task(body={"hold": True}) for _ in range(args.slots)])
        w, session = worker(sqs, q, url, tmp, concurrency=args.slots, lease_s=300)
        w.start()
        await until(lambda w=w: len(w.running) >= args.slots)
        seen = time.time()
        await w.preempted(seen + 120, seen)
        samples += w.stats.give_back_s
        await w.stop()
        await session.close()
    hold.set()
    await runner.cleanup()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
    print(f"2. give-back, notice -> task visible again ({len(samples)} tasks, {args.slots} running per notice):")
    print(
        f"   p50 {statistics.median(samples) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {samples[-1] * 1000:.1f} ms"
    )


async def resume(sqs: Any, args: argparse.Namespace, tmp: Path) -> None:
    from spotstack.runtime.jobs.checkpoint import Checkpoints

    times = []
    cmd = [
        sys.executable,
        "-m",
        "spotstack.runtime.jobs.example_train",
        "--steps",
        "100000",
        "--every",
        "50",
        "--step-s",
        "0.01",
    ]
    for i in range(args.runs):
        q = fresh(sqs, "tr")
        ck_url = f"s3://bench/ck{i}"
        store = ResultStore(f"s3://bench/res{i}")
        a, sa = worker(sqs, q, None, tmp, task_commands=True, checkpoint_url=ck_url, store=store)
        b, sb = worker(sqs, q, None, tmp, task_commands=True, checkpoint_url=ck_url, store=store)
        submit(sqs, q, [Task(id="train", training=True, command=cmd)])
        a.start()
        ck = Checkpoints(f"{ck_url}/train")
        await until(lambda ck=ck: ck.reached() >= 120, 0.05)
        b.start()  # the replica that takes over, idle and polling
        t0 = time.perf_counter()
        await a.preempted(time.time() + 120)
        stopped = ck.reached()
        await until(lambda ck=ck, at=stopped: ck.reached() > at, 0.01)  # a step done on b, from its checkpoint
        times.append(time.perf_counter() - t0)
        for w, s in ((a, sa), (b, sb)):
            for r in list(w.running.values()):
                r.leaving = True
            await w.stop()
            await s.close()
    print(f"3. training resume, notice -> a step done on another replica ({args.runs} runs):")
    print(f"   median {statistics.median(times):.2f} s   {[round(t, 2) for t in times]}")


def start_moto() -> tuple[Any, str]:
    import os
    import subprocess
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        motoserver.argv(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="b", AWS_SECRET_ACCESS_KEY="b", AWS_DEFAULT_REGION="us-east-1"
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, endpoint


async def main(args: argparse.Namespace) -> None:
    sqs = boto3.client("sqs")
    boto3.client("s3").create_bucket(Bucket="bench")
    with tempfile.TemporaryDirectory() as tmp:
        await overhead(sqs, args, Path(tmp))
        await give_back(sqs, args, Path(tmp))
        await resume(sqs, args, Path(tmp))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--task-ms", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--slots", type=int, default=8)
    proc, _ = start_moto()
    try:
        asyncio.run(main(ap.parse_args()))
    finally:
        proc.terminate()
        proc.wait()
