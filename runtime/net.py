"""Serving an aiohttp app on a host/port (0 = any free port), hardened for an untrusted network.

aiohttp alone holds a connection that never finishes its request headers for as long as the
client likes, accepts connections until the process runs out of descriptors, and logs a malformed
request's raw header line (a bearer token included). `serve` adds what a node's servers need:
- a cap on open connections, so the agent's readiness and drain keep their descriptors; over it
  the stalest idle connection makes room (a flood of idle connections cannot lock out the load
  balancer's probe);
- a header deadline: a connection that has not sent a whole request within `header_timeout_s` of
  connecting is closed; afterwards aiohttp's keep-alive timeout closes idle or trickling ones;
- an error log that never carries request content (only the peer and the HTTP status);
- optionally, the TCP congestion control its connections send with (`congestion_control`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import resource
import socket
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler


@dataclass
class Limits:
    max_connections: int = 256
    """Open connections at once; a node's servers see a few peers and a load balancer, never thousands."""
    header_timeout_s: float = 10.0
    """A new connection must have sent a whole request by then."""
    keepalive_timeout_s: float = 15.0
    """An idle (or trickling) keep-alive connection is closed after this long."""
    refused: dict[str, int] = field(default_factory=lambda: {"over_limit": 0, "header_timeout": 0})


class _QuietHandler(RequestHandler):
    """aiohttp answers a malformed request with the parser's message, which quotes the offending header line: a
    bearer token sent back to whoever sent it (and into any proxy's log). Answer with the status alone."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status != 500:
            message = f"{status} {HTTPStatus(status).phrase}\n"
        return super().handle_error(request, status, exc, message)


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietHandler(self, loop=self._loop, **self._kwargs)


def bearer_matches(request: web.Request, token: str) -> bool | None:
    """Whether the request's `Authorization: Bearer` is `token` (constant time); None when it sends none. A header
    that is not UTF-8 cannot be our token: False, never a 500."""
    given = request.headers.get("Authorization")
    if given is None:
        return None
    try:
        raw = given.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, f"Bearer {token}".encode())


class _NoRequestContent(logging.Filter):
    """aiohttp logs a malformed request with the parser's message, which quotes the offending header
    line. Keep the fact and the status; drop the content and the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "malformed request from %s (HTTP %s)",
                (peer, exc.code),
                None,
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_server_log = logging.getLogger("spotstack.http.server")
_server_log.addFilter(_NoRequestContent())

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)  # Linux's number; Python names it from 3.6 on Linux
_TCP_SYSCTL = Path("/proc/sys/net/ipv4")


