"""Steady load on a local fleet: open-loop requests at a fixed rate, and what became of each."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

SENTENCES = [
    "Spot instances cost a fraction of on-demand.",
    "The replica drains before the node is reclaimed.",
    "A man is eating food.",
    "Model weights load from peers' memory.",
    "The load balancer retries idempotent requests.",
]


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(p / 100 * len(s)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


async def run_load(
    url: str, rps: float, duration_s: float, timeout_s: float = 30.0, stop: asyncio.Event | None = None
) -> LoadResult:
    """Send `rps` requests a second for `duration_s` (open loop: a slow fleet does not slow the sender), or until
    `stop` is set; the requests already sent are answered either way."""
    res = LoadResult()
    rng = random.Random(1)
    started = time.monotonic()

    async def one(session: aiohttp.ClientSession) -> None:
        t = time.monotonic()
        try:
            async with session.post(url + "/embed", json={"text": rng.choice(SENTENCES)}) as r:
                await r.read()
                if r.status == 200:
                    res.ok += 1
                    res.latencies.append(time.monotonic() - t)
                    return
                key = f"HTTP {r.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            key = exc.__class__.__name__
        res.failed += 1
        res.errors[key] = res.errors.get(key, 0) + 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        tasks: list[asyncio.Task[None]] = []
        i = 0
        while (now := time.monotonic() - started) < duration_s and not (stop is not None and stop.is_set()):
            due = int(now * rps) + 1
            while i < due:
                tasks.append(asyncio.create_task(one(session)))
                i += 1
                res.sent += 1
            await asyncio.sleep(min(0.02, 1 / rps))
        await asyncio.gather(*tasks)
    res.seconds = time.monotonic() - started
    return res


async def run_load_until_signal(url: str, rps: float, duration_s: float) -> LoadResult:
    """`run_load`, ended early by SIGINT or SIGTERM (`spotstack local load`: Ctrl-C ends the window, not the
    report)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run_load(url, rps, duration_s, stop=stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
