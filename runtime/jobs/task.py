"""What travels through the queues: a task (input) and its result (output). Pure data, no I/O.

A task's attempt counts travel with it (message attributes): a give-back on a spot notice re-enqueues the
task with `preemptions + 1` and the same `failures`, so a preempted task is never counted as a poison one;
only failures (and silent losses, which the queue's own receive count catches) lead to the dead-letter queue.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGE_BYTES = 256 * 1024
"""SQS's limit on a message (Pub/Sub allows 10 MB, MNS 64 KiB): results larger than this go to the store only."""
LOG_TAIL_BYTES = 4096
"""How much of a task's output (stdout + stderr of a command) its result keeps."""
OUTPUT_INLINE_BYTES = 128 * 1024
"""A result's output carried in the output queue's message at most; the whole of it is in the result store."""


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
    """Unique per task: results are de-duplicated by it. Path-safe: it names the result's and the checkpoints'
    objects, so no `.` or `..` (a training task `..` checkpointed into the parent folder) and no leading dot."""
    body: Any = None
    """JSON given to the workload: the body of the POST (HTTP tasks) or stdin (command tasks)."""
    command: list[str] | None = Field(default=None, min_length=1)
    """Run this instead of the fleet's handler (only where the fleet allows task commands)."""
    training: bool = False
    """A long job that checkpoints: told to checkpoint on a notice, resumed from its latest checkpoint."""
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    """Overrides the fleet's per-task timeout."""
    submitted_at: float = Field(default_factory=time.time)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def decode(cls, text: str) -> Task:
        """A message without an id (sent by hand, not `job submit`) gets one from its content: the same at every
        delivery, so its result, its retries and its duplicates all meet under one id."""
        doc = json.loads(text)
        if isinstance(doc, dict) and "id" not in doc:
            doc["id"] = "h-" + hashlib.sha256(text.encode()).hexdigest()[:32]
        return cls.model_validate(doc)


class Counts(BaseModel):
    """A task's history, carried beside it through give-backs and retries."""

    failures: int = Field(default=0, ge=0)
    preemptions: int = Field(default=0, ge=0)


Status = Literal["done", "failed", "retrying"]


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: Status
    """done; retrying (this attempt failed, another follows); failed (the last attempt failed: dead-lettered)."""
    output: Any = None
    """The workload's answer: JSON of the HTTP response, or a command's stdout (text)."""
    output_truncated: bool = False
    error: str = ""
    log_tail: str = ""
    attempt: int = 1
    """Attempts that ran to an outcome, this one included (preempted runs are not attempts)."""
    preemptions: int = 0
    node: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    resumed_from: int | None = None
    """Training: the checkpoint step this run started from (None: from scratch)."""

    def for_queue(self) -> str:
        """The output queue's message: the result, its output cut to what a message may carry."""
        doc = self
        text = doc.model_dump_json()
        if len(text.encode()) > OUTPUT_INLINE_BYTES + LOG_TAIL_BYTES + 2048:
            doc = self.model_copy(update={"output": None, "output_truncated": True})
            text = doc.model_dump_json()
        return text


def tail(text: str, limit: int = LOG_TAIL_BYTES) -> str:
    data = text.encode(errors="replace")
    return data[-limit:].decode(errors="replace") if len(data) > limit else text
