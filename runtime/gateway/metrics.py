"""The gateway's Prometheus metrics, and the raw samples its `/status` reports (continuation gaps, first-token
times), bounded."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("spotstack_gateway_requests", "Requests by outcome", ["outcome"], registry=r)
        self.continued = Counter(
            "spotstack_gateway_streams_continued", "Continuations by why (cut, migrated, refused)", ["why"], registry=r
        )
        self.gap = Histogram(
            "spotstack_gateway_continuation_gap_seconds",
            "From a replica's failure to the next token from another",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
            registry=r,
        )
        self.ttft = Histogram(
            "spotstack_gateway_ttft_seconds",
            "Time to first token by replica",
            ["replica"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
        )
        self.itl = Histogram(
            "spotstack_gateway_inter_token_seconds",
            "Between tokens by replica",
            ["replica"],
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1, 2),
        )
        self.inflight = Gauge("spotstack_gateway_inflight", "Requests in flight", registry=r)
        # Raw samples for reports (`/status`): bounded, newest kept.
        self.gap_samples: deque[float] = deque(maxlen=10_000)
        self.ttft_samples: deque[float] = deque(maxlen=10_000)
        self.continued_by: dict[str, int] = {}
