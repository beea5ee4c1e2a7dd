"""Alibaba Cloud's Simple Message Queue (formerly MNS) as the worker's task and result queues, standard library only.

The queue REST API (version 2015-06-06), signed as its "Sign requests" page says: `Authorization: MNS
AccessKeyId:base64(hmac-sha1(secret, VERB\\nContent-MD5\\nContent-Type\\nDate\\nx-mns-headers\\nresource)))`, with
the node's RAM role STS credentials from the metadata server and their token in `security-token`.

- receive = BatchReceiveMessage (`GET /queues/Q/messages?numOfMessages=N&waitseconds=W`; 404 MessageNotExist
  is an empty queue). The lease is the queue's VisibilityTimeout (the components set it to `jobs.lease`) and
  heartbeats change it per message.
- extend = ChangeMessageVisibility (`PUT ...?receiptHandle=R&visibilityTimeout=S`), which answers a *new*
  receipt handle: the delivery keeps the latest, since the old one no longer deletes.
- give back = SendMessage of the same task (with its counts) + DeleteMessage, as on SQS: visible to every worker
  at once and the queue's own dequeue count restarts. MNS messages have no attributes, so counts (and a dead
  letter's reason) travel in a small JSON envelope around the task; a plain task (from `spotstack job` or any
  producer) has counts 0.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from spotstack.runtime.jobs.queue import Delivery
from spotstack.runtime.jobs.task import Counts, Task

log = logging.getLogger("spotstack.jobs")

VERSION = "2015-06-06"
NS = "{http://mns.aliyuncs.com/doc/v1/}"
MAX_BATCH = 16
MAX_WAIT_S = 30
MAX_LEASE_S = 43200
TIMEOUT_S = 45.0
ENVELOPE = "spotstack.counts"
CREDENTIALS_TTL_S = 600.0
"""STS credentials from the metadata server are valid for hours; they are read again this often."""


class MnsError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"MNS HTTP {status} {code}: {message}")
        self.status, self.code = status, code


def signature(secret: str, verb: str, md5: str, content_type: str, date: str, headers: dict[str, str], res: str) -> str:
    mns = "".join(
        f"{k}:{v}\n" for k, v in sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-mns-"))
    )
    text = f"{verb}\n{md5}\n{content_type}\n{date}\n{mns}{res}"
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


class MnsApi:
    """Signed calls to one account's queue endpoint (`https://<uid>.mns.<region>-internal.aliyuncs.com`)."""

    def __init__(self, endpoint: str, credentials: Callable[[], dict[str, str]]) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._credentials = credentials
        self._creds: tuple[dict[str, str], float] = ({}, 0.0)
        self._lock = threading.Lock()

    def creds(self) -> dict[str, str]:
        with self._lock:
            creds, at = self._creds
            if not creds or time.monotonic() - at > CREDENTIALS_TTL_S:
                self._creds = (self._credentials(), time.monotonic())
            return self._creds[0]

    def call(self, verb: str, resource: str, body: str | None = None) -> tuple[int, ET.Element | None]:
        """(status, parsed XML or None); MnsError for an error answer."""
        creds = self.creds()
        data = body.encode() if body is not None else b""
        ctype = "text/xml;charset=utf-8"
        md5 = ""
        date = email.utils.formatdate(usegmt=True)
        headers = {"x-mns-version": VERSION}
        auth = signature(creds["AccessKeySecret"], verb, md5, ctype, date, headers, resource)
        headers.update({"Authorization": f"MNS {creds['AccessKeyId']}:{auth}", "Date": date, "Content-Type": ctype})
        if creds.get("SecurityToken"):
            headers["security-token"] = creds["SecurityToken"]
        req = urllib.request.Request(self.endpoint + resource, data=data if body is not None else None, method=verb)
        for k, v in headers.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
                text = r.read()
                return r.status, ET.fromstring(text) if text.strip() else None
        except urllib.error.HTTPError as exc:
            text = exc.read()
            code, message = "", text[:200].decode(errors="replace")
            try:
                root = ET.fromstring(text)
                code = _text(root, "Code")
                message = _text(root, "Message") or message
            except ET.ParseError:
                pass
            raise MnsError(exc.code, code, message) from None


def _text(el: ET.Element, name: str) -> str:
    found = el.find(NS + name)
    if found is None:
        found = el.find(name)
    return (found.text or "") if found is not None else ""


def _message_xml(body: str, delay_s: float = 0.0) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/">'
        f"<MessageBody>{escape(body)}</MessageBody><DelaySeconds>{int(max(0, min(604800, delay_s)))}</DelaySeconds>"
        f"<Priority>8</Priority></Message>"
    )


def wrap(body: str, counts: Counts, reason: str | None = None) -> str:
    """The task with its counts (and a dead letter's reason): MNS messages carry no attributes."""
    doc: dict[str, Any] = {ENVELOPE: {"failures": counts.failures, "preemptions": counts.preemptions}, "task": body}
    if reason is not None:
        doc["spotstack.reason"] = reason[:1000]
    return json.dumps(doc)


