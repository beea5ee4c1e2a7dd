"""The replicas a gateway routes to: where they are (a list, or a file the fleet rewrites as nodes come and go)
and whether each is READY and when it is due to go, from its agent's /ready (probed twice a second).

A replica is `URL` (its agent's /ready is `URL/ready`) or `URL ready=PROBE_URL` where the requests and the
readiness live on different ports (the agent's proxy and its health server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
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


class Pool:
    def __init__(self, specs: list[str], file: str | Path | None = None, probe_s: float = 0.5) -> None:
        self.file = Path(file) if file else None
        self.probe_s = probe_s
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

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
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
                self._sync(self._static + self._from_file())
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
        except (aiohttp.ClientError, TimeoutError, ValueError):
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
        with contextlib.suppress(TimeoutError):
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
