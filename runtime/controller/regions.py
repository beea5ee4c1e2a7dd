"""A fleet across regions as one fleet to the controller: one round, in the home region, over every region.

Each region has its own adaptor (the cloud's, given the region, its pools named `<region>/<type>`); `Regions`
composes them into the `CloudFleet` a round observes and acts on. `decide()` then sees every (region, zone, type)
pool at once and wants one fallback count for the fleet; `fallback_shares` (pure) says which regions' fallback
groups hold it:
- what each region's group is already asked for stays there (no churn; decide() names the replicas that end),
  except launches a region refuses: those go again elsewhere;
- growth goes to the best region: one not refusing on-demand launches, then one with a spot pool obtainable (a
  region out of spot is often out of GPUs altogether), then the cheapest on-demand, then the home region;
- a shrink takes launches that never came first, then from the worst region.
A region whose API fails is unknown, never empty: it is left out of the round (its groups keep their sizes, its
replicas count for nothing either way, and the round decides for the other regions within their shares of the
fleet's bounds) and the round says so. Only when no region answers does the round fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from spotstack.runtime.controller.decide import Decision
from spotstack.runtime.controller.round import CloudFleet, Seen
from spotstack.runtime.controller.state import ControllerState

log = logging.getLogger("spotstack.controller")

SEP = "/"
ON_DEMAND = "on-demand"
"""The pool a region's refused fallback launches are recorded against (`<region>/on-demand`)."""
RETRY_S = 300.0
"""A region that refused a fallback launch gets none for this long (unless no other region can)."""


class RegionFleet(CloudFleet, Protocol):
    """One region's adaptor: a `CloudFleet` whose pools are named `<region>/<type>`."""

    @property
    def fallback_group(self) -> str | None: ...


F = TypeVar("F", bound=RegionFleet)


@dataclass(frozen=True)
class Region(Generic[F]):
    name: str
    fleet: F
    pools: tuple[str, ...] = ()
    """Its spot pools (`<region>/<type>`): none is placed into while the region is unknown."""
    on_demand_price: float | None = None
    """The fallback type's hourly price there (the catalog's), for where new fallback goes."""
    bounds: tuple[int, int, int] | None = None
    """Its share of the fleet's min, max and on-demand base (components/regions.py): while another region is
    unknown, the round decides for the regions it sees, within their shares."""


@dataclass(frozen=True)
class Standing:
    """What `fallback_shares` weighs of one region."""

    asked: int
    """Its fallback group's desired size now."""
    alive: int
    """Its fallback replicas alive (launched and not leaving)."""
    ending: int
    """Of those, how many this round's decision ends."""
    refusing: bool
    """It refused a fallback launch within `RETRY_S`."""
    spot_short: bool
    """None of its spot pools is obtainable."""
    price: float | None
    home: bool


def fallback_shares(wanted: int, regions: Mapping[str, Standing]) -> dict[str, int]:
    """Each region's fallback group size for `wanted` fallback replicas across the regions. Pure."""
    # A region refusing on-demand keeps what runs there; its launches that never came are placed again elsewhere.
    shares = {r: max(0, (s.alive if s.refusing else s.asked) - s.ending) for r, s in regions.items()}

    def rank(r: str) -> tuple[bool, bool, float, bool, str]:
        s = regions[r]
        return (s.refusing, s.spot_short, s.price if s.price is not None else float("inf"), not s.home, r)

    order = sorted(regions, key=rank)
    extra = wanted - sum(shares.values())
    if extra > 0 and order:
        shares[order[0]] += extra
    while extra < 0:
        # Launches that never came (asked above what is alive) go first, then the worst region's.
        short = [r for r in reversed(order) if shares[r] > regions[r].alive - regions[r].ending]
        pick = short[0] if short else next((r for r in reversed(order) if shares[r] > 0), None)
        if pick is None:
            break
        shares[pick] -= 1
        extra += 1
    return shares


