"""The agent's drain: the adaptors it leaves rotation through (load balancer, lifecycle action, workload, in-flight
count), built once and off the event loop as soon as the node knows who it is, and the drain itself, which turns
readiness off before anything else and runs to the end whatever is missing (a missing part is a failed step).

A part of `Agent` (its base class), kept apart because it is one concept: how the node leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from spotstack.runtime.agent.metrics import AgentMetrics
from spotstack.runtime.agent.proxy import CountingProxy
from spotstack.runtime.agent.state import AgentState
from spotstack.runtime.agent.supervisor import Supervisor
from spotstack.runtime.agent.wiring import Identity, Injected
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.drain.lifecycle import AsgLifecycle
from spotstack.runtime.drain.sequence import Drainer, DrainReport, DrainSettings, Step
from spotstack.runtime.drain.targets import Inflight, Lifecycle, Rotation, Workload
from spotstack.runtime.notices.event import InterruptionEvent

log = logging.getLogger("spotstack.agent")

ADAPTOR_WAIT_S = 5.0
"""The most a drain waits for its adaptors (the node's identity) before it goes on without them."""


class Unavailable:
    """A drain adaptor that could not be built: its step fails with the reason, and the sequence goes on."""

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why

    async def leave(self) -> None:
        raise RuntimeError(self.why)

    async def heartbeat(self) -> None:
        raise RuntimeError(self.why)

    async def complete(self) -> None:
        raise RuntimeError(self.why)


class NodeDrain:
    # What the agent gives its drain (set in Agent.__init__).
    cfg: AgentConfig
    state: AgentState
    metrics: AgentMetrics
    identity: Identity | None
    proxy: CountingProxy | None
    supervisor: Supervisor | None
    worker: Any
    injected: Injected
    clock: Callable[[], float]
    report: DrainReport | None
    drained: asyncio.Event
    _session: Any
    _identity_task: asyncio.Task[None] | None
    _prepare_task: asyncio.Task[None] | None
    _drain_parts: tuple[list[Rotation], Lifecycle | None] | None
    _drain_parts_error: str | None

    # -- wiring -------------------------------------------------------------------------------
    def _rotations(self) -> list[Rotation]:
        if self.injected.rotations is not None:
            return list(self.injected.rotations)
        lb = self.cfg.load_balancer
        if lb.kind == "haproxy":
            from spotstack.runtime.drain.haproxy import HAProxyRotation

            assert lb.haproxy_socket and lb.haproxy_backend and lb.haproxy_server
            return [HAProxyRotation(lb.haproxy_socket, lb.haproxy_backend, lb.haproxy_server)]
        if lb.kind == "elbv2":
            from spotstack.runtime.drain.elbv2 import Elbv2Rotation

            assert lb.target_group_arn and self.identity and self.identity.instance_id
            return [
                Elbv2Rotation(
                    lb.target_group_arn,
                    self.identity.instance_id,
                    lb.target_port,
                    lb.region or self.cfg.region,
                    lb.endpoint_url,
                )
            ]
        # GCP and Alibaba: their load balancers probe /ready, which is 503 from the first step.
        return []

    def _lifecycle(self) -> Lifecycle | None:
        if self.injected.no_lifecycle:
            return None
        if self.injected.lifecycle is not None:
            return self.injected.lifecycle
        lc = self.cfg.lifecycle
        if not lc.enabled or self.cfg.cloud != "aws":
            # Alibaba: the SCALE_IN hook's default result (CONTINUE) ends its wait at the heartbeat timeout,
            # which is sized to outlast the drain; completing it early needs the scaling activity's action token.
            return None
        assert lc.hook_name
        return self._asg_action(lc.hook_name)

    def _asg_action(self, hook: str) -> AsgLifecycle:
        """This node's lifecycle action on `hook` in its own Auto Scaling group (known once identity resolved)."""
        lc = self.cfg.lifecycle
        assert self.identity and self.identity.instance_id and self.identity.group_name
        return AsgLifecycle(
            self.identity.group_name,
            hook,
            self.identity.instance_id,
            lc.region or self.cfg.region,
            lc.endpoint_url,
            client=self.injected.autoscaling_client,
        )

    def _workload(self) -> Workload:
        from spotstack.runtime.drain.workload import CommandWorkload, NoWorkload, SignalWorkload

        w = self.cfg.workload
        if w.stop_command:
            return CommandWorkload(w.stop_command)
        if w.pid_file:
            return SignalWorkload(w.pid_file, w.signal)
        return NoWorkload()

    def _inflight(self) -> Inflight | None:
        if self.proxy is not None:
            return self.proxy
        if self.cfg.inflight.metrics_url and self._session is not None:
            from spotstack.runtime.drain.inflight import PrometheusGauge

            return PrometheusGauge(self._session, self.cfg.inflight.metrics_url, self.cfg.inflight.metrics_gauge)
        return None

    # -- behaviour ----------------------------------------------------------------------------
    def _readiness_off(self) -> None:
        self.state.state = "draining"
        self.metrics.state.state("draining")

    def _on_step(self, step: Step) -> None:
        self.metrics.drain_step.labels(step.name, str(step.ok).lower()).observe(step.seconds)

    # -- the drain's adaptors: built once, off the loop, as soon as the node knows who it is ----------------
    async def _prepare_drain(self) -> None:
        """Build the load balancer and lifecycle adaptors once the identity resolves, in a thread: a boto3 client
        loads its service model and may ask the metadata server for credentials (a slow credential endpoint
        would otherwise stall every request the agent serves). A failure is kept and said by the drain."""
        try:
            if self._identity_task is not None:
                await self._identity_task
            self._drain_parts = await asyncio.to_thread(lambda: (self._rotations(), self._lifecycle()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._drain_parts_error = f"{exc.__class__.__name__}: {exc}"
            log.error("the drain's adaptors could not be built: %s", self._drain_parts_error)

    async def _drain_adaptors(self, event: InterruptionEvent) -> tuple[list[Rotation], Lifecycle | None]:
        """The adaptors, waited for a short while at most; what is missing becomes a step that fails with the
        reason, so the rest of the drain (in-flight wait, workload signal) runs all the same."""
        task = self._prepare_task
        if self._drain_parts is None and task is not None and not task.done():
            left = event.deadline - self.cfg.drain.safety_margin_s - self.clock()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), max(0.5, min(ADAPTOR_WAIT_S, left / 4)))
        if self._drain_parts is not None:
            return self._drain_parts
        why = self._drain_parts_error or "the node's identity did not resolve from the metadata server in time"
        rotations: list[Rotation] = [Unavailable("elbv2", why)] if self.cfg.load_balancer.kind == "elbv2" else []
        if self.cfg.load_balancer.kind == "haproxy":
            rotations = self._rotations()  # needs no identity
        lifecycle = Unavailable("lifecycle", why) if self.cfg.lifecycle.enabled and self.cfg.cloud == "aws" else None
        return rotations, lifecycle

    async def _drain(self, event: InterruptionEvent) -> None:
        cut_before = self.proxy.cut if self.proxy is not None else 0
        self._readiness_off()  # first of all, before anything that may wait
        try:
            d = self.cfg.drain
            rotations, lifecycle = await self._drain_adaptors(event)
            rotations = list(rotations)
            inflight, workload = self._inflight(), self._workload()
            if self.worker is not None:
                from spotstack.runtime.jobs.drain import GiveBackThenStop, InflightWithTasks

                rotations.append(self.worker)
                inflight = InflightWithTasks(inflight, self.worker)
                workload = GiveBackThenStop(self.worker, workload, event.deadline - d.safety_margin_s)
            drainer = Drainer(
                readiness_off=self._readiness_off,
                rotations=rotations,
                inflight=inflight,
                workload=workload,
                lifecycle=lifecycle,
                settings=DrainSettings(
                    margin_s=d.safety_margin_s,
                    timeout_s=d.timeout_s,
                    grace_s=d.deregistration_grace_s,
                    heartbeat_interval_s=self.cfg.lifecycle.heartbeat_interval_s,
                    inflight_poll_s=self.cfg.inflight.poll_interval_s,
                    dry_run=self.cfg.dry_run,
                ),
                on_step=self._on_step,
                clock=self.clock,
            )
            self.report = await drainer.run(event)
            if self.report.out_of_rotation_at and event.seen_at:
                self.metrics.out_of_rotation.observe(self.report.out_of_rotation_at - event.seen_at)
            self.state.drain = {
                "kind": event.kind.value,
                "deadline": event.deadline,
                "seen_at": event.seen_at,
                "out_of_rotation_at": self.report.out_of_rotation_at,
                "finished_at": self.report.finished_at,
                "inflight_left": self.report.inflight_left,
                "steps": [
                    {"name": s.name, "ok": s.ok, "seconds": round(s.seconds, 4), "error": s.error, "skipped": s.skipped}
                    for s in self.report.steps
                ],
            }
        except Exception:
            # Out of rotation already (the first line); logged with its traceback; the agent keeps serving /status.
            log.exception("drain failed")
        finally:
            if self.proxy is not None:
                cut = self.proxy.cut - cut_before
                self.state.streams_cut = cut
                (log.warning if cut else log.info)("drain: %d answer(s) cut mid-stream by the workload's end", cut)
            self.state.state = "drained"
            self.metrics.state.state("drained")
            self.drained.set()
