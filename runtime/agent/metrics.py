"""Prometheus metrics, in a registry per agent (several agents share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

STATES = ["starting", "serving", "draining", "drained"]


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.notices = Counter(
            "spotstack_notices",
            "Interruption notices seen, by kind and verdict",
            ["kind", "monitor", "verdict"],
            registry=r,
        )
        self.monitor_errors = Counter("spotstack_monitor_errors", "Failed polls, by monitor", ["monitor"], registry=r)
        self.drain_step = Histogram(
            "spotstack_drain_step_seconds",
            "Duration of each drain step",
            ["step", "ok"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.out_of_rotation = Histogram(
            "spotstack_notice_to_out_of_rotation_seconds",
            "From reading a notice to readiness off and load balancers left",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.inflight = Gauge("spotstack_inflight_requests", "Requests in flight through the agent's proxy", registry=r)
        self.state = Enum("spotstack_agent_state", "Agent state", states=STATES, registry=r)
        self.state.state("starting")
