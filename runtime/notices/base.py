"""The monitor contract: `poll()` returns an event, None, or raises; the supervisor does the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from spotstack.runtime.notices.event import InterruptionEvent


class Monitor(Protocol):
    name: str
    """Shown in logs and the notices metric."""
    long_poll: bool
    """True if poll() blocks until something changes (GCP); else it is called every poll interval."""

    async def poll(self) -> InterruptionEvent | None: ...


WallClock = Callable[[], float]
wall_clock: WallClock = time.time
