"""The local fleet serving queues: moto's SQS (on the fleet's object-store server) as the queues, the MiniLM
model server's /task as the workload, and a scripted scenario — 200 embedding batches, poison tasks and a
numpy training job — through preemptions with notice and one kill without."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotstack.runtime.jobs.sqs import depth, drain
from spotstack.runtime.jobs.task import Result, Task

if TYPE_CHECKING:
    from spotstack.runtime.local.fleet import LocalFleet
    from spotstack.runtime.local.plan import FleetPlan

BUCKET = "spotstack-local"
TRAIN_ID = "train-1"
NOTICES = 3
"""Busy replicas the scenario preempts with notice, besides the training job's (their tasks are given back)."""
GAP_S = 4.0
"""At least this long between two of those notices, each on a healed fleet."""
LIST_S = 2.0
"""How often the scenario lists the results to see whether every task is answered."""
WORDS = ("spot", "preemptible", "instance", "queue", "lease", "checkpoint", "resume", "drain", "notice", "replica")


def create_local_queues(plan: FleetPlan, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Input, output and dead-letter queues on moto's server; the nodes' jobs config, also written to
    `<workdir>/jobs.json` for `spotstack job ... --stack`."""
    import boto3

    from spotstack.runtime.jobs.sqs import create_queues

    assert plan.jobs is not None
    endpoint = env["AWS_ENDPOINT_URL"]
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    q = create_queues(sqs, f"spotstack-local-{plan.name}", max_attempts=plan.jobs["max_attempts"], lease_s=60)
    cfg = {
        **plan.jobs,
        "enabled": True,
        "input_url": q["input"],
        "output_url": q["output"],
        "dead_letter_url": q["dead"],
        "results_url": f"s3://{BUCKET}/jobs/results",
        "checkpoint_url": f"s3://{BUCKET}/jobs/checkpoints",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "wait_s": 1,
        "retry_delay_s": 0.5,
    }
    (workdir / "jobs.json").write_text(json.dumps(cfg))
    return cfg


def batch(i: int) -> dict[str, Any]:
    return {"texts": [f"{WORDS[(i + k) % len(WORDS)]} batch {i} item {k}" for k in range(4)]}


def train_command(steps: int, step_s: float) -> list[str]:
    cmd = [sys.executable, "-m", "spotstack.runtime.jobs.example_train", "--steps", str(steps), "--every", "20"]
    return [*cmd, "--step-s", str(step_s)]


def baseline_loss(steps: int) -> float:
    """The same training, never interrupted (no checkpoints), in this process's interpreter."""
    out = subprocess.run(
        [sys.executable, "-m", "spotstack.runtime.jobs.example_train", "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return float(json.loads(out.stdout)["loss"])


async def run_scenario(
    fleet: LocalFleet,
    *,
    tasks: int = 200,
    poison: int = 3,
    submit_s: float = 30.0,
    train_steps: int = 300,
    train_step_s: float = 0.08,
    kill_without_notice: bool = True,
    notices: int = NOTICES,
    deadline_s: float = 240.0,
    show: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Submit the work, interrupt the fleet while it runs, wait until every task is answered for, then count.

    The interruptions: the training job's replica with notice, up to `notices` busy replicas with notice (`GAP_S`
    apart, each once the fleet has healed: a fast run can answer every task before the last), one busy replica
    killed without notice; and whatever the market takes."""
    import boto3

    from spotstack.runtime.jobs.checkpoint import latest_step
    from spotstack.runtime.jobs.store import ResultStore

    assert fleet.jobs is not None
    j = fleet.jobs
    sqs = boto3.client("sqs", endpoint_url=j["endpoint_url"], region_name="us-east-1")
    store = await asyncio.to_thread(ResultStore, j["results_url"])
    ids = [f"task-{i:03d}" for i in range(tasks)]
    bad = [f"poison-{i}" for i in range(poison)]
    send = sqs.send_message
    train = Task(id=TRAIN_ID, training=True, command=train_command(train_steps, train_step_s))
    await asyncio.to_thread(send, QueueUrl=j["input_url"], MessageBody=train.encode())
    t0 = time.time()
    pending = [Task(id=i, body=batch(n)) for n, i in enumerate(ids)] + [Task(id=b, body={"texts": "?"}) for b in bad]
    pending.sort(key=lambda t: hash(t.id) % 97)  # poison among the rest
    interrupted_training = killed = False
    noticed, noticed_at = 0, t0
    done: set[str] = set()
    answered: list[str] = []
    listed_at = 0.0
    reached = True
    while time.time() - t0 < deadline_s:
        due = int(len(pending) * min(1.0, (time.time() - t0) / submit_s))
        for task in pending[:due]:
            await asyncio.to_thread(send, QueueUrl=j["input_url"], MessageBody=task.encode())
        pending = pending[due:]
        running = {t: n for n in fleet.nodes.values() for t in n.tasks if n.kill_at is None}
        trainer = running.get(TRAIN_ID)
        if (
            not interrupted_training
            and trainer is not None
            and time.time() - t0 > 6
            and await asyncio.to_thread(latest_step, j["checkpoint_url"], train) is not None
        ):
            # The training job's node goes, with notice (spot: the market; on-demand: host maintenance). The job
            # checkpoints and moves to another replica. Only once it has a checkpoint: a run told in its first
            # second may end before it can checkpoint (SIGTERM before its handler is set), and start again from
            # step 0 elsewhere, which loses nothing but shows no resume (CI at 214c1e2: two notices, no resume).
            fleet.preempt(trainer.name)
            interrupted_training = True
            show(f"interrupted {trainer.name} ({trainer.role}), which runs the training job, with notice")
        busy = [n for n in fleet.nodes.values() if n.tasks and n.kill_at is None and TRAIN_ID not in n.tasks]
        # The kill first once its time has come: it happens once, and on a fast machine a replica is seen holding a
        # task only now and then (a notice taking the only busy one left the kill undone: 0 of 1, and seen twice).
        if kill_without_notice and not killed and time.time() - t0 > submit_s * 0.6 and busy:
            fleet.preempt(busy[0].name, notice=False)  # tasks in flight, no notice: their leases run out
            killed = True
            show(f"killed {busy[0].name} without notice, running {len(busy[0].tasks)} task(s)")
            busy = busy[1:]
        if noticed < notices and busy and fleet.healed() and time.time() - noticed_at >= GAP_S:
            fleet.preempt(busy[0].name)  # its tasks go back to the queue and finish elsewhere
            noticed, noticed_at = noticed + 1, time.time()
            show(f"preempted {busy[0].name} with notice, running {len(busy[0].tasks)} task(s)")
        if time.time() - listed_at >= LIST_S:  # a listing of every result: on moto, ~0.1 CPU-s each
            done, listed_at = set(await asyncio.to_thread(store.ids)), time.time()
            answered = [i for i in [*ids, *bad, TRAIN_ID] if i in done]
        if not pending and len(answered) == tasks + poison + 1:
            finals = [await asyncio.to_thread(store.get, i) for i in [*bad, TRAIN_ID]]
            # A worker stores a result, publishes it, then deletes the task: once the input queue is empty too,
            # every result is in the output queue.
            if all(r is not None and r.status in ("done", "failed") for r in finals) and not any(
                (await asyncio.to_thread(depth, sqs, j["input_url"])).values()
            ):
                reached = False
                break
        show(f"{len(answered)} of {tasks + poison + 1} answered; {fleet.preemptions} preemptions")
        await asyncio.sleep(0.5)

    report = await asyncio.to_thread(_count, sqs, j, store, ids, bad, train_steps, time.time() - t0, fleet)
    return {**report, "busy_notices": noticed, "deadline_reached": reached}


def _count(
    sqs: Any, j: dict[str, Any], store: Any, ids: list[str], bad: list[str], steps: int, wall: float, fleet: Any
) -> dict[str, Any]:
    # The input queue first: a task still answered while this counts shows as left in it, not as missing.
    left = depth(sqs, j["input_url"])
    results = [Result.model_validate_json(m["Body"]) for m in drain(sqs, j["output_url"])]
    per_id = Counter(r.id for r in results)
    dead = sorted(json.loads(m["Body"]).get("id", "?") for m in drain(sqs, j["dead_letter_url"]))
    train = store.get(TRAIN_ID) or next((r for r in results if r.id == TRAIN_ID), None)
    out = train.output if train is not None and isinstance(train.output, dict) else {}
    return {
        "tasks": len(ids),
        "results": sum(1 for i in ids if per_id[i] >= 1),
        "duplicate_results": sum(max(0, per_id[i] - 1) for i in ids),
        "missing": [i for i in ids if per_id[i] == 0],
        "unexpected_results": sorted(set(per_id) - set(ids) - {TRAIN_ID}),
        "poison": bad,
        "dead_letter": dead,
        "left_in_queue": left,
        "given_back_results": sum(1 for r in results if r.preemptions),
        "training": {
            "status": train.status if train else None,
            "loss": out.get("loss"),
            "baseline_loss": baseline_loss(steps),
            "steps": out.get("steps"),
            "resumes": out.get("resumes", []),
            "preemptions": train.preemptions if train else None,
            "node": train.node if train else None,
        },
        "preemptions": fleet.preemptions,
        "killed_without_notice": fleet.killed_without_notice,
        "wall_s": round(wall, 1),
    }
