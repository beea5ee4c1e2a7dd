"""Validate stack config into fleet specs, collecting every problem with its config path.

Like pulumi-eks's InputPropertiesError, nothing is raised until all fleets have been read, so a
user fixes a stack file in one pass. Warnings (legal but probably unintended) are returned
beside the specs; `spotstack plan` prints them and `pulumi up` logs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["Problem", "SpecError", "validate_fleets"]

from pydantic import BaseModel, ValidationError

from spotstack.components import catalog
from spotstack.components.alicloud import checks as alicloud_checks
from spotstack.components.problem import Problem, SpecError
from spotstack.components.region_checks import check_regions
from spotstack.components.service_checks import (
    check_gateway,
    check_jobs,
    check_max_request,
    check_notifications,
    check_tls,
)
from spotstack.components.spec import (
    CapacitySpec,
    FleetSpec,
    InstanceSpec,
    ModelCacheSpec,
    ScalingSpec,
    ServiceSpec,
)
from spotstack.components.tag_checks import check_image, check_tags
from spotstack.runtime.clouds import PROFILES


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _reason(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in _BOUNDS:
        bound = next(iter(err.get("ctx", {}).values()), "?")
        return f"must be {_BOUNDS[kind]} {bound} (got {err['input']!r})"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected']} (got {err['input']!r})"
    if kind == "string_pattern_mismatch":
        return f"{err['input']!r} does not match {err['ctx']['pattern']}"
    return str(err["msg"]).removeprefix("Value error, ")


def _from_pydantic(prefix: str, exc: ValidationError) -> list[Problem]:
    return [Problem(_path(prefix, e["loc"]), _reason(e)) for e in exc.errors()]


def _check_capacity(cap: CapacitySpec, at: str) -> list[Problem]:
    errors: list[Problem] = []
    if cap.min > cap.max:
        errors.append(Problem(f"{at}.capacity.min", f"must be <= max ({cap.max})"))
    if cap.desired is not None and not cap.min <= cap.desired <= cap.max:
        errors.append(Problem(f"{at}.capacity.desired", f"must be between min ({cap.min}) and max ({cap.max})"))
    if cap.base_on_demand > cap.max:
        errors.append(Problem(f"{at}.capacity.base_on_demand", f"must be <= max ({cap.max})"))
    if cap.warm_pool is not None:
        if not cap.dynamic_on_demand_fallback:
            errors.append(
                Problem(
                    f"{at}.capacity.warm_pool",
                    "keeps instances for the on-demand fallback: set dynamic_on_demand_fallback: true",
                )
            )
        if cap.warm_pool.size > cap.max:
            errors.append(Problem(f"{at}.capacity.warm_pool.size", f"must be <= max ({cap.max})"))
    return errors


def _check_zones(cloud: str, region: str, zones: list[str], at: str) -> list[Problem]:
    errors = [
        Problem(f"{at}.zones[{z}]", f"zone {zone!r} is not in region {region!r}")
        for z, zone in enumerate(zones)
        if not PROFILES[cloud].zone_in(zone, region)
    ]
    if len(set(zones)) != len(zones):
        errors.append(Problem(f"{at}.zones", "lists a zone twice"))
    return errors


def _near(cloud: str, name: str) -> str:
    """A catalog type `name` may be a typo of: ", did you mean 'g6.xlarge'?" or nothing."""
    import difflib

    match = difflib.get_close_matches(name, catalog.types_for(cloud), n=1, cutoff=0.8)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_instances(
    cloud: str, region: str, instances: list[InstanceSpec | None], at: str
) -> tuple[list[Problem], list[Problem]]:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    seen: set[str] = set()
    for i, inst in enumerate(instances):
        if inst is None:
            continue
        ip = f"{at}.instances[{i}]"
        if inst.type in seen:
            errors.append(Problem(f"{ip}.type", f"{inst.type!r} is listed twice"))
        seen.add(inst.type)
        price = catalog.on_demand_price(cloud, inst.type, region, inst.on_demand_price)
        known = catalog.lookup(cloud, inst.type) is not None
        near = "" if known else _near(cloud, inst.type)
        if price is None:
            why = (
                f"no catalog price for {inst.type!r} in {region!r}"
                if known
                else f"{inst.type!r} is not a {cloud} type in the catalog{near}"
            )
            errors.append(Problem(f"{ip}.type", f"{why}; a type the catalog lacks needs on_demand_price"))
        elif not known and cloud != "local":
            # Priced by hand: fine for a type newer than the catalog, but a typo would fail only at launch.
            warnings.append(Problem(f"{ip}.type", f"{inst.type!r} is not in the catalog{near}: check its spelling"))
        elif inst.spot is not None and inst.spot.max_price is not None and inst.spot.max_price > price:
            warnings.append(
                Problem(
                    f"{ip}.spot.max_price",
                    f"{inst.spot.max_price} is above the on-demand price {price}: on-demand would be cheaper",
                )
            )
    return errors, warnings


def _check_schedules(scaling: ScalingSpec, cap_max: int | None, at: str) -> list[Problem]:
    errors: list[Problem] = []
    for s, sched in enumerate(scaling.schedules):
        sp = f"{at}.scaling.schedules[{s}]"
        if sched.min > sched.max:
            errors.append(Problem(f"{sp}.min", f"must be <= max ({sched.max})"))
        if cap_max is not None and sched.max > cap_max:
            errors.append(Problem(f"{sp}.max", f"must be <= capacity.max ({cap_max})"))
        if sched.desired is not None and not sched.min <= sched.desired <= sched.max:
            errors.append(Problem(f"{sp}.desired", f"must be between min ({sched.min}) and max ({sched.max})"))
    return errors


def _check_cache_memory(fleet: FleetSpec, at: str) -> list[Problem]:
    mc = fleet.model_cache
    if mc is None or mc.memory_cache_gib is None:
        return []
    types = [i.type for i in fleet.instances]
    smallest = catalog.smallest_memory_gib(fleet.cloud, types)
    if smallest is None or mc.memory_cache_gib <= smallest * catalog.CACHE_SHARE:
        return []
    return [
        Problem(
            f"{at}.model_cache.memory_cache_gib",
            f"{mc.memory_cache_gib} GiB does not fit: the smallest type has {smallest:g} GiB of memory and the cache "
            f"may take at most {catalog.CACHE_SHARE:.0%} of it ({smallest * catalog.CACHE_SHARE:g} GiB)",
        )
    ]


def _check_ports(cache: ModelCacheSpec | None, service: ServiceSpec, at: str) -> list[Problem]:
    if cache is not None and cache.peer_port == service.port:
        return [Problem(f"{at}.model_cache.peer_port", f"must differ from service.port ({service.port})")]
    return []


def _cross_field(fleet: FleetSpec, at: str) -> tuple[list[Problem], list[Problem]]:
    """Rules that span fields or need the catalog. Returns (errors, warnings)."""
    cap = fleet.capacity
    errors = _check_capacity(cap, at)
    if not fleet.regions:  # with regions, their zones and networks are checked where the user wrote them
        errors += _check_zones(fleet.cloud, fleet.region, fleet.zones, at)
    errors += _check_cache_memory(fleet, at)
    inst_errors, warnings = _check_instances(fleet.cloud, fleet.region, list(fleet.instances), at)
    errors += inst_errors
    errors += _check_schedules(fleet.scaling, cap.max, at)
    errors += _check_ports(fleet.model_cache, fleet.service, at)
    if not fleet.regions and fleet.network is not None and fleet.cloud != "local" and not fleet.network.subnets:
        errors.append(Problem(f"{at}.network.subnets", "give at least one subnet when network is set"))
    if fleet.cloud == "alicloud":
        errors += alicloud_checks.check(fleet, at)
    errors += check_tls(fleet, at)
    errors += check_tags(fleet, at) + check_image(fleet, at)
    jerr, jwarn = check_jobs(fleet, at)
    errors, warnings = errors + jerr, warnings + jwarn
    rerr, rwarn = check_max_request(fleet, at)
    errors, warnings = errors + rerr, warnings + rwarn
    nerr, nwarn = check_notifications(fleet, at)
    errors, warnings = errors + nerr, warnings + nwarn
    gerr, gwarn = check_gateway(fleet, at)
    errors, warnings = errors + gerr, warnings + gwarn
    rerr, rwarn = check_regions(fleet, at)
    errors, warnings = errors + rerr, warnings + rwarn
    wp = cap.warm_pool
    if wp is not None and wp.state == "running" and fleet.cloud != "aws":
        errors.append(
            Problem(
                f"{at}.capacity.warm_pool.state",
                f"{fleet.cloud} keeps standby instances stopped only (AWS alone keeps a running warm pool)",
            )
        )
    if not fleet.spot_instances and (cap.on_demand_above_base_percent < 100 or cap.dynamic_on_demand_fallback):
        warnings.append(Problem(f"{at}.instances", "no type allows spot: the whole fleet runs on-demand"))
    window = PROFILES[fleet.cloud].notice_s
    if fleet.service.drain_timeout > window:
        warnings.append(
            Problem(
                f"{at}.service.drain_timeout",
                f"{fleet.service.drain_timeout}s is longer than {fleet.cloud}'s {window:g}s spot notice: "
                "a preempted node dies before its drain ends",
            )
        )
    if fleet.model_cache is None:
        warnings.append(
            Problem(
                f"{at}.model_cache",
                "no bucket to publish the agent's wheel to: nodes install spotstack by name from the package index "
                "at boot (unless machine_image was baked with `spotstack bake`); set model_cache",
            )
        )
    return errors, warnings


M = TypeVar("M", bound=BaseModel)


def _try(model: type[M], raw: Any) -> M | None:
    """The block parsed, ignoring unknown keys (already reported), so a typo hides no other problem in it."""
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k in model.model_fields}
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _partial_checks(item: dict[str, Any], at: str) -> list[Problem]:
    """Cross-field rules on the parts of a fleet that parse, so one bad field hides no other problem."""
    errors: list[Problem] = []
    cap = _try(CapacitySpec, item.get("capacity"))
    if cap is not None:
        errors += _check_capacity(cap, at)
    region, zones, cloud = item.get("region"), item.get("zones"), item.get("cloud")
    cloud = cloud if isinstance(cloud, str) and cloud in PROFILES else None
    if cloud and isinstance(region, str) and isinstance(zones, list) and all(isinstance(z, str) for z in zones):
        errors += _check_zones(cloud, region, zones, at)
    raw_instances = item.get("instances")
    if isinstance(region, str) and cloud and isinstance(raw_instances, list):
        errors += _check_instances(str(cloud), region, [_try(InstanceSpec, i) for i in raw_instances], at)[0]
    scaling = _try(ScalingSpec, item.get("scaling", {}))
    if scaling is not None:
        errors += _check_schedules(scaling, cap.max if cap else None, at)
    service = _try(ServiceSpec, item.get("service", {}))
    cache = _try(ModelCacheSpec, item.get("model_cache")) if item.get("model_cache") is not None else None
    if service is not None:
        errors += _check_ports(cache, service, at)
    return errors


def validate_fleets(
    raw: Any, prefix: str = "fleets", *, require_bucket: bool = True
) -> tuple[list[FleetSpec], list[Problem]]:
    """Parse the `spotstack:fleets` value. Raises SpecError with every problem; returns warnings.
    `require_bucket=False`: a program passes the model bucket to the fleet as its `model_bucket` Input."""
    if raw is None:
        raise SpecError([Problem(prefix, "required: a list of fleets")])
    if not isinstance(raw, list) or not raw:
        raise SpecError([Problem(prefix, "must be a non-empty list of fleets")])
    fleets: list[FleetSpec] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for i, item in enumerate(raw):
        at = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            errors.append(Problem(at, "must be a mapping"))
            continue
        try:
            fleet = FleetSpec.model_validate(item)
        except ValidationError as exc:
            errors.extend(_from_pydantic(at, exc))
            errors.extend(_partial_checks(item, at))
            continue
        errs, warns = _cross_field(fleet, at)
        if require_bucket and fleet.model_cache is not None and fleet.model_cache.bucket is None:
            errs.append(Problem(f"{at}.model_cache.bucket", "required"))
        errors.extend(errs)
        warnings.extend(warns)
        fleets.append(fleet)
    names = [f.name for f in fleets]
    for i, name in enumerate(names):
        if name in names[:i]:
            errors.append(Problem(f"{prefix}[{i}].name", f"fleet name {name!r} is used twice"))
    if errors:
        raise SpecError(errors)
    return fleets, warnings
