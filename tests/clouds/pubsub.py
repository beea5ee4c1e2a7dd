"""A loopback Pub/Sub REST server for the jobs tests: topics, pull subscriptions with ack deadlines, delivery
attempts and a dead-letter policy, as the documented API behaves. Requests must carry the node's token; an
expired or unknown ack id is refused (400), as with exactly-once delivery; unknown resources answer 404."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "ya29.emulated-node-token"


@dataclass
class Message:
    id: str
    data: str
    attributes: dict[str, str]
    attempts: int = 0
    visible_at: float = 0.0
    ack_id: str = ""


@dataclass
class Subscription:
    topic: str
    ack_deadline_s: int = 10
    dead_letter_topic: str | None = None
    max_attempts: int = 5
    messages: list[Message] = field(default_factory=list)


class PubSubFake:
    def __init__(self) -> None:
        self.topics: dict[str, list[str]] = {}
        """Topic -> its subscriptions."""
        self.subs: dict[str, Subscription] = {}
        self._ids = itertools.count(1)
        self.calls: list[str] = []

    def topic(self, name: str) -> str:
        self.topics.setdefault(name, [])
        return name

    def subscription(self, name: str, topic: str, **kw: Any) -> str:
        self.subs[name] = Subscription(topic, **kw)
        self.topics.setdefault(topic, []).append(name)
        return name

    def _publish(self, topic: str, data: str, attributes: dict[str, str]) -> str:
        mid = str(next(self._ids))
        for s in self.topics[topic]:
            self.subs[s].messages.append(Message(mid, data, dict(attributes)))
        return mid

    def bodies(self, sub: str) -> list[tuple[str, dict[str, str]]]:
        return [(base64.b64decode(m.data).decode(), m.attributes) for m in self.subs[sub].messages]

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        resource, _, verb = request.match_info["rest"].rpartition(":")
        body = await request.json()
        self.calls.append(verb)
        now = time.time()
        if verb == "publish":
            if resource not in self.topics:
                return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
            ids = [self._publish(resource, m["data"], m.get("attributes", {})) for m in body["messages"]]
            return web.json_response({"messageIds": ids})
        sub = self.subs.get(resource)
        if sub is None:
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        if verb == "pull":
            out = []
            for m in list(sub.messages):
                if len(out) >= int(body.get("maxMessages", 1)) or m.visible_at > now:
                    continue
                if sub.dead_letter_topic and m.attempts >= sub.max_attempts:
                    sub.messages.remove(m)  # forwarded by the service, as its dead-letter policy says
                    self._publish(sub.dead_letter_topic, m.data, m.attributes)
                    continue
                m.attempts += 1
                m.ack_id = f"ack-{m.id}-{m.attempts}"
                m.visible_at = now + sub.ack_deadline_s
                msg = {"data": m.data, "attributes": m.attributes, "messageId": m.id}
                out.append({"ackId": m.ack_id, "message": msg, "deliveryAttempt": m.attempts})
            if not out:
                await asyncio.sleep(0.2)  # the service holds an empty pull open a while
            return web.json_response({"receivedMessages": out} if out else {})
        acks = set(body.get("ackIds", []))
        live = {m.ack_id: m for m in sub.messages if m.ack_id and m.visible_at > now}
        if not acks <= set(live):
            return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, status=400)
        if verb == "acknowledge":
            sub.messages = [m for m in sub.messages if m.ack_id not in acks]
        elif verb == "modifyAckDeadline":
            seconds = int(body["ackDeadlineSeconds"])
            if not 0 <= seconds <= 600:
                return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, status=400)
            for a in acks:
                live[a].visible_at = now + seconds
        else:
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        return web.json_response({})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/{rest:.+}", self.handle)
        return app
