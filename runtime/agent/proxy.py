"""An optional reverse proxy in front of the workload that counts requests in flight.

The drain must know when the node's last request has finished. A proxy in the request path
knows exactly, for any workload, at the cost of one loopback hop (benchmarks/proxy_overhead.py
measures it); a workload that exports an in-flight gauge can skip it (`inflight.metrics_url`).
Requests and responses are streamed chunk by chunk, so token streaming passes through unbuffered and a large
upload never sits in the agent's memory (the agent is the process that must drain the node: it must not be the
one the OOM killer takes). A stream the upstream cuts after its headers went out is cut for the client too: the
connection is aborted, never closed with a clean end a client would take for a whole answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from spotstack.runtime.net import serve

# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the message's.
HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


log = logging.getLogger("spotstack.agent.proxy")

MAX_BODY_BYTES = 64 << 20
"""Default cap on a request body (413 beyond it): far above a prompt, and never held in memory whole."""

WHOLE_BODY_MAX = 1 << 20
"""Answers up to this size (with a Content-Length) are read whole and sent in one piece; larger ones stream."""


class BodyTooLarge(Exception):
    pass


class CountingProxy:
    name = "proxy"

    def __init__(self, upstream: str, host: str, port: int, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.upstream = upstream.rstrip("/")
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.inflight = 0
        self.served = 0
        self.cut = 0
        """Answers cut after their headers went out (the upstream failed or went away mid-stream)."""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def count(self) -> int:
        return self.inflight

    async def start(self) -> None:
        # No total timeout: a long generation is legitimate; the drain bounds the wait instead.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
        )
        # Bodies are streamed (never `request.read()`): client_max_size is not what bounds them, `_body` is.
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.content.iter_any():
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise BodyTooLarge()
            yield chunk

    def _too_large(self) -> web.Response:
        return web.Response(
            status=413, text=f"request body over {self.max_body_bytes} bytes (inflight.max_body_bytes)\n"
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._too_large()  # nothing read, nothing sent upstream
        self.inflight += 1
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)  # passed on as is, not re-chunked
            body = self._body(request) if request.body_exists else None
            try:
                up_cm = self._session.request(
                    request.method,
                    self.upstream + request.rel_url.path_qs,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
                up = await up_cm.__aenter__()
            except BodyTooLarge:
                return self._too_large()
            except aiohttp.ClientError as exc:
                if isinstance(exc.__cause__, BodyTooLarge) or isinstance(exc.__context__, BodyTooLarge):
                    return self._too_large()
                return web.Response(status=502, text=f"upstream: {exc.__class__.__name__}\n")
            try:
                return await self._answer(request, up)
            finally:
                await up_cm.__aexit__(None, None, None)
        finally:
            self.inflight -= 1
            self.served += 1

    async def _answer(self, request: web.Request, up: aiohttp.ClientResponse) -> web.StreamResponse:
        if up.content_length is not None and up.content_length <= WHOLE_BODY_MAX:
            # A small answer (an inference result) goes out in one write, headers and body together:
            # a node killed mid-answer then leaves no half-sent response behind for the client.
            try:
                data = await up.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return web.Response(status=502, text=f"upstream: {exc.__class__.__name__}\n")
            small = web.Response(status=up.status, reason=up.reason, body=data)
            small.headers.extend((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
            return small
        resp = web.StreamResponse(status=up.status, reason=up.reason)
        for k, v in up.headers.items():
            if k.lower() not in HOP:
                resp.headers.add(k, v)
        if up.content_length is not None:
            resp.content_length = up.content_length
        await resp.prepare(request)
        try:
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # The status line is gone: the only honest signal left is a connection that ends without the
            # message's end (no terminating chunk, fewer bytes than Content-Length).
            self.cut += 1
            log.warning("upstream failed mid-answer (%s): cut the client's stream", exc.__class__.__name__)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError() from None
        except ConnectionResetError:
            return resp  # the client went away: nothing to tell it
        await resp.write_eof()
        return resp
