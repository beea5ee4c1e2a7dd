"""Amazon SQS as the task queues: input (with a redrive policy to the dead-letter queue) and output.

Give-back re-sends the task with its counts and deletes the delivered copy: it is visible to every worker at
once, and the queue's receive count starts again, so the redrive policy (`maxReceiveCount` = max attempts)
counts only deliveries that ended silently (a node killed without notice, a crash), never a preemption the
node announced. If the re-send fails, the delivered copy's visibility is set to the delay instead ("lease 0").
"""

from __future__ import annotations

import logging
from typing import Any

from spotstack.runtime.jobs.queue import Delivery
from spotstack.runtime.jobs.task import Counts, Task

log = logging.getLogger("spotstack.jobs")

MAX_LEASE_S = 43200
"""SQS's most visibility timeout (12 h)."""
MAX_WAIT_S = 20
"""SQS's longest long-poll."""


def client(region: str | None, endpoint_url: str | None) -> Any:
    import boto3

    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)


def _attrs(counts: Counts) -> dict[str, Any]:
    return {
        "spotstack.failures": {"DataType": "Number", "StringValue": str(counts.failures)},
        "spotstack.preemptions": {"DataType": "Number", "StringValue": str(counts.preemptions)},
    }


def _counts(msg: dict[str, Any]) -> Counts:
    a = msg.get("MessageAttributes") or {}

    def num(key: str) -> int:
        try:
            return max(0, int(a[key]["StringValue"]))
        except (KeyError, ValueError, TypeError):
            return 0

    return Counts(failures=num("spotstack.failures"), preemptions=num("spotstack.preemptions"))


class SqsTasks:
    name = "sqs"
    max_hold_s: float | None = MAX_LEASE_S
    """A message stays hidden at most this long from its receipt, however often its lease is extended."""

    def __init__(self, url: str, dead_letter_url: str | None, sqs: Any) -> None:
        self.url, self.dlq, self.sqs = url, dead_letter_url, sqs

    def receive(self, max_n: int, wait_s: float, lease_s: float) -> list[Delivery]:
        r = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, max_n)),
            WaitTimeSeconds=int(max(0, min(MAX_WAIT_S, wait_s))),
            VisibilityTimeout=int(max(1, min(MAX_LEASE_S, lease_s))),
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        out = []
        for m in r.get("Messages", []):
            try:
                task: Task | None = Task.decode(m["Body"])
            except ValueError:
                task = None
            receives = int((m.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
            out.append(Delivery(task, _counts(m), m["ReceiptHandle"], m["Body"], receives))
        return out

    def extend(self, d: Delivery, lease_s: float) -> None:
        self.sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=d.handle, VisibilityTimeout=int(min(MAX_LEASE_S, lease_s))
        )

    def give_back(self, d: Delivery, counts: Counts, delay_s: float = 0.0) -> None:
        try:
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=d.body,
                MessageAttributes=_attrs(counts),
                DelaySeconds=int(max(0, min(900, delay_s))),
            )
        except Exception as exc:  # the delivered copy still carries the task: make it visible instead
            log.warning("re-sending task failed (%s); giving the delivered copy back instead", exc)
            self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=d.handle, VisibilityTimeout=0)
            return
        self.delete(d)

    def delete(self, d: Delivery) -> None:
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=d.handle)

    def dead_letter(self, d: Delivery, counts: Counts, reason: str) -> None:
        if self.dlq is None:  # no dead-letter queue: the task is dropped, loudly
            log.error("task dropped after %d failures (no dead-letter queue): %s", counts.failures, reason)
        else:
            attrs = _attrs(counts)
            attrs["spotstack.reason"] = {"DataType": "String", "StringValue": reason[:1000] or "-"}
            self.sqs.send_message(QueueUrl=self.dlq, MessageBody=d.body, MessageAttributes=attrs)
        self.delete(d)


class SqsResults:
    def __init__(self, url: str, sqs: Any) -> None:
        self.url, self.sqs = url, sqs

    def publish(self, task_id: str, message: str) -> None:
        self.sqs.send_message(
            QueueUrl=self.url,
            MessageBody=message,
            MessageAttributes={"spotstack.task": {"DataType": "String", "StringValue": task_id}},
        )


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete every message now visible in a queue (a consumer reading results to the end)."""
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
            "Messages", []
        )
        if not got:
            return out
        for m in got:
            out.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def depth(sqs: Any, url: str) -> dict[str, int]:
    """A queue's messages waiting (visible), taken (in flight) and sent with a delay not yet over (a give-back
    after a failure, a held duplicate: counted in neither of the others), as SQS approximates them."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {
        "visible": int(a["ApproximateNumberOfMessages"]),
        "in_flight": int(a["ApproximateNumberOfMessagesNotVisible"]),
        "delayed": int(a.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


def create_queues(sqs: Any, name: str, *, max_attempts: int, lease_s: int) -> dict[str, str]:
    """The three queues as the components declare them (for the local fleet and tests): input, redriven to the
    dead-letter queue after `max_attempts` silent deliveries; output. Returns their URLs by role."""
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    import json

    redrive = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": max_attempts})
    inp = sqs.create_queue(
        QueueName=f"{name}-input",
        Attributes={"VisibilityTimeout": str(lease_s), "RedrivePolicy": redrive, "ReceiveMessageWaitTimeSeconds": "0"},
    )["QueueUrl"]
    out = sqs.create_queue(QueueName=f"{name}-output")["QueueUrl"]
    return {"input": inp, "output": out, "dead": dead}
