"""Google Cloud Pub/Sub as the task queues, through its REST API with the node's service-account token (the
metadata server's): pull from the input subscription, `modifyAckDeadline` as the lease, `acknowledge` as the
delete, publish for results, give-backs and dead letters. Standard library only (no client library to install).

Give-back publishes the task again with its counts and acknowledges the delivered copy, as on SQS: visible to
every worker at once, and the subscription's delivery count (its dead-letter policy) starts again.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from spotstack.runtime.jobs.queue import Delivery
from spotstack.runtime.jobs.task import Counts, Task

API = "https://pubsub.googleapis.com"
MAX_LEASE_S = 600
"""Pub/Sub's longest ack deadline."""
TIMEOUT_S = 30.0


class PubSubApi:
    """Authenticated calls: `POST {api}/v1/{resource}:{verb}` with a token the metadata server refreshes."""

    def __init__(
        self, metadata_url: str, api: str | None = None, token_source: Callable[[], str] | None = None
    ) -> None:
        """`token_source`: where the bearer token comes from off a node (`spotstack job` on a laptop)."""
        self.metadata_url, self.api = metadata_url.rstrip("/"), (api or API).rstrip("/")
        self._token: tuple[str, float] = ("", 0.0)
        self._token_source = token_source

    def token(self) -> str:
        if self._token_source is not None:
            return self._token_source()
        tok, until = self._token
        if time.time() < until - 60:
            return tok
        req = urllib.request.Request(
            f"{self.metadata_url}/computeMetadata/v1/instance/service-accounts/default/token",
            headers={"Metadata-Flavor": "Google"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            doc = json.loads(r.read())
        self._token = (str(doc["access_token"]), time.time() + float(doc.get("expires_in", 300)))
        return self._token[0]

    def call(self, resource: str, verb: str, body: dict[str, Any], timeout: float = TIMEOUT_S) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.api}/v1/{resource}:{verb}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = r.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"pubsub {verb} {resource}: HTTP {exc.code} {exc.read(300)!r}") from None
        return dict(json.loads(data)) if data.strip() else {}

    def publish(self, topic: str, body: str, attributes: dict[str, str]) -> None:
        msg = {"data": base64.b64encode(body.encode()).decode(), "attributes": attributes}
        self.call(topic, "publish", {"messages": [msg]})


def _attrs(counts: Counts) -> dict[str, str]:
    return {"spotstack.failures": str(counts.failures), "spotstack.preemptions": str(counts.preemptions)}


def _counts(attrs: dict[str, str]) -> Counts:
    def num(key: str) -> int:
        try:
            return max(0, int(attrs.get(key, "0")))
        except ValueError:
            return 0

    return Counts(failures=num("spotstack.failures"), preemptions=num("spotstack.preemptions"))


class PubSubTasks:
    name = "pubsub"

    def __init__(self, subscription: str, topic: str, dead_topic: str | None, api: PubSubApi) -> None:
        self.subscription, self.topic, self.dead, self.api = subscription, topic, dead_topic, api

    def receive(self, max_n: int, wait_s: float, lease_s: float) -> list[Delivery]:
        got = self.api.call(self.subscription, "pull", {"maxMessages": max(1, max_n)}, timeout=max(5.0, wait_s + 5))
        out = []
        for rm in got.get("receivedMessages", []):
            msg = rm.get("message", {})
            body = base64.b64decode(msg.get("data", "")).decode(errors="replace")
            try:
                task: Task | None = Task.decode(body)
            except ValueError:
                task = None
            counts = _counts(msg.get("attributes") or {})
            out.append(Delivery(task, counts, rm["ackId"], body, int(rm.get("deliveryAttempt", 1))))
        if out:
            self.api.call(
                self.subscription,
                "modifyAckDeadline",
                {"ackIds": [d.handle for d in out], "ackDeadlineSeconds": int(min(MAX_LEASE_S, lease_s))},
            )
        return out

    def extend(self, d: Delivery, lease_s: float) -> None:
        self.api.call(
            self.subscription,
            "modifyAckDeadline",
            {"ackIds": [d.handle], "ackDeadlineSeconds": int(min(MAX_LEASE_S, lease_s))},
        )

    def give_back(self, d: Delivery, counts: Counts, delay_s: float = 0.0) -> None:
        # Pub/Sub has no per-message delay: a retry's backoff is the subscription's retry policy.
        try:
            self.api.publish(self.topic, d.body, _attrs(counts))
        except Exception:  # the delivered copy still carries the task: nack it instead (deadline 0)
            self.api.call(self.subscription, "modifyAckDeadline", {"ackIds": [d.handle], "ackDeadlineSeconds": 0})
            return
        self.delete(d)

    def delete(self, d: Delivery) -> None:
        self.api.call(self.subscription, "acknowledge", {"ackIds": [d.handle]})

    def dead_letter(self, d: Delivery, counts: Counts, reason: str) -> None:
        if self.dead is not None:
            self.api.publish(self.dead, d.body, {**_attrs(counts), "spotstack.reason": reason[:1000] or "-"})
        self.delete(d)


class PubSubResults:
    def __init__(self, topic: str, api: PubSubApi) -> None:
        self.topic, self.api = topic, api

    def publish(self, task_id: str, message: str) -> None:
        self.api.publish(self.topic, message, {"spotstack.task": task_id})
