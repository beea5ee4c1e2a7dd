"""Serving an aiohttp app on a host/port (0 = any free port) and learning which port it got."""

from __future__ import annotations

import socket

from aiohttp import web


async def serve(app: web.Application, host: str, port: int, shutdown_timeout: float = 2.0) -> tuple[web.AppRunner, int]:
    """Start `app`; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for sock in getattr(site._server, "sockets", None) or ():
        if isinstance(sock, socket.socket) or hasattr(sock, "getsockname"):
            bound = int(sock.getsockname()[1])
            break
    return runner, bound


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for programs (HAProxy) that cannot be told to pick one themselves."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
