"""A loopback Simple Message Queue (MNS) endpoint that follows the queue API's documented behaviour (2015-06-06):
every request signed (`MNS AccessKeyId:Signature`, HMAC-SHA1 over verb, MD5, type, date, x-mns headers and the
resource; 403 SignatureDoesNotMatch otherwise) with the STS token in `security-token`; BatchReceiveMessage
long-polls and answers 404 MessageNotExist when empty; a received message is invisible for the queue's
VisibilityTimeout; ChangeMessageVisibility answers a new receipt handle and the old one stops working
(400 ReceiptHandleError), as does a handle whose visibility has run out; SendMessage honours DelaySeconds;
the dead-letter policy moves a message received MaxReceiveCount times to its dead-letter queue."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import itertools
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from aiohttp import web

NS = "{http://mns.aliyuncs.com/doc/v1/}"
XMLNS = 'xmlns="http://mns.aliyuncs.com/doc/v1/"'
HEAD = "<?xml version='1.0' encoding='UTF-8'?>"


@dataclass
class Message:
    id: str
    body: str
    visible_at: float
    dequeues: int = 0
    handle: str | None = None


@dataclass
class Queue:
    visibility_s: float = 30.0
    dead_letter: str | None = None
    max_receives: int = 0
    messages: list[Message] = field(default_factory=list)


class MnsFake:
    def __init__(self, key_id: str, secret: str, token: str) -> None:
        self.key_id, self.secret, self.token = key_id, secret, token
        self.queues: dict[str, Queue] = {}
        self._ids = itertools.count(1)
        self.calls: list[str] = []
        self.refused = 0

    def queue(self, name: str, **kw: object) -> str:
        self.queues[name] = Queue(**kw)  # type: ignore[arg-type]
        return name

    def bodies(self, name: str) -> list[str]:
        return [m.body for m in self.queues[name].messages]

    def _error(self, status: int, code: str, message: str = "") -> web.Response:
        xml = f"{HEAD}<Error {XMLNS}><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        return web.Response(status=status, text=xml, content_type="text/xml")

    def _signed(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(f"MNS {self.key_id}:") or request.headers.get("security-token", "") != self.token:
            return False
        if request.headers.get("x-mns-version") != "2015-06-06":
            return False
        date = request.headers.get("Date", "")
        try:
            if abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) > 900:
                return False
        except (TypeError, ValueError):
            return False
        mns = "".join(
            f"{k}:{v}\n"
            for k, v in sorted((k.lower(), v) for k, v in request.headers.items() if k.lower().startswith("x-mns-"))
        )
        resource = request.raw_path
        text = (
            f"{request.method}\n{request.headers.get('Content-MD5', '')}\n{request.headers.get('Content-Type', '')}\n"
            f"{date}\n{mns}{resource}"
        )
        want = base64.b64encode(hmac.new(self.secret.encode(), text.encode(), hashlib.sha1).digest()).decode()
        return hmac.compare_digest(auth.split(":", 1)[1], want)

    async def handle(self, request: web.Request) -> web.Response:
        if not self._signed(request):
            self.refused += 1
            return self._error(403, "SignatureDoesNotMatch", "the signature does not match")
        q = self.queues.get(request.match_info["queue"])
        if q is None:
            return self._error(404, "QueueNotExist", "the queue does not exist")
        name = request.match_info["queue"]
        if request.method == "POST":
            self.calls.append("SendMessage")
            root = ET.fromstring(await request.read())
            body = root.findtext(NS + "MessageBody") or ""
            delay = int(root.findtext(NS + "DelaySeconds") or "0")
            mid = f"{next(self._ids):032X}"
            q.messages.append(Message(mid, body, time.time() + delay))
            md5 = hashlib.md5(body.encode()).hexdigest().upper()
            xml = f"{HEAD}<Message {XMLNS}><MessageId>{mid}</MessageId><MessageBodyMD5>{md5}</MessageBodyMD5></Message>"
            return web.Response(status=201, text=xml, content_type="text/xml")
        if request.method == "GET":
            self.calls.append("BatchReceiveMessage")
            n = int(request.query.get("numOfMessages", "1"))
            deadline = time.time() + min(30, int(request.query.get("waitseconds", "0")))
            while True:
                got = self._receive(name, q, n)
                if got or time.time() >= deadline:
                    break
                await asyncio.sleep(0.05)
            if not got:
                return self._error(404, "MessageNotExist", "no message in the queue")
            items = "".join(
                f"<Message><MessageId>{m.id}</MessageId><ReceiptHandle>{m.handle}</ReceiptHandle>"
                f"<MessageBody>{escape(m.body)}</MessageBody><DequeueCount>{m.dequeues}</DequeueCount>"
                f"<Priority>8</Priority></Message>"
                for m in got
            )
            return web.Response(
                text=f"<?xml version='1.0' encoding='UTF-8'?><Messages {XMLNS}>{items}</Messages>",
                content_type="text/xml",
            )
        now = time.time()
        handle = request.query.get("receiptHandle") or request.query.get("ReceiptHandle")
        live = next((m for m in q.messages if m.handle == handle and m.visible_at > now), None)
        if live is None:
            return self._error(400, "ReceiptHandleError", "the receipt handle is invalid or expired")
        if request.method == "PUT":
            self.calls.append("ChangeMessageVisibility")
            live.visible_at = now + int(request.query["visibilityTimeout"])
            live.handle = secrets.token_hex(16)
            handle = f"<ReceiptHandle>{live.handle}</ReceiptHandle>"
            xml = f"{HEAD}<ChangeVisibility {XMLNS}>{handle}</ChangeVisibility>"
            return web.Response(text=xml, content_type="text/xml")
        if request.method == "DELETE":
            self.calls.append("DeleteMessage")
            q.messages.remove(live)
            return web.Response(status=204)
        return self._error(405, "MethodNotAllowed")

    async def attributes(self, request: web.Request) -> web.Response:
        """GetQueueAttributes: ActiveMessages (visible), InactiveMessages (received, hidden), DelayMessages."""
        if not self._signed(request):
            self.refused += 1
            return self._error(403, "SignatureDoesNotMatch", "the signature does not match")
        q = self.queues.get(request.match_info["queue"])
        if q is None:
            return self._error(404, "QueueNotExist", "the queue does not exist")
        now = time.time()
        active = sum(1 for m in q.messages if m.visible_at <= now)
        inactive = sum(1 for m in q.messages if m.visible_at > now and m.handle)
        delayed = sum(1 for m in q.messages if m.visible_at > now and not m.handle)
        counts = f"<ActiveMessages>{active}</ActiveMessages><InactiveMessages>{inactive}</InactiveMessages>"
        counts += f"<DelayMessages>{delayed}</DelayMessages>"
        return web.Response(text=f"{HEAD}<Queue {XMLNS}>{counts}</Queue>", content_type="text/xml")

    def _receive(self, name: str, q: Queue, n: int) -> list[Message]:
        now, out = time.time(), []
        for m in list(q.messages):
            if len(out) >= n or m.visible_at > now:
                continue
            if q.dead_letter and q.max_receives and m.dequeues >= q.max_receives:
                q.messages.remove(m)  # the dead-letter policy: received MaxReceiveCount times already
                self.queues[q.dead_letter].messages.append(Message(m.id, m.body, now))
                continue
            m.dequeues += 1
            m.handle = secrets.token_hex(16)
            m.visible_at = now + q.visibility_s
            out.append(m)
        return out

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/queues/{queue}/messages", self.handle)
        app.router.add_get("/queues/{queue}", self.attributes)
        return app
