"""Small clients for the three clouds' metadata servers: paths in, text out, 404 as None.

Short timeouts (a metadata server answers in milliseconds or is not there), a session token
refreshed before it expires, and one retry with a fresh token on 401 (AWS IMDSv2, Alibaba's
hardened mode). Anything else unexpected raises `MetadataError`; monitors never see HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from spotstack.runtime.net import TooLarge, read_capped

MAX_ANSWER_BYTES = 1 << 20
"""A metadata value is bytes to kilobytes (user data: 16 KB on AWS, 256 KB a value on GCP): read no more."""


async def _text(r: aiohttp.ClientResponse) -> str:
    return (await read_capped(r, MAX_ANSWER_BYTES)).decode("utf-8", errors="replace")


class MetadataError(Exception):
    """The metadata server failed to answer as documented (5xx, timeout, refused, 4xx other than 404)."""


class TokenMetadataClient:
    """AWS IMDSv2 and Alibaba's metadata service share this shape; only header names differ."""

    TOKEN_PATH = "/latest/api/token"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        token_header: str,
        ttl_header: str,
        timeout_s: float = 2.0,
        ttl_s: int = 21600,
        use_token: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token_header = token_header
        self._ttl_header = ttl_header
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ttl = ttl_s
        self._use_token = use_token
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0

    async def _fetch_token(self) -> str:
        try:
            async with self._session.put(
                self._base + self.TOKEN_PATH, headers={self._ttl_header: str(self._ttl)}, timeout=self._timeout
            ) as r:
                if r.status != 200:
                    raise MetadataError(f"token request: HTTP {r.status}")
                token = (await _text(r)).strip()
        except (aiohttp.ClientError, asyncio.TimeoutError, TooLarge) as exc:
            raise MetadataError(f"token request: {exc.__class__.__name__}: {exc}") from exc
        if not token:
            raise MetadataError("token request: empty token")
        # Refresh well before expiry: a token that dies mid-drain costs a round trip we can't spare.
        self._token_expires = self._clock() + max(1.0, self._ttl * 0.8)
        return token

    async def _headers(self) -> dict[str, str]:
        if not self._use_token:
            return {}
        if self._token is None or self._clock() >= self._token_expires:
            self._token = await self._fetch_token()
        return {self._token_header: self._token}

    async def get(self, path: str) -> str | None:
        """GET a metadata path: its text, or None where the server says 404 (nothing there)."""
        for attempt in (1, 2):
            headers = await self._headers()
            try:
                async with self._session.get(self._base + path, headers=headers, timeout=self._timeout) as r:
                    if r.status == 401 and self._use_token and attempt == 1:
                        self._token = None  # expired or revoked: fetch a new one and retry once
                        continue
                    if r.status == 404:
                        return None
                    if r.status != 200:
                        raise MetadataError(f"{path}: HTTP {r.status}")
                    return await _text(r)
            except (aiohttp.ClientError, asyncio.TimeoutError, TooLarge) as exc:
                raise MetadataError(f"{path}: {exc.__class__.__name__}: {exc}") from exc
        raise MetadataError(f"{path}: HTTP 401 with a fresh token")


def aws_imds(
    session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 2.0, ttl_s: int = 21600, use_token: bool = True
) -> TokenMetadataClient:
    return TokenMetadataClient(
        session,
        base_url,
        token_header="X-aws-ec2-metadata-token",
        ttl_header="X-aws-ec2-metadata-token-ttl-seconds",
        timeout_s=timeout_s,
        ttl_s=ttl_s,
        use_token=use_token,
    )


def alicloud_metadata(
    session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 2.0, ttl_s: int = 21600, use_token: bool = True
) -> TokenMetadataClient:
    return TokenMetadataClient(
        session,
        base_url,
        token_header="X-aliyun-ecs-metadata-token",
        ttl_header="X-aliyun-ecs-metadata-token-ttl-seconds",
        timeout_s=timeout_s,
        ttl_s=ttl_s,
        use_token=use_token,
    )


class GcpMetadataClient:
    """GCP's metadata server: `Metadata-Flavor: Google` both ways, and ETag-based long-polls."""

    PREFIX = "/computeMetadata/v1"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 2.0) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s

    async def get(
        self, path: str, *, wait_for_change: bool = False, last_etag: str | None = None, wait_timeout_s: int = 60
    ) -> tuple[str | None, str | None]:
        """(text, etag); text None on 404. With wait_for_change, blocks until the value differs from last_etag."""
        params: dict[str, str] = {}
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        if wait_for_change:
            params["wait_for_change"] = "true"
            params["timeout_sec"] = str(wait_timeout_s)
            if last_etag:
                params["last_etag"] = last_etag
            timeout = aiohttp.ClientTimeout(total=wait_timeout_s + self._timeout_s + 3)
        try:
            async with self._session.get(
                self._base + self.PREFIX + path, params=params, headers={"Metadata-Flavor": "Google"}, timeout=timeout
            ) as r:
                if r.status == 404:
                    return None, None
                if r.status != 200:
                    raise MetadataError(f"{path}: HTTP {r.status}")
                if r.headers.get("Metadata-Flavor") != "Google":
                    raise MetadataError(f"{path}: response lacks Metadata-Flavor: Google (not a metadata server?)")
                return await _text(r), r.headers.get("ETag")
        except (aiohttp.ClientError, asyncio.TimeoutError, TooLarge) as exc:
            raise MetadataError(f"{path}: {exc.__class__.__name__}: {exc}") from exc
