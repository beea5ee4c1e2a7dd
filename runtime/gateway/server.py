"""`spotstack gateway`: an OpenAI-compatible router in front of a fleet's replicas that carries streams through
preemptions.

Each request goes to the READY replica with the least generation left (route.py). One that fails before its first
byte is retried on another. A stream whose replica dies mid-answer (reset, cut, a 5xx or an error event, no event
for `stall_s`), or whose node is due to go before the stream would end (its agent's /ready says when), continues
on another replica from the last token sent (splice.py): the client sees one response. Non-streaming requests are
streamed from the replicas and answered whole, so they continue the same way.

Back-pressure: what a client has not read yet is buffered up to `client_buffer_bytes`; a client slower than that
is cut and its replica's request ends with it, so a slow reader never holds a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spotstack.runtime.gateway.keys import KeyFile, Keys, KeysNotLoaded, key_id
from spotstack.runtime.gateway.metrics import Metrics
from spotstack.runtime.gateway.replicas import Pool
from spotstack.runtime.gateway.route import Leaving, ReplicaView, migrate_now, migrate_one_more, pick
from spotstack.runtime.gateway.sink import ClientSink
from spotstack.runtime.gateway.splice import Form, Kind, NotContinuable, Splice
from spotstack.runtime.gateway.sse import events
from spotstack.runtime.net import read_capped, serve

log = logging.getLogger("spotstack.gateway")

PATHS: dict[Kind, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 0
    form: Form = "token_ids"
    """How a continuation carries the tokens already sent: as token ids (vLLM's `return_token_ids`) or as text."""
    wait_s: float = 30.0
    """How long a request waits for a READY replica before a 503."""
    max_attempts: int = 8
    connect_s: float = 5.0
    stall_s: float = 30.0
    """No event from a replica for this long: it is treated as dead and the stream continues elsewhere."""
    client_buffer_bytes: int = 1 << 20
    migrate_margin_s: float = 5.0
    migrate_at_once: int = 2
    """Streams leaving one replica at a time (route.migrate_one_more); all of them within `migrate_margin_s` of
    its node's end."""
    tokens_per_s: float = 30.0
    """A replica's generation rate until a stream has measured its own (for the early migration)."""
    max_body_bytes: int = 8 << 20
    drain_s: float = 600.0


class Attempt:
    """Why an attempt on one replica ended."""

    DONE = "done"
    REFUSED = "refused"  # failed before the first byte: another replica takes it, no token lost
    CUT = "cut"  # died mid-stream
    MIGRATE = "migrate"  # its node goes before the stream would end
    CLIENT = "client"  # the client went away or read too slowly


class Gateway:
    def __init__(self, cfg: GatewayConfig, pool: Pool, keys: Keys | KeyFile | None = None) -> None:
        self.cfg, self.pool, self.keys = cfg, pool, keys
        self.metrics = Metrics()
        self.draining = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = cfg.port

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            auto_decompress=False,
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        await self.pool.start()
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        app.router.add_post(PATHS["completions"], self.completions)
        app.router.add_post(PATHS["chat"], self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/status", self.status)
        self._runner, self.port = await serve(app, self.cfg.host, self.cfg.port, shutdown_timeout=1.0)
        log.info("gateway on %s, %d replica(s)", self.url, len(self.pool.replicas))

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop taking requests (/ready answers 503) and wait for those in flight; True when all finished."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), self.cfg.drain_s if timeout is None else timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.pool.stop()
        if self._session is not None:
            await self._session.close()

    # -- small endpoints ------------------------------------------------------------------------------------
    async def ready(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="draining\n")
        if not any(r.ready for r in self.pool.views()):
            return web.Response(status=503, text="no READY replica\n")
        return web.Response(text="ready\n")

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, request: web.Request) -> web.Response:
        m = self.metrics
        return web.json_response(
            {
                "draining": self.draining,
                "inflight": self.inflight,
                "replicas": self.pool.summary(),
                "continued": m.continued_by,
                "continuation_gaps_s": [round(g, 4) for g in m.gap_samples],
                "ttfts_s": [round(t, 4) for t in m.ttft_samples],
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        return web.json_response({"object": "list", "data": [{"id": "spotstack", "object": "model"}]})

    # -- requests -------------------------------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    def _auth(self, request: web.Request) -> web.Response | None:
        if self.keys is None:
            return None
        try:
            digest, why = self.keys.check(request.headers.get("Authorization"))
        except KeysNotLoaded as exc:
            self.metrics.requests.labels("keys_not_loaded").inc()
            return _error(503, str(exc), "unavailable")
        if digest is None:
            self.metrics.requests.labels("unauthorized").inc()
            return _error(401, why, "invalid_api_key")
        if not self.keys.allow(digest):
            self.metrics.requests.labels("rate_limited").inc()
            log.info("rate limited key %s", key_id(digest.hex()))
            return _error(429, "this API key's request rate is over its limit", "rate_limit_exceeded")
        return None

    async def _handle(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        if self.draining:
            return _error(503, "the gateway is draining", "unavailable")
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            body = orjson.loads(await read_capped(request, self.cfg.max_body_bytes))
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            splice = Splice(kind, body, self.cfg.form)
        except (ValueError, NotContinuable) as exc:
            return _error(400, str(exc), "invalid_request_error")
        self.inflight += 1
        self._idle.clear()
        self.metrics.inflight.inc()
        try:
            return await self._serve(request, splice)
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()
            if self.inflight == 0:
                self._idle.set()

    async def _choose(self, splice: Splice, avoid: str | None) -> ReplicaView | None:
        """The replica for the next attempt, waiting up to `wait_s` for one to be READY."""
        deadline = time.monotonic() + self.cfg.wait_s
        need = splice.tokens_left / self.cfg.tokens_per_s
        while True:
            exclude = frozenset({avoid}) if avoid else frozenset()
            r = pick(self.pool.views(), time.time(), exclude, need) or pick(self.pool.views(), time.time(), exclude)
            if r is None and avoid is not None:
                r = pick(self.pool.views(), time.time())  # only the one we left: better than none
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await self.pool.changed(min(left, 1.0))

    async def _serve(self, request: web.Request, splice: Splice) -> web.StreamResponse:
        moving: list[Leaving] = []
        try:
            return await self._serve_attempts(request, splice, moving)
        finally:
            for m in moving:  # a migration whose continuation never started (no replica, the client gone)
                m.release()

    async def _serve_attempts(self, request: web.Request, splice: Splice, moving: list[Leaving]) -> web.StreamResponse:
        stream = bool(splice.body.get("stream"))
        model = str(splice.body.get("model") or "")
        sink: ClientSink | None = None
        last: str | None = None
        failed_at: float | None = None
        moved: Leaving | None = None
        why = "no READY replica"
        while splice.attempts < self.cfg.max_attempts:
            replica = await self._choose(splice, last)
            if replica is None:
                break
            body = splice.next_request()
            reserved = splice.tokens_left
            replica.requests += 1
            replica.tokens += reserved
            before = splice.sent
            try:
                outcome, detail, sink = await self._attempt(
                    request, replica, body, splice, stream, sink, failed_at, moved
                )
            finally:
                replica.requests -= 1
                replica.tokens -= reserved - min(reserved, splice.sent - before)
            if outcome == Attempt.MIGRATE:
                # Counted by _attempt; released at the continuation's first token, or by _serve when none comes.
                moved = Leaving(replica)
                moving.append(moved)
            if outcome == Attempt.DONE:
                return await self._finish(splice, sink, model)
            if outcome == Attempt.CLIENT:
                self.metrics.requests.labels("client_gone").inc()
                return sink.resp if sink is not None else web.Response(status=499)
            if isinstance(detail, web.Response):  # the replica refused the request itself (4xx): the client's
                self.metrics.requests.labels("rejected").inc()
                if sink is None:
                    return detail
                break
            why = str(detail)
            last = replica.url
            if outcome == Attempt.REFUSED:
                self.pool.mark_failed(replica.url)
            if splice.sent > 0 or outcome != Attempt.REFUSED:
                self.metrics.continued.labels(outcome).inc()
                self.metrics.continued_by[outcome] = self.metrics.continued_by.get(outcome, 0) + 1
                failed_at = time.monotonic()
            log.info("%s on %s: %s; %s", splice.id, replica.url, why, "continuing" if splice.sent else "retrying")
        # Out of replicas or attempts.
        self.metrics.requests.labels("failed").inc()
        if sink is None:
            return _error(503, f"no replica could serve the request: {why}", "unavailable")
        sink.cut(why)  # the client sees a cut stream, never a clean-looking end
        return sink.resp

    async def _attempt(
        self,
        request: web.Request,
        replica: ReplicaView,
        body: dict[str, Any],
        splice: Splice,
        stream: bool,
        sink: ClientSink | None,
        failed_at: float | None,
        moved: Leaving | None = None,
    ) -> tuple[str, object, ClientSink | None]:
        """One upstream request. `moved`: the replica this stream is migrating off (its `moving` count is released
        at this attempt's first token)."""
        assert self._session is not None
        cfg = self.cfg
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_s, sock_read=cfg.stall_s)
        url = replica.url + PATHS[splice.kind]
        started = time.monotonic()
        got = 0
        last_tok = started
        itl = self.metrics.itl.labels(replica.url)
        try:
            async with self._session.post(url, json=body, timeout=timeout) as up:
                if up.status != 200:
                    text = (await read_capped(up, 64 << 10)).decode(errors="replace")
                    if 400 <= up.status < 500 and up.status not in (408, 429):
                        return (
                            Attempt.REFUSED,
                            web.Response(status=up.status, text=text, content_type="application/json"),
                            sink,
                        )
                    return Attempt.REFUSED, f"HTTP {up.status} {text.strip()[:200]}", sink
                async for data in events(up):
                    if data == b"[DONE]":
                        return Attempt.DONE, "", sink
                    doc = orjson.loads(data)
                    if "error" in doc:
                        return (
                            (Attempt.CUT if got or splice.sent else Attempt.REFUSED),
                            f"error event: {doc['error']}",
                            sink,
                        )
                    out = splice.rewrite(doc)
                    if out is None:
                        continue
                    now = time.monotonic()
                    if splice.last_tokens:  # a token (not the chat role's opening event): the latencies
                        if got == 0:
                            if moved is not None:
                                moved.release()
                            self.metrics.ttft.labels(replica.url).observe(now - started)
                            if failed_at is not None:
                                self.metrics.gap.observe(now - failed_at)
                                self.metrics.gap_samples.append(now - failed_at)
                            elif splice.attempts == 1:
                                self.metrics.ttft_samples.append(now - started)
                        else:
                            itl.observe(now - last_tok)
                        got += 1
                        last_tok = now
                    replica.tokens = max(0, replica.tokens - splice.last_tokens)
                    if stream:
                        if sink is None:
                            sink = await self._open(request)
                        if not sink.put(b"data: " + orjson.dumps(out) + b"\n\n"):
                            return Attempt.CLIENT, sink.broken, sink
                    if splice.last_tokens and got % 8 == 0 and self._should_migrate(replica, splice, started, got):
                        replica.moving += 1
                        return Attempt.MIGRATE, f"its node goes in {replica.leaving_at - time.time():.0f}s", sink  # type: ignore[operator]
                return (Attempt.CUT if got or splice.sent else Attempt.REFUSED), "the stream ended without [DONE]", sink
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, orjson.JSONDecodeError) as exc:
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return (Attempt.CUT if got or splice.sent else Attempt.REFUSED), what, sink

    def _should_migrate(self, replica: ReplicaView, splice: Splice, started: float, got: int) -> bool:
        if replica.leaving_at is None:
            return False
        elapsed = time.monotonic() - started
        rate = got / elapsed if elapsed > 1.0 else self.cfg.tokens_per_s
        now = time.time()
        if not migrate_now(replica.leaving_at, now, splice.tokens_left, rate, self.cfg.migrate_margin_s):
            return False
        if not migrate_one_more(
            replica.moving, replica.leaving_at, now, self.cfg.migrate_at_once, self.cfg.migrate_margin_s
        ):
            return False
        # Only when another replica can take it now; otherwise stay until the node goes.
        return pick(self.pool.views(), now, frozenset({replica.url}), splice.tokens_left / rate) is not None

    async def _open(self, request: web.Request) -> ClientSink:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        return ClientSink(resp, request, self.cfg.client_buffer_bytes)

    async def _finish(self, splice: Splice, sink: ClientSink | None, model: str) -> web.StreamResponse:
        if not splice.body.get("stream"):
            self.metrics.requests.labels("ok").inc()
            return web.json_response(splice.whole(model))
        if sink is None:  # a stream that carried nothing: still one well-formed response
            raise web.HTTPBadGateway(text="the replica answered with no tokens")
        if splice.client_wants_usage:
            sink.put(b"data: " + orjson.dumps(splice.usage_event(model)) + b"\n\n")
        sink.put(b"data: [DONE]\n\n")
        if await sink.close(self.cfg.stall_s):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await sink.resp.write_eof()
            self.metrics.requests.labels("ok").inc()
        else:
            self.metrics.requests.labels("client_gone").inc()
        return sink.resp


def _error(status: int, message: str, typ: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": typ, "code": status}}, status=status)
