"""The queue contract the worker talks to; one adaptor per cloud beside it (`sqs.py`, ...).

Calls are blocking (the clouds' SDKs are): the worker runs them in threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spotstack.runtime.jobs.task import Counts, Task


@dataclass
class Delivery:
    """One received task and what is needed to answer for it."""

    task: Task | None
    """None: the message was not a task (it goes to the dead-letter queue untouched)."""
    counts: Counts
    handle: str
    """Receipt handle / ack id: this delivery's proof of its lease."""
    body: str
    receives: int = 1
    """The queue's own count of deliveries of this message (since it was last enqueued)."""


class TaskQueue(Protocol):
    name: str

    def receive(self, max_n: int, wait_s: float, lease_s: float) -> list[Delivery]:
        """Up to `max_n` tasks, each leased to this worker for `lease_s` (long-polling up to `wait_s`)."""
        ...

    def extend(self, d: Delivery, lease_s: float) -> None:
        """Heartbeat: the lease runs `lease_s` from now."""
        ...

    def give_back(self, d: Delivery, counts: Counts, delay_s: float = 0.0) -> None:
        """Make the task visible to every worker again (after `delay_s`), carrying `counts`."""
        ...

    def delete(self, d: Delivery) -> None:
        """The task is done (its result written): it never comes back."""
        ...

    def dead_letter(self, d: Delivery, counts: Counts, reason: str) -> None:
        """Move the task to the dead-letter queue, with why."""
        ...


class ResultQueue(Protocol):
    def publish(self, task_id: str, message: str) -> None: ...
