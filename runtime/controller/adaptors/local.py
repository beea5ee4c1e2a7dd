"""The local fleet as a cloud: its supervisor's node processes are the instances, its market the spot market.

The same round as the clouds' (`controller.round.run_round`): the supervisor observes its nodes, `decide()`
decides, and this adaptor acts by starting and scaling in node processes. Memory lives in the process
(`MemoryStore`): one supervisor per stack, so no race to guard against.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from spotstack.runtime.controller.decide import Decision, Launch, Replica, track_obtainability
from spotstack.runtime.controller.round import Seen
from spotstack.runtime.controller.state import ControllerState
from spotstack.runtime.local.regions import region_of, spot_pool

if TYPE_CHECKING:
    from spotstack.runtime.local.market import Market
    from spotstack.runtime.local.plan import FleetPlan
    from spotstack.runtime.local.replica import Node


class Instances(Protocol):
    """What this adaptor needs of the supervisor it drives (`runtime/local/fleet.LocalFleet`): its nodes and market
    to observe, and launch / scale in to act."""

    last_unobtainable: dict[str, float]
    """Pool -> when it last became unobtainable (`decide.track_obtainability`), kept across rounds."""

    @property
    def nodes(self) -> Mapping[str, Node]: ...
    @property
    def plan(self) -> FleetPlan: ...
    @property
    def market(self) -> Market: ...
    @property
    def market_live(self) -> bool: ...
    @property
    def notice_s(self) -> float: ...
    def free_slot(self, region: str | None = None) -> bool: ...
    def region_for(self, launch: Launch) -> str | None: ...
    def launch(self, launch: Launch) -> object: ...
    def scale_in(self, name: str) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.state = ControllerState()

    def load(self) -> ControllerState:
        return self.state

    def save(self, state: ControllerState) -> bool:
        state.version += 1
        self.state = state
        return True


class LocalCloud:
    def __init__(self, fleet: Instances) -> None:
        self.fleet = fleet
        self._refused: list[tuple[str, float]] = []
        """Spot launches the market refused since the last round: remembered against their pool."""

    def observe(self, state: ControllerState, now: float) -> Seen:
        f = self.fleet
        for pool, at in self._refused:
            state.failed(pool, at)
        self._refused.clear()
        for n in f.nodes.values():
            if n.preempted and n.kill_at is not None:
                state.preempted(n.name, n.type, min(now, n.kill_at - f.notice_s), n.kill_at)
            if n.state == "ready" and n.ready_since is not None:
                state.seen_ready(n.name, n.ready_since, n.launched_at, spot=n.role == "spot")
        obtainable = {t: not f.market_live or f.market.obtainable(t, now) for t in f.plan.spot_types}
        f.last_unobtainable = track_obtainability(f.last_unobtainable, now, obtainable)
        replicas = tuple(
            Replica(
                n.name,
                n.role,
                n.type,
                "draining" if n.kill_at is not None else n.state,
                n.launched_at,
                n.ready_since,
                n.kill_at if n.preempted else None,
                n.busy,
            )
            for n in f.nodes.values()
        )
        sizes = {role: sum(1 for r in replicas if r.role == role and r.alive) for role in ("base", "spot", "fallback")}
        return Seen(replicas, f.plan.desired, obtainable, sizes, last_unobtainable=dict(f.last_unobtainable))

    def act(self, d: Decision, seen: Seen, max_launches: int) -> dict[str, int]:
        f = self.fleet
        for name in d.terminate:
            f.scale_in(name)
        sizes = dict(seen.sizes)
        regions = f.plan.regions
        have = Counter(region_of(r.type) or "" for r in seen.replicas if r.role == "spot" and r.alive)
        for launch in d.launch[:max_launches]:
            if regions and launch.role == "spot":
                # Each region keeps its share of spot, as each cloud region's group does (refused there, not moved).
                launch = Launch("spot", spot_pool(launch.type, regions, have, d.wanted_spot))
                have[region_of(launch.type) or ""] += 1
            if launch.role == "spot" and not seen.spot_obtainable.get(launch.type, False):
                self._refused.append((launch.type, time.time()))  # the market refuses the launch
                continue
            region = f.region_for(launch)
            if region is None:  # no region has on-demand capacity now: the next round tries again
                continue
            if not f.free_slot(region):  # every load-balancer slot is taken (nodes still leaving): next round
                break
            f.launch(launch)
            sizes[launch.role] = sizes.get(launch.role, 0) + 1
        return sizes