def unwrap(text: str) -> tuple[str, Counts]:
    try:
        doc = json.loads(text)
    except ValueError:
        return text, Counts()
    if not isinstance(doc, dict) or ENVELOPE not in doc or not isinstance(doc.get("task"), str):
        return text, Counts()
    c = doc[ENVELOPE] if isinstance(doc[ENVELOPE], dict) else {}

    def num(key: str) -> int:
        try:
            return max(0, int(c.get(key, 0)))
        except (TypeError, ValueError):
            return 0

    return doc["task"], Counts(failures=num("failures"), preemptions=num("preemptions"))


def _resource(url: str) -> tuple[str, str]:
    """A queue URL (`https://<uid>.mns.<region>-internal.aliyuncs.com/queues/<name>`) as (endpoint, path)."""
    u = urllib.parse.urlsplit(url)
    if not u.path.startswith("/queues/") or not u.scheme or not u.netloc:
        raise ValueError(f"not an MNS queue URL: {url!r} (https://<account>.mns.<region>.aliyuncs.com/queues/<name>)")
    return f"{u.scheme}://{u.netloc}", u.path.rstrip("/")


def send(api: MnsApi, queue_path: str, body: str, delay_s: float = 0.0) -> None:
    api.call("POST", f"{queue_path}/messages", _message_xml(body, delay_s))


class MnsTasks:
    name = "mns"
    max_hold_s: float | None = MAX_LEASE_S
    """A message stays hidden at most this long from its receipt, however often its lease is extended."""

    def __init__(self, url: str, dead_letter_url: str | None, api: MnsApi) -> None:
        _, self.path = _resource(url)
        self.dlq = _resource(dead_letter_url)[1] if dead_letter_url else None
        self.api = api

    def receive(self, max_n: int, wait_s: float, lease_s: float) -> list[Delivery]:
        n = max(1, min(MAX_BATCH, max_n))
        q = urllib.parse.urlencode({"numOfMessages": n, "waitseconds": int(max(0, min(MAX_WAIT_S, wait_s)))})
        try:
            _, root = self.api.call("GET", f"{self.path}/messages?{q}")
        except MnsError as exc:
            if exc.status == 404 and exc.code == "MessageNotExist":
                return []
            raise
        out: list[Delivery] = []
        for m in root.findall(NS + "Message") if root is not None else []:
            raw = _text(m, "MessageBody")
            body, counts = unwrap(raw)
            try:
                task: Task | None = Task.decode(body)
            except ValueError:
                task = None
            receives = int(_text(m, "DequeueCount") or "1")
            # Leased for the queue's VisibilityTimeout (the components set it to `jobs.lease`); heartbeats extend it.
            out.append(Delivery(task, counts, _text(m, "ReceiptHandle"), body, receives))
        return out

    def extend(self, d: Delivery, lease_s: float) -> None:
        q = urllib.parse.urlencode(
            {"receiptHandle": d.handle, "visibilityTimeout": int(max(1, min(MAX_LEASE_S, lease_s)))}
        )
        _, root = self.api.call("PUT", f"{self.path}/messages?{q}")
        handle = _text(root, "ReceiptHandle") if root is not None else ""
        if handle:
            d.handle = handle  # the old handle no longer deletes or extends

    def give_back(self, d: Delivery, counts: Counts, delay_s: float = 0.0) -> None:
        try:
            send(self.api, self.path, wrap(d.body, counts), delay_s)
        except (MnsError, OSError) as exc:  # the delivered copy still carries the task: make it visible instead
            log.warning("re-sending task failed (%s); giving the delivered copy back instead", exc)
            self.extend(d, 1)
            return
        self.delete(d)

    def delete(self, d: Delivery) -> None:
        self.api.call("DELETE", f"{self.path}/messages?" + urllib.parse.urlencode({"ReceiptHandle": d.handle}))

    def dead_letter(self, d: Delivery, counts: Counts, reason: str) -> None:
        if self.dlq is None:
            log.error("task dropped after %d failures (no dead-letter queue): %s", counts.failures, reason)
        else:
            send(self.api, self.dlq, wrap(d.body, counts, reason or "-"))
        self.delete(d)


class MnsResults:
    def __init__(self, url: str, api: MnsApi) -> None:
        _, self.path = _resource(url)
        self.api = api

    def publish(self, task_id: str, message: str) -> None:
        send(self.api, self.path, message)


def depth(api: MnsApi, queue_path: str) -> tuple[int, int]:
    """(waiting, in flight): GetQueueAttributes' ActiveMessages and InactiveMessages."""
    _, root = api.call("GET", queue_path)
    if root is None:
        return 0, 0
    return int(_text(root, "ActiveMessages") or 0), int(_text(root, "InactiveMessages") or 0)


def api_for(url: str, credentials: Callable[[], dict[str, str]], endpoint: str | None = None) -> MnsApi:
    """The API of the account a queue URL names (or `endpoint`, an emulator)."""
    return MnsApi(endpoint or _resource(url)[0], credentials)
