"""What a user's side (`spotstack job`) does with a fleet's job queues, one adaptor per queue service: put a task on
the input queue, say how deep a queue is, and where results are kept. The caller finds the queues (their names come
from `components.node.job_queue_name`, as the components declare them) and the credentials; these make the calls.
"""

from __future__ import annotations

from typing import Any, Protocol

ROLES = ("input", "output", "dead")


class JobClient(Protocol):
    results_url: str
    """The result store's folder (`s3://`, `gs://`, `oss://`)."""

    def send(self, body: str) -> None:
        """Put one task on the input queue."""

    def depth(self, role: str) -> tuple[int, int] | None:
        """(waiting, in flight) of the `input`, `output` or `dead` queue; None where the service does not say."""


class QueueMissing(LookupError):
    pass


class SqsJobs:
    def __init__(self, sqs: Any, urls: dict[str, str], results_url: str) -> None:
        self.sqs, self.urls, self.results_url = sqs, urls, results_url

    @classmethod
    def by_name(cls, sqs: Any, names: dict[str, str], results_url: str) -> SqsJobs:
        """The queues' URLs from their names; `QueueMissing` names the first that is not there."""
        urls = {}
        for role, name in names.items():
            try:
                urls[role] = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except sqs.exceptions.QueueDoesNotExist:
                raise QueueMissing(name) from None
        return cls(sqs, urls, results_url)

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.urls["input"], MessageBody=body)

    def depth(self, role: str) -> tuple[int, int] | None:
        from spotstack.runtime.jobs.sqs import depth

        d = depth(self.sqs, self.urls[role])
        return d["visible"] + d["delayed"], d["in_flight"]  # a delayed give-back is waiting too


class PubSubJobs:
    def __init__(self, api: Any, topics: dict[str, str], results_url: str) -> None:
        self.api, self.topics, self.results_url = api, topics, results_url

    def send(self, body: str) -> None:
        self.api.publish(self.topics["input"], body, {})

    def depth(self, role: str) -> tuple[int, int] | None:
        return None  # Pub/Sub says a subscription's backlog through Cloud Monitoring only


class MnsJobs:
    def __init__(self, api: Any, paths: dict[str, str], results_url: str) -> None:
        self.api, self.paths, self.results_url = api, paths, results_url

    def send(self, body: str) -> None:
        from spotstack.runtime.jobs.mns import send

        send(self.api, self.paths["input"], body)

    def depth(self, role: str) -> tuple[int, int] | None:
        from spotstack.runtime.jobs.mns import depth

        return depth(self.api, self.paths[role])
