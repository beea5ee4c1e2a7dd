"""Session tokens as AWS IMDSv2 and Alibaba's metadata service issue them: PUT for a token with a TTL."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from aiohttp import web

MAX_TTL = 21600


class TokenIssuer:
    def __init__(self, ttl_header: str, token_header: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_header, self.token_header, self.clock = ttl_header, token_header, clock
        self.tokens: dict[str, float] = {}
        self.issued = 0

    async def put_token(self, request: web.Request) -> web.Response:
        if "X-Forwarded-For" in request.headers:
            # IMDS refuses token requests that came through a proxy.
            return web.Response(status=403, text="Forbidden")
        raw = request.headers.get(self.ttl_header)
        try:
            ttl = int(raw) if raw is not None else -1
        except ValueError:
            ttl = -1
        if not 1 <= ttl <= MAX_TTL:
            return web.Response(status=400, text=f"{self.ttl_header} must be 1..{MAX_TTL}")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock() + ttl
        self.issued += 1
        return web.Response(text=token, headers={self.ttl_header: str(ttl)})

    def check(self, request: web.Request) -> str:
        """'ok', 'missing' or 'invalid' (unknown or expired)."""
        token = request.headers.get(self.token_header)
        if token is None:
            return "missing"
        expires = self.tokens.get(token)
        if expires is None or self.clock() >= expires:
            return "invalid"
        return "ok"

    def expire_all(self) -> None:
        self.tokens.clear()
