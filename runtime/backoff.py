"""Exponential backoff with full jitter, the one retry schedule of the node's loops.

Each pause is uniform in [0, min(cap, base * 2^n)] for the n-th failure in a row ("full jitter", AWS Architecture
Blog, "Exponential Backoff And Jitter"): a fleet whose nodes all lost the same endpoint at once (the metadata
server, an SQS outage, a throttled API) does not come back in lockstep. `reset()` after a success.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float
    cap: float
    failures: int = 0
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def next(self) -> float:
        """The pause after one more failure."""
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return self.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.failures = 0
