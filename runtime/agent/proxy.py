"""An optional reverse proxy in front of the workload that counts requests in flight.

The drain must know when the node's last request has finished. A proxy in the request path
knows exactly, for any workload, at the cost of one loopback hop (benchmarks/proxy_overhead.py
measures it); a workload that exports an in-flight gauge can skip it (`inflight.metrics_url`).
Responses are streamed chunk by chunk, so token streaming passes through unbuffered.
"""

from __future__ import annotations

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


WHOLE_BODY_MAX = 1 << 20
"""Answers up to this size (with a Content-Length) are read whole and sent in one piece; larger ones stream."""


class CountingProxy:
    name = "proxy"

    def __init__(self, upstream: str, host: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.host, self.port = host, port
        self.inflight = 0
        self.served = 0
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
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.inflight += 1
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
            body = await request.read() if request.body_exists else None
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as up:
                if up.content_length is not None and up.content_length <= WHOLE_BODY_MAX:
                    # A small answer (an inference result) goes out in one write, headers and body together:
                    # a node killed mid-answer then leaves no half-sent response behind for the client.
                    small = web.Response(status=up.status, reason=up.reason, body=await up.read())
                    small.headers.extend((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
                    return small
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in HOP:
                        resp.headers.add(k, v)
                if up.content_length is not None:
                    resp.content_length = up.content_length
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"upstream: {exc.__class__.__name__}")
        finally:
            self.inflight -= 1
            self.served += 1
