"""Prometheus metrics, in a registry per agent (several agents share a process in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
        # The peer cache, pulling: where the model's bytes came from and how long a chunk took.
        self.cache_bytes = Counter(
            "spotstack_cache_pulled_bytes", "Model bytes pulled, by source kind", ["source"], registry=r
        )
        self.cache_chunk = Histogram(
            "spotstack_cache_chunk_seconds",
            "From a chunk's request to its bytes verified, by source kind",
            ["source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.cache_bans = Counter("spotstack_cache_peer_bans", "Peers banned by a pull", registry=r)

        self.jobs_give_back = Histogram(
            "spotstack_jobs_give_back_seconds",
            "From a spot notice to a running task visible in the queue again",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )

    def serve_jobs(self, worker: Callable[[], Any]) -> None:
        """Export the queue worker's counters (tasks by outcome, running now) at scrape time."""
        self.registry.register(JobsCollector(worker))

    def serve_cache(self, server: Callable[[], Any]) -> None:
        """Export the peer cache server's own counters (served bytes, refusals by reason) at scrape time."""
        self.registry.register(CacheServerCollector(server))


class CacheServerCollector(Collector):
    """Reads the running peer server's counters when scraped (none before it starts)."""

    def __init__(self, server: Callable[[], Any]) -> None:
        self.server = server

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self.server()
        served = CounterMetricFamily("spotstack_cache_served_bytes", "Chunk bytes this node served to peers")
        refused = CounterMetricFamily(
            "spotstack_cache_refused_requests", "Peer requests refused, by reason", labels=["reason"]
        )
        if s is not None:
            served.add_metric([], s.served_bytes)
            for reason, n in sorted(s.refused.items()):
                refused.add_metric([reason], n)
        yield served
        yield refused


class JobsCollector(Collector):
    """Reads the queue worker's counters when scraped (nothing while the node has no worker)."""

    def __init__(self, worker: Callable[[], Any]) -> None:
        self.worker = worker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        w = self.worker()
        tasks = CounterMetricFamily(
            "spotstack_jobs_tasks", "Tasks this node answered for, by outcome", labels=["outcome"]
        )
        running = GaugeMetricFamily("spotstack_jobs_running", "Tasks running on this node now")
        if w is not None:
            st = w.stats
            for outcome, n in (
                ("done", st.done),
                ("retried", st.retried),
                ("dead_lettered", st.dead_lettered),
                ("given_back", st.given_back),
                ("duplicate", st.duplicates),
            ):
                tasks.add_metric([outcome], n)
            running.add_metric([], len(w.running))
        yield tasks
        yield running