def set_congestion_control(sock: socket.socket, name: str) -> None:
    """Send with TCP congestion control `name` on `sock`; a listening socket passes it on to every connection it
    accepts. OSError saying why not: the kernel has no such algorithm, or this process may not choose it (without
    CAP_NET_ADMIN only those in net.ipv4.tcp_allowed_congestion_control)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode("ascii", "replace"))  # no name has a "?"
    except (FileNotFoundError, PermissionError) as exc:
        listed = "available" if isinstance(exc, FileNotFoundError) else "allowed"
        try:
            names = (_TCP_SYSCTL / f"tcp_{listed}_congestion_control").read_text().split()
        except OSError:
            names = []
        known = f" ({listed}: {', '.join(names)})" if names else ""
        why = "not in this kernel" if listed == "available" else "not allowed for this process"
        raise type(exc)(exc.errno, f"TCP congestion control {name!r} is {why}{known}") from None


class _Guard:
    """Connection bookkeeping for the cap and the header deadline.

    Over the cap, the connection idle the longest (connected or done with its last request, and not
    serving one now) is closed to make room, and the new one is refused only when every connection
    is mid-request. So a flood of idle connections cannot lock out the load balancer's next probe:
    each new connection pushes out the stalest idle one.
    """

    def __init__(self, server: web.Server, limits: Limits) -> None:
        self.server, self.limits = server, limits
        self.loop = asyncio.get_running_loop()
        self.idle: dict[asyncio.Transport, None] = {}
        """Connections not serving a request, stalest first (dicts keep insertion order)."""
        self.active: set[asyncio.Transport] = set()
        self.started: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            if len(self.idle) + len(self.active) >= limits.max_connections:
                victim = next(iter(self.idle), None)
                if victim is None:
                    limits.refused["over_limit"] += 1
                    # Not from inside connection_made: aiohttp's handler must start before it is torn down.
                    self.loop.call_soon(transport.abort)
                    return
                limits.refused["over_limit"] += 1
                self._forget(victim)
                victim.abort()
            self.idle[transport] = None
            self.loop.call_later(limits.header_timeout_s, self._check, weakref.ref(transport))

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            transport = getattr(handler, "transport", None)
            if transport is not None:
                self._forget(transport)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign,assignment]

    def _forget(self, transport: asyncio.Transport) -> None:
        self.idle.pop(transport, None)
        self.active.discard(transport)

    def _check(self, ref: weakref.ReferenceType[asyncio.Transport]) -> None:
        transport = ref()
        if transport is not None and not transport.is_closing() and transport not in self.started:
            self.limits.refused["header_timeout"] += 1
            self._forget(transport)
            transport.abort()

    def begin(self, transport: asyncio.Transport) -> None:
        self.started.add(transport)
        if transport in self.idle:  # an evicted connection stays forgotten
            del self.idle[transport]
            self.active.add(transport)

    def end(self, transport: asyncio.Transport) -> None:
        if transport in self.active:
            self.active.discard(transport)
            self.idle[transport] = None


async def serve(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float = 2.0,
    limits: Limits | None = None,
    congestion_control: str | None = None,
) -> tuple[web.AppRunner, int]:
    """Start `app` behind the connection cap and header deadline; returns the runner and the bound port. A
    `congestion_control` this host refuses is logged, and the connections keep the host's default."""
    lim = limits or Limits()
    guard: list[_Guard] = []

    @web.middleware
    async def track(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is None or not guard:
            return await handler(request)
        guard[0].begin(transport)
        try:
            return await handler(request)
        finally:
            guard[0].end(transport)

    app.middlewares.insert(0, track)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=lim.keepalive_timeout_s,
        logger=_server_log,
        max_line_size=8190,
        max_field_size=8190,
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.__class__ = _QuietServer  # its handlers answer errors without echoing the request
    guard.append(_Guard(runner.server, lim))
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:  # the port is taken (or the start cancelled): nothing is left set up behind the caller
        await runner.cleanup()
        raise
    listening = [s for s in getattr(site._server, "sockets", None) or () if hasattr(s, "getsockname")]
    bound = int(listening[0].getsockname()[1]) if listening else port
    if congestion_control:
        try:
            for sock in listening:
                set_congestion_control(sock, congestion_control)
        except OSError as exc:  # a tuning this host refuses: the server still serves, as the host would
            _server_log.warning("port %d keeps the host's congestion control: %s", bound, exc.strerror or exc)
    return runner, bound


class TooLarge(ValueError):
    """An answer over what its reader allows (read no further)."""


async def read_capped(resp: Any, limit: int) -> bytes:
    """An aiohttp client response's body, read up to `limit` bytes: a server that answers with 50 MB cannot take
    the reader's memory with it (`resp.text()` reads whatever comes). TooLarge past the limit."""
    if resp.content_length is not None and resp.content_length > limit:
        raise TooLarge(f"answer of {resp.content_length} bytes (at most {limit})")
    got = bytearray()
    async for chunk in resp.content.iter_any():
        got += chunk
        if len(got) > limit:
            raise TooLarge(f"answer over {limit} bytes")
    return bytes(got)


def raise_fd_limit(want: int = 65536) -> int:
    """Raise this process's soft open-file limit toward the hard one (systemd's default soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for programs (HAProxy, a local fleet's nodes) that cannot be told to pick one themselves.

    Taken below the kernel's ephemeral range where there is room: a port from inside it (what binding port 0 gives)
    can be taken by any outbound connection's local end before its listener starts ("address already in use": a
    busy test run's local fleet lost a node's peer cache so). Chosen at random from the OS's entropy, which a fork
    does not copy, so two choosers rarely try the same one."""
    low = _ephemeral_low()
    for _ in range(64):
        port = _rng.randrange(PORTS_FROM, low) if low - PORTS_FROM > 1000 else 0
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


PORTS_FROM = 10000
"""Below this: well-known and registered services' ports, left alone."""
_rng = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here
