"""The local fleet's moto server: SQS loses no message and revives none when sends and deletes land at once.

The server module itself (`python -m spotstack.runtime.local.motoserver`) is what every local fleet test starts."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws

from spotstack.runtime.local.motoserver import patch


@contextmanager
def switching_often() -> Iterator[None]:
    # Thread switches every microsecond: moto's unpatched delete loses an update in almost every round.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def delete(queue: Any, handles: list[str]) -> None:
    for h in handles:
        queue.delete_message(h)
    queue.delete_message(handles[0])  # again: a retried DeleteMessage succeeds


def send(queue: Any, n: int) -> None:
    from moto.sqs.models import Message

    for _ in range(n):
        queue.add_message(Message(str(uuid.uuid4()), "new"))


def test_deletes_beside_sends_keep_every_other_message() -> None:
    patch()
    from moto.sqs.models import Message, sqs_backends

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
        for rnd in range(3):
            url = sqs.create_queue(QueueName=f"q{rnd}")["QueueUrl"]
            queue = sqs_backends["123456789012"]["us-east-1"].queues[f"q{rnd}"]
            received = [Message(str(uuid.uuid4()), str(i)) for i in range(200)]
            for m in received:  # sent and received (in flight), as a worker holds its tasks
                queue.add_message(m)
                m.mark_received(visibility_timeout=300)
            handles = [str(m.receipt_handle) for m in received]
            threads = [threading.Thread(target=delete, args=(queue, handles[k::4])) for k in range(4)]
            threads += [threading.Thread(target=send, args=(queue, 50)) for _ in range(4)]
            with switching_often():
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            # The 200 received are gone, the 200 sent meanwhile are all there.
            assert [m.body for m in queue._messages] == ["new"] * 200, rnd
            a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
            assert a["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"
