"""At most once per attempt, where the result store can say so. Pure: what to do with a delivery, from what the
store holds for its task id.

Queues deliver at least once: SQS and Pub/Sub may hand one message out twice, a lost SendMessage answer that
botocore retries leaves two copies of a give-back, and a lease lost while a task runs lets a second worker take it.
The store keeps each task's latest result (done, retrying at attempt n, failed) and a short-lived running marker
(the node and until when), so a copy is recognised whatever the queue says of it:
- done before: publish the stored result again, delete the copy, run nothing;
- failed (dead-lettered) before: a stale copy, deleted;
- retrying at a later attempt than the copy carries: run, counted from the store's attempt (`counted`). The copy is
  either the delivery of a node that died between storing its attempt and giving the task back (the only copy
  left: deleting it lost the task), or a second copy of an earlier give-back (run once more at most per copy,
  never past `max_attempts`);
- running on another node (its marker not expired): held back for a lease, to be judged again then;
- otherwise: run it, with a marker renewed at each heartbeat.
Without a result store none of this can be known: the worker then says once that tasks may run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spotstack.runtime.jobs.task import Counts, Result

Action = Literal["run", "done", "stale", "hold"]


@dataclass(frozen=True)
class Marker:
    node: str
    until: float


def judge(prior: Result | None, marker: Marker | None, counts: Counts, node: str, now: float) -> tuple[Action, str]:
    """What to do with a delivery carrying `counts`, and why (for the log)."""
    if prior is not None:
        if prior.status == "done":
            return "done", f"done before on {prior.node or 'a node'}"
        if prior.status == "failed":
            return "stale", f"a copy of a task dead-lettered after {prior.attempt} attempts"
    if marker is not None and marker.node != node and marker.until > now:
        return "hold", f"running on {marker.node} (its marker holds {marker.until - now:.0f}s more)"
    return "run", ""


def counted(prior: Result | None, counts: Counts) -> Counts:
    """The counts a delivery runs with: its own, or the store's attempt where the store is ahead of it."""
    if prior is not None and prior.status == "retrying" and prior.attempt > counts.failures:
        return counts.model_copy(update={"failures": prior.attempt})
    return counts
