"""What the queue worker (worker.py) is given — its settings — and what it keeps: a record per running task, and its
counts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from spotstack.runtime.jobs.queue import Delivery
from spotstack.runtime.jobs.runner import CommandRun, HttpRun
from spotstack.runtime.jobs.task import Task


@dataclass
class WorkerSettings:
    node: str
    http_url: str | None = None
    """Tasks are POSTed here (the workload's task endpoint) ..."""
    command: list[str] | None = None
    """... or run as this command (the body on stdin)."""
    task_commands: bool = False
    """Tasks may name their own command (anyone who can send to the input queue runs it on the node)."""
    concurrency: int = 1
    lease_s: float = 60.0
    task_timeout_s: float = 900.0
    max_attempts: int = 3
    wait_s: float = 5.0
    """Long-poll per receive; short enough that a notice stops taking within it."""
    retry_delay_s: float = 1.0
    """A failed task is visible again after this times its failures (at most 15 min: SQS's delay limit)."""
    checkpoint_url: str | None = None
    """Training runs checkpoint under `<checkpoint_url>/<task id>`."""
    resume_command: list[str] | None = None
    """A training run that has a checkpoint starts with this instead of its command."""
    workdir: Path = Path("/var/lib/spotstack/jobs")


@dataclass
class Running:
    delivery: Delivery
    task: Task
    run: HttpRun | CommandRun
    future: asyncio.Task[None] | None = None
    started_at: float = field(default_factory=time.time)
    key: str = ""
    """Its key in `Worker.running`: the receipt handle it came with (MNS hands out a new one at each heartbeat)."""
    given_back: bool = False
    claimed: bool = False
    """Its running marker is in the result store (renewed at each heartbeat, removed at the end)."""
    handing_on: bool = False
    """Its run is over and its answer on the way (result, give-back or dead-letter, then the store): not cut off."""
    leaving: bool = False
    """A notice came: whatever its run returns, the task goes back (a training run's exit after its checkpoint
    is not the job's end)."""


@dataclass
class Stats:
    done: int = 0
    retried: int = 0
    dead_lettered: int = 0
    given_back: int = 0
    duplicates: int = 0
    """Deliveries of a task whose result was already stored: deleted without running."""
    give_back_s: list[float] = field(default_factory=list)
    """Per give-back on a notice: seconds from the notice to the task visible again."""
    rolled_over: int = 0
    """Training runs checkpointed and re-queued at the queue's hold limit (SQS, MNS: 12 h from receipt)."""


def make_run(
    s: WorkerSettings, session: aiohttp.ClientSession | None, task: Task, resuming: bool = False
) -> HttpRun | CommandRun:
    """How a task runs: the fleet's command (or the task's own, where allowed), else its HTTP endpoint. `resuming`: a
    training task with a checkpoint, run with the resume command where there is one."""
    timeout = task.timeout_s or s.task_timeout_s
    ckpt = f"{s.checkpoint_url.rstrip('/')}/{task.id}" if task.training and s.checkpoint_url else None
    argv = s.command
    if task.command is not None and s.task_commands:
        argv = task.command
    if resuming and s.resume_command:
        argv = s.resume_command
    if argv is not None:
        return CommandRun(list(argv), task, timeout, s.workdir, checkpoint_url=ckpt)
    assert s.http_url and session is not None, "a worker needs an HTTP endpoint or a command"
    return HttpRun(session, s.http_url, task, timeout)