class Regions(Generic[F]):
    """Every region's adaptor as one `CloudFleet` (and the region's adaptor for an event the cloud function
    handles)."""

    def __init__(self, regions: Sequence[Region[F]], home: str) -> None:
        self.regions = {r.name: r for r in regions}
        self.home = home
        self._round: tuple[ControllerState, float] = (ControllerState(), 0.0)

    def observe(self, state: ControllerState, now: float) -> Seen:
        parts: dict[str, Seen] = {}
        notes: list[str] = []
        unknown: list[str] = []
        for name, r in self.regions.items():
            try:
                parts[name] = r.fleet.observe(state, now)
            except Exception as exc:  # one region's broken API: that region is unknown, the rest go on
                log.warning("region %s: observation failed, left as it is: %s", name, exc)
                notes.append(f"{name}: unknown ({type(exc).__name__}: {exc}): its groups are left as they are")
                unknown.append(name)
        if not parts:
            raise RuntimeError(f"no region answered ({'; '.join(notes)}): nothing acted on")
        obtainable: dict[str, bool] = {}
        last: dict[str, float] = {}
        for s in parts.values():
            obtainable.update(s.spot_obtainable)
            last.update(s.last_unobtainable or {})
        for name in unknown:  # nothing is placed where nothing is known
            obtainable.update(dict.fromkeys(self.regions[name].pools, False))
        self._round = (state, now)
        bounds = None
        if unknown:
            known = [self.regions[n].bounds for n in parts]
            if all(b is not None for b in known):
                low, high, base = (sum(x) for x in zip(*[b for b in known if b is not None], strict=True))
                bounds = (low, high, base)
            else:
                raise RuntimeError(
                    f"{'; '.join(notes)}; the regions' shares of the fleet are not known: nothing acted on"
                )
        return Seen(
            replicas=tuple(r for s in parts.values() for r in s.replicas),
            target=sum(s.target for s in parts.values()),
            spot_obtainable=obtainable,
            sizes={f"{name}{SEP}{g}": n for name, s in parts.items() for g, n in s.sizes.items()},
            notes=tuple(n for s in parts.values() for n in s.notes) + tuple(notes),
            last_unobtainable=last or None,
            parts=parts,
            bounds=bounds,
        )

    def standing(self, d: Decision, seen: Seen, state: ControllerState, now: float) -> dict[str, Standing]:
        out = {}
        for name, s in (seen.parts or {}).items():
            fb = self.regions[name].fleet.fallback_group
            alive = {r.id for r in s.replicas if r.role == "fallback" and r.alive}
            refused = state.failed_at.get(f"{name}{SEP}{ON_DEMAND}", [])
            spot = [ok for p, ok in s.spot_obtainable.items() if p.startswith(name + SEP)]
            out[name] = Standing(
                asked=s.sizes.get(fb, 0) if fb else 0,
                alive=len(alive),
                ending=sum(1 for i in d.terminate if i in alive),
                refusing=bool(refused) and now - refused[-1] < RETRY_S,
                spot_short=bool(spot) and not any(spot),
                price=self.regions[name].on_demand_price,
                home=name == self.home,
            )
        return out

    def act(self, d: Decision, seen: Seen, max_launches: int) -> dict[str, int]:
        """Each region that answered sized for its share of the fallback; the unknown ones untouched. Weighs the
        regions with the memory and clock of the round that observed `seen`."""
        parts = seen.parts or {}
        state, now = self._round
        shares = fallback_shares(d.wanted_fallback, self.standing(d, seen, state, now))
        sizes: dict[str, int] = {}
        for name, s in parts.items():
            ids = {r.id for r in s.replicas}
            mine = replace(d, wanted_fallback=shares[name], terminate=tuple(i for i in d.terminate if i in ids))
            done = self.regions[name].fleet.act(mine, s, max_launches)
            sizes.update({f"{name}{SEP}{g}": n for g, n in done.items()})
        return sizes

    def adaptor(self, region: object) -> F:
        """The adaptor of the region an event came from (forwarded events keep their `region`); the home region's
        for an event that names none or another."""
        r = self.regions.get(str(region)) or self.regions[self.home]
        return r.fleet


def from_config(cfg: Mapping[str, Any], adaptor: Callable[[Mapping[str, Any], tuple[str, ...]], F]) -> Regions[F]:
    """A fleet across regions from its controller configuration document (every cloud's: `regions` entries with
    `region`, `on_demand_price`, `min`, `max`, `base_on_demand`, the home region `region`): each region's adaptor
    is `adaptor(entry, its bare spot types)`, its pools named `<region>/<type>`."""
    pools = cfg["policy"]["spot_types"]
    parts = []
    for entry in cfg["regions"]:
        name = str(entry["region"])
        bounds = (int(entry["min"]), int(entry["max"]), int(entry["base_on_demand"])) if "min" in entry else None
        mine = tuple(p for p in pools if p.startswith(name + SEP))
        parts.append(
            Region(name, adaptor(entry, spot_types_in(pools, name)), mine, entry.get("on_demand_price"), bounds)
        )
    return Regions(parts, str(cfg["region"]))


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` as evenly as integers allow, the first parts larger: each region's
    share of a fleet's bounds (components/regions.py) and of its spot replicas (the local fleet)."""
    return total // parts + (1 if index < total % parts else 0)


def spot_types_in(policy_spot_types: Sequence[str], region: str) -> tuple[str, ...]:
    """The bare spot types of one region, from the policy's `<region>/<type>` pools."""
    return tuple(p[len(region) + 1 :] for p in policy_spot_types if p.startswith(region + SEP))
