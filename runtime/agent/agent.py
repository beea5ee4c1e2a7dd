"""The agent: wires monitors, the drain and the servers from an `AgentConfig`, and runs them."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from spotstack.runtime.agent.cache import NodeCache
from spotstack.runtime.agent.draining import NodeDrain
from spotstack.runtime.agent.metrics import AgentMetrics
from spotstack.runtime.agent.proxy import CountingProxy
from spotstack.runtime.agent.server import AgentServer
from spotstack.runtime.agent.state import AgentState
from spotstack.runtime.agent.supervisor import Supervisor
from spotstack.runtime.agent.wiring import Identity, Injected, build_monitors
from spotstack.runtime.backoff import Backoff
from spotstack.runtime.clouds import CLOUDS
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.drain.decide import Verdict, horizon, spot_horizon
from spotstack.runtime.drain.sequence import DrainReport
from spotstack.runtime.drain.targets import Lifecycle, Rotation
from spotstack.runtime.notices.base import Monitor
from spotstack.runtime.notices.event import InterruptionEvent, Kind

log = logging.getLogger("spotstack.agent")


class Agent(NodeCache, NodeDrain):
    def __init__(
        self, config: AgentConfig, *, clock: Callable[[], float] = time.time, injected: Injected | None = None
    ) -> None:
        self.cfg = config
        self.clock = clock
        self.metrics = AgentMetrics()
        self.metrics.serve_cache(lambda: getattr(self, "peer_server", None))
        self.state = AgentState(
            cloud=config.cloud, node=config.node_name or socket.gethostname(), dry_run=config.dry_run
        )
        self.proxy: CountingProxy | None = None
        self.server: AgentServer | None = None
        self.supervisor: Supervisor | None = None
        self.identity: Identity | None = None
        self.report: DrainReport | None = None
        self.drained = asyncio.Event()
        self.model_ready = asyncio.Event()
        """Set once the cache has placed the model in cache.dest."""
        self._session: aiohttp.ClientSession | None = None
        self._identity_task: asyncio.Task[None] | None = None
        self._inflight_task: asyncio.Task[None] | None = None
        self._cache_task: asyncio.Task[None] | None = None
        self._launch_task: asyncio.Task[None] | None = None
        self.fleet_token: str | None = None
        """The peer-cache token, once read: it also authenticates the controller's release calls."""
        self.peer_server: Any = None
        self.worker: Any = None
        """The queue worker (`runtime/jobs`), when jobs are enabled."""
        self.metrics.serve_jobs(lambda: self.worker)
        self._jobs_task: asyncio.Task[None] | None = None
        self._jobs_notice: asyncio.Task[None] | None = None
        self._prepare_task: asyncio.Task[None] | None = None
        self._drain_parts: tuple[list[Rotation], Lifecycle | None] | None = None
        """The load balancer and lifecycle adaptors, built once the identity resolves (`_prepare_drain`)."""
        self._drain_parts_error: str | None = None
        self.injected = injected or Injected()
        """Adaptors given instead of built from the configuration (the local fleet's nodes, tests)."""

    def _on_notice(self, event: InterruptionEvent, monitor: Monitor, v: Verdict) -> None:
        self.metrics.notices.labels(event.kind.value, monitor.name, v.value).inc()
        sup = self.supervisor
        pending = sup is None or sup.draining or bool(sup.deferred)
        if v is Verdict.WITHDRAWN and self.worker is not None and not pending:
            # Nothing else pending: take tasks again.
            self.worker.accepting = True
            self._jobs_notice = None
        spot = event.kind is Kind.SPOT_INTERRUPTION and v in (Verdict.DRAIN, Verdict.DEFER)
        if spot and self.worker is not None and self._jobs_notice is None:
            # Tasks go back at the notice, not at the drain: another replica starts them now.
            self._jobs_notice = asyncio.create_task(self._give_back_tasks(event))
        self.state.notices.append(
            {
                "kind": event.kind.value,
                "monitor": monitor.name,
                "verdict": v.value,
                "deadline": event.deadline,
                "seen_at": event.seen_at,
                "detail": event.detail,
            }
        )

    async def _give_back_tasks(self, event: InterruptionEvent) -> None:
        before = len(self.worker.stats.give_back_s)
        await self.worker.preempted(event.deadline, event.seen_at or None)
        for seconds in self.worker.stats.give_back_s[before:]:
            self.metrics.jobs_give_back.observe(seconds)

    async def _run_jobs(self) -> None:
        """Start the queue worker once the node knows who it is (AWS protection names its group)."""
        from spotstack.runtime.jobs.wiring import build_worker

        assert self.server is not None and self._session is not None and self._identity_task is not None
        server = self.server
        protection = self.injected.protection
        if protection is None and self.cfg.jobs.scale_in_protection:
            from spotstack.runtime.jobs.protection import AwsProtection

            await self._identity_task
            assert self.identity is not None and self.identity.instance_id and self.identity.group_name
            lc = self.cfg.lifecycle
            protection = await asyncio.to_thread(  # a boto3 client: credentials from IMDS, a service model read
                AwsProtection,
                self.identity.group_name,
                self.identity.instance_id,
                lc.region or self.cfg.region,
                lc.endpoint_url,
                client=self.injected.autoscaling_client,
            )

        async def ready() -> bool:
            return await server.not_ready() is None

        # Off the loop: the queue's client (boto3: credentials, a service model) and the result store's filesystem.
        self.worker = await asyncio.to_thread(
            build_worker, self.cfg, self.state.node, self._session, ready, protection, self.injected.sqs_client
        )
        self.worker.start()
        while True:  # /status shows the worker
            self.state.jobs = self.worker.status()
            await asyncio.sleep(0.25)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self._session = aiohttp.ClientSession()
        self.identity = Identity(cfg, self._session)
        self._identity_task = asyncio.create_task(self.identity.resolve())
        self._prepare_task = asyncio.create_task(self._prepare_drain())
        if cfg.inflight.proxy_listen_port is not None:
            self.proxy = CountingProxy(
                f"http://127.0.0.1:{cfg.workload.port}",
                cfg.readiness.host,
                cfg.inflight.proxy_listen_port,
                cfg.inflight.max_body_bytes,
            )
            await self.proxy.start()
        self.server = AgentServer(
            self.state,
            self.metrics,
            cfg.readiness.host,
            cfg.readiness.port,
            cfg.readiness.path,
            cfg.readiness.workload_health_url,
            self._session,
            release=lambda: self.supervisor is not None and self.supervisor.release() is not None,
            token=lambda: self.fleet_token,
        )
        await self.server.start()
        monitors = self.injected.monitors or build_monitors(cfg, self._session, self.clock)
        self.supervisor = Supervisor(
            monitors,
            self._drain,
            poll_interval_s=cfg.metadata.poll_interval_s,
            horizon_s=horizon(cfg.drain.timeout_s, cfg.drain.safety_margin_s, CLOUDS[cfg.cloud].notice_s),
            # GCP's 30 s notice is all a drain has: no window there.
            spot_horizon_s=(
                spot_horizon(d.timeout_s, d.safety_margin_s, d.deregistration_grace_s, d.lead_s)
                if (d := cfg.drain).serve_through_notice and cfg.cloud != "gcp"
                else None
            ),
            drain_on_rebalance=cfg.watch_rebalance,
            on_notice=self._on_notice,
            on_error=lambda m, e: self.metrics.monitor_errors.labels(m.name).inc(),
            clock=self.clock,
        )
        self.supervisor.start()
        if cfg.cache.enabled:
            self._cache_task = asyncio.create_task(self._run_cache())
        if self.proxy is not None:
            self._inflight_task = asyncio.create_task(self._track_inflight())
        if cfg.jobs.enabled:
            self._jobs_task = asyncio.create_task(self._run_jobs())
        if cfg.cloud == "aws" and cfg.lifecycle.launch_hook_name:
            self._launch_task = asyncio.create_task(self._complete_launch(cfg.lifecycle.launch_hook_name))
        log.info(
            "agent up: cloud=%s metadata=%s ready=:%d%s",
            cfg.cloud,
            cfg.metadata_url,
            self.server.port,
            cfg.readiness.path,
        )

    async def _complete_launch(self, hook: str) -> None:
        """AWS warm pool: complete the group's launching hook once this node is READY. Into the pool, AWS then
        stops it with the model and image on its disk; out of the pool, it goes InService already serving."""
        assert self.server is not None and self._identity_task is not None
        await self._identity_task
        while (why := await self.server.not_ready()) is not None:
            if why == "draining":
                return  # a node drained before it was ever READY: the hook times out to its default
            if (self.state.model or {}).get("state") == "no_manifest":
                # The model is not in the store yet (the pool was created before the upload): no on-demand GPU
                # waits for it. Into the pool without it; started as a fallback, the node loads it then.
                log.warning("launching hook %s: the model's manifest is not in the store yet; completing it now", hook)
                break
            await asyncio.sleep(1.0)
        action = await asyncio.to_thread(self._asg_action, hook)  # a boto3 client: off the loop
        backoff = Backoff(1.0, 30.0)
        while True:
            try:
                await action.complete()
                log.info("READY: completed the launching hook %s", hook)
                self.state.launch_hook = "completed"
                return
            except Exception as exc:  # throttling or a passing network fault: the hook waits up to its timeout
                self.state.launch_hook = f"retrying: {exc}"
                pause = backoff.next()
                log.warning("launching hook %s: %s; retrying in %.0fs", hook, exc, pause)
                await asyncio.sleep(pause)

    async def _track_inflight(self) -> None:
        while self.proxy is not None:
            self.state.inflight = self.proxy.inflight
            self.metrics.inflight.set(self.proxy.inflight)
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._jobs_task is not None:
            self._jobs_task.cancel()
        if self.worker is not None:
            await self.worker.stop()
        if self.peer_server is not None:
            await self.peer_server.stop()
        for task in (self._identity_task, self._prepare_task, self._inflight_task, self._cache_task, self._launch_task):
            if task is not None:
                task.cancel()
        if self.server is not None:
            await self.server.stop()
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = None
        if self._session is not None:
            await self._session.close()

    async def run_until_signalled(self) -> None:
        """`spotstack agent run`: serve until SIGTERM/SIGINT; a drain under way is finished first."""
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        if self.supervisor is not None and self.supervisor.drain_task is not None:
            await self.drained.wait()
        await self.stop()
