"""The local fleet: a whole spotstack deployment on one machine, run by one supervisor.

Parts and their cloud counterparts:
- object store: moto's S3 server holding the model (S3 / GCS / OSS);
- load balancer: HAProxy, one server slot per possible node (ALB target group / backend service / CLB);
- nodes: one process each with a metadata emulator, the agent, and a MiniLM model server (a GPU VM), forked from a
  zygote that has imported them (`zygote.py`: a boot costs a fork, not a second of imports);
- market: a trace replay that refuses spot launches and preempts spot nodes (the spot market);
- controller: the clouds' round (`controller.round`) each tick through a local adaptor (`adaptors/local.py`),
  carried out by launching and ending node processes; it tells a noticed node to leave rotation (POST /release)
  once the replicas serving without it reach the target;
- warm pool: a fallback node that makes way for spot keeps its model on disk, stopped (its process ends, its
  placed files stay); the next fallback node starts on that disk and serves without fetching (AWS warm pool).
  The pool fills as fallback nodes return (AWS boots its pool at creation instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from spotstack.runtime.controller.adaptors.local import LocalCloud, MemoryStore
from spotstack.runtime.controller.decide import Launch, Policy
from spotstack.runtime.controller.round import run_round
from spotstack.runtime.files import write_atomic
from spotstack.runtime.local import node_api, report
from spotstack.runtime.local.balancers import LoadBalancers
from spotstack.runtime.local.gateways import Gateways, write_replicas
from spotstack.runtime.local.haproxy import HAProxy
from spotstack.runtime.local.hold import HoldServer
from spotstack.runtime.local.market import Market
from spotstack.runtime.local.node_config import DRAIN_LEAD_S, DRAIN_MARGIN_S, agent_config
from spotstack.runtime.local.objectstore import start_object_store, stop_processes
from spotstack.runtime.local.plan import FleetPlan, local_policy
from spotstack.runtime.local.postbox import Postbox
from spotstack.runtime.local.reaper import Ledger
from spotstack.runtime.local.regions import launch_region
from spotstack.runtime.local.replica import Node, spawn_node, write_peers
from spotstack.runtime.local.warm_pool import WarmPool, end_process
from spotstack.runtime.local.zygote import Zygote
from spotstack.runtime.net import free_port

log = logging.getLogger("spotstack.local")


class LocalFleet:
    def __init__(
        self,
        plan: FleetPlan,
        workdir: Path,
        market: Market,
        *,
        notice_s: float = 10.0,
        tick_s: float = 0.5,
        model_dir: Path | None = None,
        stable_s: float = 3.0,
    ) -> None:
        self.plan, self.workdir, self.market = plan, workdir, market
        self.notice_s, self.tick_s, self.stable_s = notice_s, tick_s, stable_s
        self.model_dir = model_dir
        self.nodes: dict[str, Node] = {}
        self.regions: tuple[str, ...] = plan.regions or ("",)
        """Its regions (`runtime/local/regions.py`), each a group of slots behind its own HAProxy; one: no name."""
        self.slot_region = {f"{r}s{i}".lstrip("-"): r for r in self.regions for i in range(3 * plan.max + 2)}
        self.slots = list(self.slot_region)
        self.counter = 0
        self.preemptions = 0
        self.fallbacks_launched = 0
        self.killed_without_notice = 0
        self.last_unobtainable: dict[str, float] = {}
        self.lb_port = 0
        self.events: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lbs: dict[str, HAProxy] = {}
        """Region -> the HAProxy its nodes are behind (`balancers.LoadBalancers.by_region`, once started)."""
        self._balancers: LoadBalancers | None = None
        self._task: asyncio.Task[None] | None = None
        self._env: dict[str, str] = {}
        self._zygote = Zygote({}, workdir / "zygote.log")
        self._shm = Path("/dev/shm") / f"spotstack-local-{os.getpid()}"
        self.retired: list[Node] = []
        self._prev_tick = 0.0
        self._filled: set[str] = set()
        self.ledger = Ledger(workdir)
        """Every child process, so `local down` can reap them after a crash."""
        self.market_live = False
        """The market plays from the moment the fleet first has its desired replicas READY."""
        self.warm_pool = WarmPool(plan.warm_pool, self.events, self._shm)
        self.warm_starts = 0
        self._cloud = LocalCloud(self)
        self._store = MemoryStore()
        """The controller's memory: pool history, notices, start times (`controller.state`)."""
        self.below_target_s = 0.0
        """Seconds, since the market started, with fewer READY replicas in rotation than desired."""
        self.below_target_unnoticed_s = 0.0
        """The part of it after a kill without notice, until the fleet was back at its target."""
        self._unnoticed = False
        self._measured_at: float | None = None
        self.jobs: dict[str, Any] | None = None
        """The nodes' jobs config (queue URLs on moto's server) when the fleet serves queues."""
        self.postbox = Postbox(self.events)
        """What the cloud posts to its nodes' metadata (notices, scale-ins), said off the event loop."""
        self.hold = HoldServer(self._in_slots)
        """HAProxy's backup: requests wait there for a READY replica instead of a 503 while none is in rotation."""
        self.tokens_per_s = 30.0
        """The generative workload's decoding rate (an LLM fleet)."""
        self.gateways: Gateways | None = None
        """The fleet gateways between the load balancer and the nodes (`service.gateway`)."""

    # -- start -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._shm.mkdir(parents=True, exist_ok=True)
        self.ledger.record_dir(self._shm)  # memory: `down` frees it even after a SIGKILLed supervisor
        # The fleet's secret (peer cache, /release, the control API): readable by this user alone.
        write_atomic(self.workdir / "token", secrets.token_urlsafe(32), mode=0o600)
        self._write_peers()
        if self.model_dir is None and self.plan.workload == "llm":
            # The generative model's weights (fixed seed) as a checkpoint in the object store, pulled like any model.
            from spotstack.runtime.llm.model import TinyLM

            self.model_dir = self.workdir / "llm-model"
            await asyncio.to_thread(TinyLM().save, self.model_dir)
        self.model_url, self._env = await asyncio.to_thread(start_object_store, self.model_dir, self._procs)
        for p in self._procs:
            self.ledger.record(p.pid, "object store")
        self._zygote = Zygote(self._env, self.workdir / "zygote.log")  # nodes fork from it (`zygote.py`)
        self.ledger.record(await asyncio.to_thread(self._zygote.start), "node zygote")
        if self.plan.jobs is not None:  # the same moto server is the fleet's SQS
            from spotstack.runtime.local.jobs import create_local_queues

            self.jobs = await asyncio.to_thread(create_local_queues, self.plan, self._env, self.workdir)
        self.lb_port = free_port()
        await self.hold.start()
        self._balancers = LoadBalancers(self.workdir, self.slot_region, self.lb_port, self.ledger)
        await self._balancers.start(self.hold.port)
        self._lbs = self._balancers.by_region
        if self.plan.gateway is not None:
            # The clients' load balancer fronts the gateways; the gateways find the nodes in `replicas.json`.
            write_replicas(self.workdir, self.nodes.values())
            self.gateways = Gateways(self.workdir, self.plan.gateway, self._env, self.ledger)
            await self.gateways.start()
            self.lb_port = self.gateways.front_port
        # The warm pool's instances boot once, load the model and stop (AWS: into the pool at creation).
        for _ in range(self.plan.warm_pool):
            self.warm_pool.preparing.append(self.launch(Launch("fallback", self.plan.on_demand_types[0]), prepare=True))
        self._task = asyncio.create_task(self._loop())

    # -- nodes -------------------------------------------------------------------------------
    def region_for(self, launch: Launch) -> str | None:
        """A launch's region (`regions.launch_region`); None: no region can take it now."""
        return launch_region(self.regions, launch.type, lambda r: self.market.on_demand_obtainable(r, time.time()))

    def launch(self, launch: Launch, *, prepare: bool = False) -> Node:
        """Start a node process. `prepare`: a warm pool instance's first boot, outside the load balancer: it
        loads the model onto its disk and is stopped (`_prepared`)."""
        self.counter += 1
        name = f"{'warm' if prepare else launch.role[:4]}-{self.counter}"
        used = {n.slot for n in self.nodes.values()}
        region = self.region_for(launch) or self.regions[0]
        slot = "" if prepare else next(s for s in self.slots if s not in used and self.slot_region[s] == region)
        lb = self._lbs.get(region)
        ports = {k: free_port() for k in ("emulator", "agent", "proxy", "model", "peer")}
        # Behind gateways (as on a cloud) the traffic goes to the model server itself; else through the agent's
        # proxy, which counts requests in flight for the drain.
        direct = self.plan.gateway is not None
        ports["traffic"] = ports["model"] if direct else ports["proxy"]
        ndir = self.workdir / "nodes" / name
        ndir.mkdir(parents=True, exist_ok=True)
        kept = self.warm_pool.take() if launch.role == "fallback" else None
        warm = kept is not None
        disk = kept or self._shm / "disks" / name
        agent = agent_config(
            name,
            ports,
            ndir,
            disk,
            self._shm / name / "store",
            lb=None if prepare else (str(lb.socket if lb else ""), slot),
            drain_timeout_s=self.plan.drain_timeout_s,
            model_url=self.model_url,
            workdir=self.workdir,
            jobs=self.jobs,
            direct=direct,
            template=self.plan.node,
        )
        spec = {
            "name": name,
            "emulator_port": ports["emulator"],
            "agent": agent,
            "workload": self.plan.workload,
            "tokens_per_s": self.tokens_per_s,
        }
        # Listed before it is forked: nodes of one round read each other there and pull as a swarm (written only at
        # the next tick, each first node read the whole model from the object store).
        self._write_peers(starting=[ports["peer"]])
        proc = spawn_node(ndir / "node.json", spec, self._zygote)
        self.ledger.record(proc.pid, f"node {name}", group=True)
        node = Node(name, launch.role, launch.type, slot, ports, proc, time.time(), disk=disk, warm=warm, region=region)
        if prepare:
            self.events.append(f"{time.strftime('%H:%M:%S')} launch {name} into the warm pool")
            return node
        self.nodes[name] = node
        if launch.role == "fallback":
            self.fallbacks_launched += 1
        self.warm_starts += warm
        how = ", from the warm pool" if warm else ""
        where = f" in {region}" if len(self.regions) > 1 and launch.role != "spot" else ""
        self.events.append(f"{time.strftime('%H:%M:%S')} launch {name} ({launch.role} {launch.type}{where}{how})")
        return node

    def _write_peers(self, starting: list[int] | None = None) -> None:
        """The peers file: the nodes and the warm pool's instances loading the model (their disks are the pool)."""
        write_peers(self.workdir, [*self.nodes.values(), *self.warm_pool.preparing], starting or [])

    def serving(self) -> list[Node]:
        """READY nodes in rotation (in a filled HAProxy slot)."""
        return [n for n in self.nodes.values() if n.state == "ready" and n.slot in self._filled]

    def healed(self, last: str | None = None) -> bool:
        """Back to its desired replicas in rotation, `last` (the last victim) no longer among them: a scenario's next
        preemption hits a fleet that has recovered from the one before."""
        serving = self.serving()
        return len(serving) >= self.plan.desired and all(n.name != last for n in serving)

    def _in_slots(self) -> list[tuple[int, int]]:
        """Nodes behind HAProxy, those without a notice first: (traffic port, readiness port)."""
        nodes = sorted((n for n in self.nodes.values() if n.slot in self._filled), key=lambda n: n.kill_at is not None)
        return [(n.ports["traffic"], n.ports["agent"]) for n in nodes]

    def free_slot(self, region: str | None = None) -> bool:
        used = {n.slot for n in self.nodes.values()}
        return any(s not in used and region in (None, self.slot_region[s]) for s in self.slots)

    def preempt(self, name: str, notice: bool = True, notice_s: float | None = None) -> bool:
        """The cloud reclaims a node: with its notice (then a kill when the window ends), or at once; False: it was
        already leaving (preempted or scaled in). `notice_s`: this notice's window (e.g. GCP's 30 s)."""
        node = self.nodes[name]
        if node.kill_at is not None:
            return False
        node.preempted = True
        self.preemptions += 1
        if notice:
            node.kill_at = time.time() + (self.notice_s if notice_s is None else notice_s)
            self.postbox.post(node, "notice")
        else:
            self.killed_without_notice += 1
            self._unnoticed = True
            node.kill_at = time.time()
        self.events.append(f"{time.strftime('%H:%M:%S')} preempt {name}{'' if notice else ' WITHOUT notice'}")
        return True

    async def _retire(self, node: Node) -> None:
        await end_process(node)
        lb = self._lbs.get(node.region)
        if lb is not None and node.slot:
            with contextlib.suppress(OSError):
                await lb.empty(node.slot)
        node.ended_at = time.time()
        self._filled.discard(node.slot)  # the slot is free again: a node launched into it must be filled anew
        self.retired.append(self.nodes.pop(node.name))
        shutil.rmtree(self._shm / node.name, ignore_errors=True)
        self.warm_pool.returned(node, sum(1 for n in self.nodes.values() if n.role == "fallback"))

    # -- the controller loop -------------------------------------------------------------------
    async def tick(self) -> None:
        now = time.time()
        if not self.market_live and sum(n.slot in self._filled for n in self.nodes.values()) >= self.plan.desired:
            self.market_live, self.market.started, self._prev_tick = True, now, now
            self.events.append(f"{time.strftime('%H:%M:%S')} fleet READY: the spot market starts")
        edges = self.market.edges(self._prev_tick, now) if self.market_live else []
        for t in edges:  # the market takes back its spot nodes
            for n in list(self.nodes.values()):
                if n.role == "spot" and n.type == t and n.kill_at is None:
                    self.preempt(n.name)
        self._prev_tick = now
        for n in list(self.nodes.values()):
            if n.kill_at is not None and now >= n.kill_at:
                await self._retire(n)
        await self.postbox.deliver_owed(list(self.nodes.values()))
        await asyncio.gather(*(node_api.observe(n, now, self.events) for n in self.nodes.values()))
        for n in list(self.nodes.values()):
            if n.state == "failed":
                await self._retire(n)
            elif n.state == "ready" and n.region in self._lbs and n.slot not in self._filled:
                await self._lbs[n.region].fill(n.slot, n.ports["traffic"], n.ports["agent"])
                self._filled.add(n.slot)
        serving = len(self.serving())
        if self.market_live:
            dt = now - (self._measured_at or now)
            if serving < self.plan.desired:
                self.below_target_s += dt
                if self._unnoticed:
                    self.below_target_unnoticed_s += dt
            else:
                self._unnoticed = False
            self._measured_at = now
        await self._release_covered()
        await self.warm_pool.settle(lambda n: node_api.observe(n, now, self.events), self.retired)
        self._write_peers()
        if self.gateways is not None:
            write_replicas(self.workdir, self.nodes.values())

        policy = self.policy()
        # The clouds' round: observe (the adaptor reads this supervisor's nodes), decide, act (it starts and
        # scales in node processes). Every launch a decision asks for is carried out (the bound is the cloud's).
        run_round(self._cloud, self._store, policy, now, max_launches=2 * self.plan.max + 2)

    def policy(self) -> Policy:
        """The spec's policy (the clouds' own) at this fleet's time scale (`plan.local_policy`)."""
        return local_policy(self.plan, self.stable_s, self.notice_s)

    async def _release_covered(self) -> None:
        """A noticed node serves through its notice (the agent's window) until the replicas serving without it
        reach the target; then the controller releases it: it leaves rotation and drains at once."""
        serving = self.serving()
        without = sum(1 for n in serving if n.kill_at is None)
        leave = self.plan.drain_timeout_s + DRAIN_MARGIN_S + DRAIN_LEAD_S
        for n in serving:
            in_window = n.kill_at is not None and n.kill_at - time.time() > leave  # still serving its notice
            if n.preempted and n.seen_notice and in_window and not n.released and without >= self.plan.desired:
                n.released = True
                token = (self.workdir / "token").read_text().strip()
                ok = await asyncio.to_thread(node_api.release, n, token)
                self.events.append(
                    f"{time.strftime('%H:%M:%S')} release {n.name}: its replacement serves"
                    + ("" if ok else " (the node had no notice waiting)")
                )

    def scale_in(self, name: str) -> None:
        """The controller ends a node: like an ASG scale-in, it drains first (lifecycle Terminated)."""
        node = self.nodes[name]
        if node.kill_at is not None:
            return
        node.kill_at = time.time() + self.notice_s
        self.postbox.post(node, "terminated")
        self.events.append(f"{time.strftime('%H:%M:%S')} scale in {name} ({node.role})")

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("controller tick failed")
            await asyncio.sleep(self.tick_s)

    def cost(self) -> tuple[float, float]:
        return report.cost(self)

    def snapshot(self) -> dict[str, Any]:
        return report.snapshot(self)

    async def wait_ready(self, count: int, timeout_s: float = 120) -> None:
        end = time.time() + timeout_s
        while time.time() < end:
            if len(self.serving()) >= count:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"fewer than {count} replicas READY after {timeout_s}s: {self.snapshot()['nodes']}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for n in list(self.nodes.values()):
            await self._retire(n)
        await self.warm_pool.stop()
        if self.gateways is not None:
            await self.gateways.stop()
        if self._balancers is not None:
            await self._balancers.stop()
        await self.hold.stop()
        await asyncio.to_thread(self._zygote.stop)
        await asyncio.to_thread(stop_processes, self._procs)
        shutil.rmtree(self._shm, ignore_errors=True)
        self.ledger.reap()  # anything that did not stop when asked
