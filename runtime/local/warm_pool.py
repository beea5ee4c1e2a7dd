"""The local fleet's warm pool, as AWS keeps one: the disks of stopped fallback nodes, their model placed, and the
pool's instances on their first boot. A fallback node starts on a kept disk and serves without fetching; a fallback
node that ends READY and unpreempted goes back to the pool while it holds fewer than its size."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from spotstack.runtime.local.replica import Node


class WarmPool:
    def __init__(self, size: int, events: list[str], shm: Path) -> None:
        self.size, self.events, self.shm = size, events, shm
        self.stopped: list[Path] = []
        """Disks of stopped fallback nodes, their model placed."""
        self.preparing: list[Node] = []
        """The pool's instances on their first boot."""

    def take(self) -> Path | None:
        """A stopped node's disk for a fallback launch, if the pool holds one."""
        return self.stopped.pop(0) if self.stopped else None

    def returned(self, node: Node, running_fallbacks: int) -> None:
        """A node ended: its disk stays in the pool (stopped) if it is a fallback that was READY, not preempted, and
        the pool is short (`size` prepared in all, as on AWS); else the disk goes."""
        if node.disk is None:
            return
        keep = (
            node.role == "fallback"
            and not node.preempted
            and node.model.get("state") == "ready"
            and len(self.stopped) + running_fallbacks < self.size
        )
        if keep:
            self.stopped.append(node.disk)
            self.events.append(f"{time.strftime('%H:%M:%S')} {node.name} back to the warm pool, stopped")
        else:
            shutil.rmtree(node.disk, ignore_errors=True)

    async def settle(self, observe: Callable[[Node], Awaitable[None]], retired: list[Node]) -> None:
        """Instances whose model is on disk are stopped: their disks join the pool (billed while they booted, as AWS
        bills a warm pool instance's first boot)."""
        await asyncio.gather(*(observe(n) for n in self.preparing))
        for n in list(self.preparing):
            if n.model.get("state") == "ready" or n.proc.exited():
                self.preparing.remove(n)
                await end_process(n)
                n.ended_at = time.time()
                retired.append(n)
                shutil.rmtree(self.shm / n.name, ignore_errors=True)
                if n.model.get("state") == "ready" and n.disk is not None:
                    self.stopped.append(n.disk)
                    self.events.append(f"{time.strftime('%H:%M:%S')} {n.name} stopped in the warm pool, model on disk")

    async def stop(self) -> None:
        for n in self.preparing:
            await end_process(n)


async def end_process(node: Node) -> None:
    """SIGKILL a node's process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.proc.pid, signal.SIGKILL)
    await asyncio.to_thread(node.proc.wait)
