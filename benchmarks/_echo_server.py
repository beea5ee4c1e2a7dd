"""A minimal HTTP workload for proxy benchmarks: answers every request with `size` bytes at once."""

from __future__ import annotations

import sys

from aiohttp import web

BODY = b"x" * int(sys.argv[2]) if len(sys.argv) > 2 else b"x" * 1024


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY)


app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
