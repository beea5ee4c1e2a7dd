"""Replay spot traces through a fleet policy: how often are N replicas READY, and at what cost? Pure.

Each trace is one pool (a zone and instance type): `data[i]` is what could be had at `i * gap_s` (1-node traces:
1 = a spot instance launches and stays up, 0 = none, and a running one is preempted; N-node traces: how many
replicas the pool can hold, the newest preempted first). A 1 -> 0 edge gives each of the pool's spot replicas its
notice (a drop below what an N-node pool runs, the excess); it dies `notice_s` later, as in the local fleet's
market. A replica spends `provision_s`, then loads the model (`peer_load_s` when another replica is READY to
copy from at that moment, else `cold_load_s`), then is READY. On-demand always launches. Every `tick_s` the
controller sees what a cloud would tell it and decides; launches into a pool with nothing to give fail at once
and are counted.

What a controller knows of a pool is what the cloud says: a failed launch or a preemption marks it
unobtainable for `retry_s`, a successful launch obtainable; other pools are assumed obtainable. Controllers:
- `Ours`: the same `decide()` the local fleet and the cloud controllers run, fed what a cloud controller keeps:
  each pool's preemptions and refused launches, deadlines of noticed replicas, and how long its last spot
  replicas took to serve; the replacement is launched at the notice, and the noticed replica serves on until its
  death less the drain (`drain_s` + `drain_lead_s`), as the agent does by default (`drain.serve_through_notice`);
  a notice shorter than that takes it out at once.
- `SkyServe`: SkyServe as its code behaves (`sky/serve/autoscalers.py` FallbackRequestRateAutoscaler and
  `sky/serve/spot_placer.py` DynamicFallbackSpotPlacer): spot replicas = target - base on-demand; on-demand =
  base + (spot wanted - spot READY); a zone is marked preempted when a replica there is preempted or fails to
  launch, active when one becomes READY, all reset when fewer than two are active; the next spot replica goes
  to a current replica's zone that is marked preempted if there is one, else to the first active zone (the
  placer's cheapest; every pool here costs the same). It does not act on notices: a replica serves until it
  dies, and is replaced at the next tick after.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from spotstack.runtime.controller.sim_policies import Act, Controller, SimReplica, World
from spotstack.runtime.controller.sim_policies import controllers as controllers
from spotstack.runtime.controller.traces import Trace
from spotstack.runtime.controller.traces import load_traces as load_traces

IDLE = Act((), ())
WARMUP_S = 15 * 60.0
"""Availability is measured after the first 15 minutes (the fleet's own start is not what is compared)."""


@dataclass(frozen=True)
class Timings:
    provision_s: float = 180.0
    cold_load_s: float = 120.0
    peer_load_s: float = 20.0
    notice_s: float = 120.0
    tick_s: float = 20.0
    spot_price_ratio: float = 0.3
    retry_s: float = 300.0
    """How long a pool the cloud refused stays known-unobtainable before the controller may try it again."""
    drain_s: float = 30.0
    """The drain's timeout; with the margin and lead below, how long before its death a noticed node leaves."""
    drain_lead_s: float = 10.0
    """The agent's safety margin (5 s) and load-balancer lead (5 s) on top of the drain."""
    warm_start_s: float | None = None
    """The fallback's warm pool (`capacity.warm_pool`: stopped instances with the model on disk): a fallback
    replica started from it is READY this long after its launch. None: no warm pool."""
    warm_pool_size: int = 0
    """Instances prepared (0: N), as the components declare it on AWS (`max_group_prepared_capacity` = size,
    `min_size` 0, reuse on scale-in): the pool holds size less the fallback replicas running, stopped. A fallback
    launch takes one if the pool has one (else it starts cold), and one that makes way for spot goes back to it,
    so nothing boots to refill it. Paid as `size` disks at `warm_disk_ratio` each."""
    warm_disk_ratio: float = 0.01
    """A stopped instance's disks per hour over its on-demand hour (200 GB gp3 against the traces' p3.2xlarge:
    0.007; against a g6.xlarge: 0.027)."""


def _holding(replicas: list[SimReplica], pool: str) -> int:
    return sum(1 for r in replicas if r.pool == pool and r.notice_at is None)


def _in_rotation(r: SimReplica, now: float, c: Controller, tm: Timings) -> bool:
    if r.notice_at is None or c.serves_notice:
        return True
    if not c.serve_through_notice or r.dies_at is None:
        return False
    return now < r.dies_at - (tm.drain_s + tm.drain_lead_s)


@dataclass
class Timeline:
    """Samples of a replay for a plot: the fewest READY replicas since the last sample, spot and on-demand
    replicas running, pools up."""

    points: int = 3000
    """About how many samples to keep (one every steps // points ticks)."""
    t_h: list[float] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    spot: list[int] = field(default_factory=list)
    on_demand: list[int] = field(default_factory=list)
    pools_up: list[int] = field(default_factory=list)

    def add(self, now: float, ready: int, replicas: list[SimReplica], up: list[bool]) -> None:
        self.t_h.append(now / 3600)
        self.ready.append(ready)
        self.spot.append(sum(1 for r in replicas if r.pool is not None))
        self.on_demand.append(sum(1 for r in replicas if r.pool is None))
        self.pools_up.append(sum(up))


@dataclass(frozen=True)
class Result:
    policy: str
    replicas: int
    hours: float
    availability: float
    """Share of time (after the warm-up) with at least N replicas READY."""
    degraded: float
    """Share of time with at least ceil(N/2) READY."""
    mean_ready: float
    cost_vs_on_demand: float
    """Spot and on-demand hours paid, over N on-demand replicas for the whole time."""
    preemptions: int
    launches: int
    launch_failures: int
    spot_share: float
    """Share of paid replica-hours that were spot."""
    warm_starts: int = 0
    """Fallback replicas started from the warm pool."""
    cost_spot: float = 0.0
    cost_on_demand: float = 0.0
    cost_warm_pool: float = 0.0
    """The cost's parts, over the same N on-demand replicas: spot hours, on-demand hours (base and fallback), and
    the warm pool's disks."""

    def as_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def simulate(
    traces: list[Trace],
    n: int,
    controller: Controller,
    timings: Timings = Timings(),
    progress: Callable[[float], None] | None = None,
    timeline: Timeline | None = None,
) -> Result:
    """Replay `traces` with `controller` keeping `n` READY; `timeline`, if given, is filled with samples."""
    tm = timings
    warm = tm.warm_start_s if controller.uses_warm_pool else None
    by_name = {t.name: t for t in traces}
    pools = tuple(by_name)
    end = min(len(t.data) * t.gap_s for t in traces)
    world = World(0.0, [], {}, {}, pools)
    replicas: list[SimReplica] = []
    ended: list[SimReplica] = []
    seq = preemptions = launches = failures = 0
    samples = at_n = at_half = 0
    ready_sum = 0
    prev_up = {p: by_name[p].at(0.0) for p in pools}
    half = math.ceil(n / 2)
    steps = int(end // tm.tick_s)
    # Quiet ticks: when nothing changed since a decision that did nothing, and every time-based rule of the
    # controller has run out since the last change, it would decide nothing again; skip the call (and the
    # count of READY replicas, which cannot have moved). The results are the same; a long replay is ~3x faster.
    last_change, last_idle, last_ready = 0.0, False, 0
    pool_size = tm.warm_pool_size or n
    warm_starts = 0
    low = n
    for step in range(steps + 1):
        now = step * tm.tick_s
        world.now = now
        changed = False
        # The market: when a pool can hold fewer spot replicas than it runs (a 1-node trace's 1 -> 0 edge: none),
        # the newest get their notice (once).
        for p in pools:
            up = by_name[p].at(now)
            if up == prev_up[p]:
                continue
            changed = True
            prev_up[p] = up
            holding = [r for r in replicas if r.pool == p and r.notice_at is None]
            excess = len(holding) - by_name[p].room(now)
            if excess > 0:
                for r in sorted(holding, key=lambda r: -r.launched_at)[: int(excess)]:
                    r.notice_at, r.dies_at = now, now + tm.notice_s
                    preemptions += 1
                    world.preempted_at.setdefault(p, []).append(now)
            if excess >= 0:
                world.known_obtainable[p] = False
                world.last_unobtainable[p] = now
        # What the cloud said of a pool goes stale: after retry_s the controller may try it again.
        for p, ok in list(world.known_obtainable.items()):
            if not ok and now - world.last_unobtainable.get(p, now) >= tm.retry_s:
                del world.known_obtainable[p]
                changed = True
        # Deaths.
        still: list[SimReplica] = []
        for r in replicas:
            if r.dies_at is not None and r.dies_at <= now:
                r.ended_at = r.dies_at
                ended.append(r)
                changed = True
                if r.pool is not None:
                    controller.observe_lost(r.pool)
            else:
                still.append(r)
        replicas = still
        world.replicas = replicas
        # A booted replica loads the model from a READY peer if there is one (a draining node still serves its
        # cache until it dies), else from the object store.
        peers = any(r.ready(now) for r in replicas)
        for r in replicas:
            if r.loaded_at == math.inf and r.booted_at <= now:
                r.loaded_at = now + (tm.peer_load_s if peers else tm.cold_load_s)
                changed = True
        # Readiness news for the controller.
        for r in replicas:
            if now - tm.tick_s < r.loaded_at <= now:
                controller.observe_ready(r)
                changed = True
        if changed or any(r.notice_at is not None for r in replicas):
            last_change = now
        quiet = last_idle and now - last_change > controller.quiet_after_s
        act = IDLE if quiet else controller.act(world, n)
        last_idle = not act.launch and not act.terminate
        if not last_idle:
            last_change = now
        gone = set(act.terminate)
        if gone:
            for r in replicas:
                if r.id in gone:
                    r.ended_at = now
                    ended.append(r)
            replicas = [r for r in replicas if r.id not in gone]
        for role, pool in act.launch:
            launches += 1
            if pool is not None and _holding(replicas, pool) >= by_name[pool].room(now):
                failures += 1
                world.failed_at.setdefault(pool, []).append(now)
                world.known_obtainable[pool] = False
                world.last_unobtainable[pool] = now
                controller.observe_lost(pool)
                continue
            if pool is not None:
                world.known_obtainable[pool] = True
            seq += 1
            running = sum(1 for r in replicas if r.role == "fallback")
            if pool is None and role == "fallback" and warm is not None and running < pool_size:
                # Started from the warm pool: stopped with the model on its disk (those that made way for spot
                # went back to it stopped, so the pool holds `size` less the fallback replicas running).
                replicas.append(SimReplica(f"r{seq}", None, role, now, now, now + warm))
                warm_starts += 1
                continue
            replicas.append(SimReplica(f"r{seq}", pool, role, now, now + tm.provision_s))
        world.replicas = replicas
        # Measure.
        if not quiet:
            last_ready = sum(1 for r in replicas if r.ready(now) and _in_rotation(r, now, controller, tm))
        if now >= WARMUP_S:
            ready = last_ready
            samples += 1
            ready_sum += ready
            at_n += ready >= n
            at_half += ready >= half
        if timeline is not None:
            # Each sample is its stretch's worst: a dip between samples still shows.
            low = min(low, last_ready)
            if step % max(1, steps // timeline.points) == 0:
                timeline.add(now, low, replicas, [by_name[p].at(now) > 0 for p in pools])
                low = n
        if progress is not None and step % 2000 == 0:
            progress(now / end)
    for r in replicas:
        r.ended_at = end
        ended.append(r)
    spot_paid = od_paid = pool_paid = 0.0
    for r in ended:
        hours = (min(r.ended_at or end, end) - r.launched_at) / 3600
        if r.pool is not None:
            spot_paid += hours * tm.spot_price_ratio
        else:
            od_paid += hours
    total_h = end / 3600
    if warm is not None:
        pool_paid = pool_size * total_h * tm.warm_disk_ratio
    paid = spot_paid + od_paid + pool_paid
    spot_hours = sum((min(r.ended_at or end, end) - r.launched_at) / 3600 for r in ended if r.pool is not None)
    all_hours = sum((min(r.ended_at or end, end) - r.launched_at) / 3600 for r in ended)
    if progress is not None:
        progress(1.0)
    return Result(
        controller.name,
        n,
        round(total_h, 1),
        at_n / max(samples, 1),
        at_half / max(samples, 1),
        ready_sum / max(samples, 1),
        paid / (n * total_h),
        preemptions,
        launches,
        failures,
        spot_hours / all_hours if all_hours else 0.0,
        warm_starts,
        spot_paid / (n * total_h),
        od_paid / (n * total_h),
        pool_paid / (n * total_h),
    )
