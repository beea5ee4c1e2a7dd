"""The local fleet's load balancers: one HAProxy over every node slot (a fleet in one region), or one per region over
its slots under a front HAProxy (a fleet across regions, `runtime/local/regions.py`), which checks each region's
`HEALTH_PATH` - 503 while the region has no node in rotation - and sends clients to the regions that have. The hold
server is the clients' HAProxy's backup either way."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from spotstack.runtime.local.haproxy import HAProxy, Server
from spotstack.runtime.local.reaper import Ledger
from spotstack.runtime.local.regions import HEALTH_PATH
from spotstack.runtime.net import free_port


class LoadBalancers:
    def __init__(self, workdir: Path, slot_region: Mapping[str, str], listen_port: int, ledger: Ledger) -> None:
        self.workdir, self.slot_region, self.listen_port, self.ledger = workdir, slot_region, listen_port, ledger
        self.regions = list(dict.fromkeys(slot_region.values()))
        self.by_region: dict[str, HAProxy] = {}
        """Region -> the HAProxy its nodes are behind (their agents drain through its runtime socket)."""
        self.front: HAProxy | None = None
        """The clients' HAProxy: the only one (one region), or the front over the regions'."""

    async def start(self, hold_port: int) -> None:
        multi = len(self.regions) > 1
        for r in self.regions:
            slots = [Server(s, 9, 9, disabled=True) for s, sr in self.slot_region.items() if sr == r]
            lb = HAProxy(
                self.workdir / (f"lb-{r}" if multi else "lb"),
                free_port() if multi else self.listen_port,
                slots,
                None if multi else hold_port,
                monitor_path=HEALTH_PATH if multi else None,
            )
            await self._start(lb, f"haproxy {r}".strip())
            self.by_region[r] = lb
        self.front = self.by_region[self.regions[0]]
        if multi:
            fronts = [Server(r, lb.listen_port, lb.listen_port, HEALTH_PATH) for r, lb in self.by_region.items()]
            self.front = HAProxy(self.workdir / "lb-front", self.listen_port, fronts, hold_port)
            await self._start(self.front, "haproxy front")

    async def _start(self, lb: HAProxy, what: str) -> None:
        await lb.start()
        if lb.pid is not None:
            self.ledger.record(lb.pid, what)

    async def stop(self) -> None:
        for lb in {id(x): x for x in [*self.by_region.values(), *([self.front] if self.front else [])]}.values():
            await lb.stop()
