"""The replicas a gateway routes to: where they are (a list, a file the fleet rewrites as nodes come and go, or the
cloud's API: the fleet's running instances by tag or label, as the peer cache finds its peers) and whether each is
READY and when it is due to go, from its agent's /ready (probed twice a second).

A replica is `URL` (its agent's /ready is `URL/ready`) or `URL ready=PROBE_URL` where the requests and the
readiness live on different ports (the agent's proxy and its health server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from spotstack.runtime.gateway.route import ReplicaView

log = logging.getLogger("spotstack.gateway")

LEAVING_AT_HEADER = "X-Spotstack-Leaving-At"  # runtime/agent/server.py sets it (no import: the agent is heavier)


def parse_replica(spec: str) -> tuple[str, str]:
    """`URL` or `URL ready=PROBE_URL` -> (request base URL, readiness URL)."""
    parts = spec.split()
    if not parts or not parts[0].startswith(("http://", "https://")):
        raise ValueError(f"replica {spec!r}: expected an http(s) URL, optionally followed by ready=URL")
    url = parts[0].rstrip("/")
    probe = url + "/ready"
    for extra in parts[1:]:
        if not extra.startswith("ready="):
            raise ValueError(f"replica {spec!r}: unknown field {extra!r}")
        probe = extra[len("ready=") :]
    return url, probe


Finder = Callable[[], list[str]]
"""Lists the fleet's replicas (specs as above); raises when the cloud's API cannot say."""


def cloud_finder(
    kind: str,
    fleet: str,
    port: int,
    ready_port: int,
    region: str | None = None,
    endpoint: str | None = None,
    metadata_url: str | None = None,
) -> Finder:
    """The fleet's running nodes from the cloud's API (`aws`, `gcp`, `alicloud`), with the gateway's identity:
    requests to `port` (the model server), readiness from the agent on `ready_port`."""
    from spotstack.runtime.cache.discovery import discover

    def find() -> list[str]:
        addrs = discover(
            kind, peers=[], target=fleet, port=port, region=region, endpoint=endpoint, metadata_url=metadata_url
        )
        return [f"http://{a} ready=http://{a.rsplit(':', 1)[0]}:{ready_port}/ready" for a in addrs]

    return find


class Pool:
    def __init__(
        self,
        specs: list[str],
        file: str | Path | None = None,
        probe_s: float = 0.5,
        finder: Finder | None = None,
        find_s: float = 5.0,
    ) -> None:
        self.file = Path(file) if file else None
        self.probe_s = probe_s
        self.finder, self.find_s = finder, find_s
        self._found: list[tuple[str, str]] = []
        self._found_at = 0.0
        self.replicas: dict[str, ReplicaView] = {}
        self.probes: dict[str, str] = {}
        self._static = [parse_replica(s) for s in specs]
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sync(self._static + self._from_file())

    def _from_file(self) -> list[tuple[str, str]]:
        if self.file is None:
            return []
        try:
            doc = json.loads(self.file.read_text())
            return [parse_replica(s) for s in doc]
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("replicas file %s: %s (keeping the last list)", self.file, exc)
            return [(u, self.probes[u]) for u in self.probes if (u, self.probes[u]) not in self._static]

    def _sync(self, wanted: list[tuple[str, str]]) -> None:
        urls = {u for u, _ in wanted}
        for u in list(self.replicas):
            if u not in urls:
                del self.replicas[u]
                self.probes.pop(u, None)
        for u, probe in wanted:
            if u not in self.replicas:
                self.replicas[u] = ReplicaView(u)
            self.probes[u] = probe

    async def _find(self) -> None:
        """Ask the cloud for the fleet's nodes (every `find_s`); a failed answer keeps the last list: a broken
        view is never an empty fleet."""
        if self.finder is None or time.monotonic() - self._found_at < self.find_s:
            return
        self._found_at = time.monotonic()
        try:
            self._found = [parse_replica(s) for s in await asyncio.to_thread(self.finder)]
        except Exception as exc:  # the cloud's API: throttled, unreachable, or refused
            log.warning("finding the fleet's replicas failed (%s); keeping the %d known", exc, len(self._found))
            return
        self._sync(self._static + self._from_file() + self._found)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        await self._find()
        await self.probe_all()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            if self.file is not None:
                self._sync(self._static + self._from_file() + self._found)
            await self._find()
            await self.probe_all()

    async def probe_all(self) -> None:
        await asyncio.gather(*(self._probe(u) for u in list(self.replicas)))
        self._changed.set()
        self._changed = asyncio.Event()

    async def _probe(self, url: str) -> None:
        assert self._session is not None
        r = self.replicas.get(url)
        if r is None:
            return
        try:
            async with self._session.get(self.probes[url]) as resp:
                await resp.read()
                r.ready = resp.status == 200
                leaving = resp.headers.get(LEAVING_AT_HEADER)
                r.leaving_at = float(leaving) if leaving else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            r.ready = False
        if r.ready:
            r.failures = 0

    def mark_failed(self, url: str) -> None:
        """A request to it failed before its first byte: out of rotation until the next probe says READY."""
        r = self.replicas.get(url)
        if r is not None:
            r.failures += 1

    async def changed(self, timeout: float) -> None:
        """Wait for the next probe round (or the timeout)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def views(self) -> list[ReplicaView]:
        return list(self.replicas.values())

    def summary(self) -> list[dict[str, object]]:
        now = time.time()
        return [
            {
                "url": r.url,
                "ready": r.ready,
                "leaving_in_s": round(r.leaving_at - now, 1) if r.leaving_at else None,
                "requests": r.requests,
                "tokens": r.tokens,
            }
            for r in self.replicas.values()
        ]
