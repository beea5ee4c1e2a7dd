"""Every bad config names its path and says what is wrong; all problems are reported at once."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from spotstack.components.validate import SpecError, validate_fleets
from tests.conftest import base_fleet

Mut = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mut:
    def mutate(f: dict[str, Any]) -> None:
        node: Any = f
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        last = parts[-1]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _del(path: str) -> Mut:
    def mutate(f: dict[str, Any]) -> None:
        node: Any = f
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[parts[-1]]

    return mutate


BAD: list[tuple[str, Mut, str, str]] = [
    ("bid zero", _set("instances.1.spot.bid", 0), "fleets[0].instances[1].spot.bid", "must be > 0 and <= 1"),
    ("bid above one", _set("instances.0.spot.bid", 1.5), "fleets[0].instances[0].spot.bid", "must be > 0 and <= 1"),
    (
        "bid and max_price",
        _set("instances.0.spot", {"bid": 0.3, "max_price": 1.0}),
        "fleets[0].instances[0].spot",
        "either bid or max_price",
    ),
    (
        "negative max_price",
        _set("instances.0.spot", {"max_price": -1}),
        "fleets[0].instances[0].spot.max_price",
        "must be > 0",
    ),
    ("no market", _set("instances.0", {"type": "g6.xlarge"}), "fleets[0].instances[0]", "exactly one market"),
    (
        "two markets",
        _set("instances.0", {"type": "g6.xlarge", "spot": {}, "on_demand": {}}),
        "fleets[0].instances[0]",
        "exactly one market",
    ),
    ("no instances", _set("instances", []), "fleets[0].instances", "at least 1"),
    ("unknown type", _set("instances.0.type", "g9.mega"), "fleets[0].instances[0].type", "not a aws type"),
    (
        "type from another cloud",
        _set("instances.0.type", "g2-standard-4"),
        "fleets[0].instances[0].type",
        "needs on_demand_price",
    ),
    (
        "a typo of a catalog type",
        _set("instances.0.type", "g6.xlage"),
        "fleets[0].instances[0].type",
        "did you mean 'g6.xlarge'?",
    ),
    ("51 tags", _set("tags", {f"k{i}": "v" for i in range(49)}), "fleets[0].tags", "at most 48"),
    ("an aws: tag", _set("tags", {"aws:team": "ml"}), "fleets[0].tags.aws:team", "keeps keys starting with aws:"),
    ("a long tag value", _set("tags", {"team": "x" * 10000}), "fleets[0].tags.team", "at most 256 characters"),
    ("a long tag key", _set("tags", {"k" * 129: "v"}), f"fleets[0].tags.{'k' * 129}", "1 to 128 characters"),
    (
        "our own tag",
        _set("tags", {"spotstack:fleet": "other"}),
        "fleets[0].tags.spotstack:fleet",
        "the fleet's own",
    ),
    (
        "an invalid image repository",
        _set("image.repository", "a//b"),
        "fleets[0].image.repository",
        "not a Docker repository name",
    ),
    ("an invalid registry", _set("image.registry", "not a host"), "fleets[0].image.registry", "not a registry host"),
    ("type listed twice", _set("instances.1.type", "g6.xlarge"), "fleets[0].instances[1].type", "listed twice"),
    ("unknown instance key", _set("instances.0.weight", 2), "fleets[0].instances[0].weight", "unknown key"),
    ("unknown top key", _set("replicas", 3), "fleets[0].replicas", "unknown key"),
    ("bad cloud", _set("cloud", "azure"), "fleets[0].cloud", "must be one of"),
    ("no region", _del("region"), "fleets[0].region", "required"),
    ("no zones", _set("zones", []), "fleets[0].zones", "at least 1"),
    ("zone outside region", _set("zones", ["us-west-2a"]), "fleets[0].zones[0]", "not in region"),
    ("zone twice", _set("zones", ["us-east-1a", "us-east-1a"]), "fleets[0].zones", "twice"),
    ("min above max", _set("capacity", {"min": 5, "max": 2}), "fleets[0].capacity.min", "must be <= max"),
    ("desired above max", _set("capacity.desired", 9), "fleets[0].capacity.desired", "between min (1) and max (6)"),
    ("desired below min", _set("capacity.desired", 0), "fleets[0].capacity.desired", "between min"),
    ("base above max", _set("capacity.base_on_demand", 7), "fleets[0].capacity.base_on_demand", "must be <= max"),
    (
        "percent over 100",
        _set("capacity.on_demand_above_base_percent", 120),
        "fleets[0].capacity.on_demand_above_base_percent",
        "must be <= 100",
    ),
    ("negative min", _set("capacity.min", -1), "fleets[0].capacity.min", "must be >= 0"),
    ("max zero", _set("capacity.max", 0), "fleets[0].capacity.max", "must be >= 1"),
    ("no capacity", _del("capacity"), "fleets[0].capacity", "required"),
    ("port out of range", _set("service.port", 70000), "fleets[0].service.port", "must be <= 65535"),
    (
        "relative readiness path",
        _set("service.readiness_path", "ready"),
        "fleets[0].service.readiness_path",
        "does not match",
    ),
    ("drain timeout zero", _set("service.drain_timeout", 0), "fleets[0].service.drain_timeout", "must be >= 1"),
    ("qps zero", _set("scaling.target_qps_per_replica", 0), "fleets[0].scaling.target_qps_per_replica", "must be > 0"),
    (
        "bad cron",
        _set("scaling.schedules.0.cron", "every day"),
        "fleets[0].scaling.schedules[0].cron",
        "must have 5 fields",
    ),
    (
        "schedule above capacity",
        _set("scaling.schedules.0.max", 10),
        "fleets[0].scaling.schedules[0].max",
        "capacity.max",
    ),
    (
        "schedule min above max",
        _set("scaling.schedules.0.min", 7),
        "fleets[0].scaling.schedules[0].min",
        "must be <= max",
    ),
    (
        "queue without backlog",
        _set("scaling.queue", {"name": "jobs"}),
        "fleets[0].scaling.queue.backlog_per_instance",
        "required",
    ),
    ("bad image tag", _set("image.tag", "v1 beta"), "fleets[0].image.tag", "does not match"),
    ("no image", _del("image"), "fleets[0].image", "required"),
    ("bad bucket name", _set("model_cache.bucket", "Acme_Models"), "fleets[0].model_cache.bucket", "does not match"),
    ("peer port equals service", _set("model_cache.peer_port", 8080), "fleets[0].model_cache.peer_port", "must differ"),
    (
        "congestion control not a name",
        _set("model_cache.congestion_control", "BBR v2"),
        "fleets[0].model_cache.congestion_control",
        "does not match",
    ),
    (
        "cache size zero",
        _set("model_cache.memory_cache_gib", 0),
        "fleets[0].model_cache.memory_cache_gib",
        "must be > 0",
    ),
    ("network without subnets", _set("network", {"id": "vpc-1"}), "fleets[0].network.subnets", "at least one subnet"),
    ("bad fleet name", _set("name", "LLM_1"), "fleets[0].name", "does not match"),
    ("string for int", _set("capacity.max", "lots"), "fleets[0].capacity.max", "integer"),
]


@pytest.mark.parametrize(("label", "mutate", "path", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_its_path(label: str, mutate: Mut, path: str, reason: str) -> None:
    raw = base_fleet()
    mutate(raw)
    with pytest.raises(SpecError) as caught:
        validate_fleets([raw])
    lines = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{path}: ") and reason in line for line in lines), lines


def test_there_are_at_least_25_distinct_bad_configs() -> None:
    assert len({b[2] + b[3] for b in BAD}) >= 25


def test_all_problems_reported_at_once() -> None:
    a, b = base_fleet(), base_fleet()
    a["instances"][0]["spot"]["bid"] = 2
    a["capacity"]["desired"] = 99
    b["name"] = "other"
    b["zones"] = ["eu-west-1a"]
    with pytest.raises(SpecError) as caught:
        validate_fleets([a, b])
    paths = {p.path for p in caught.value.problems}
    assert {"fleets[0].instances[0].spot.bid", "fleets[1].zones[0]"} <= paths
    assert "problem(s)" in str(caught.value)


def test_duplicate_fleet_names() -> None:
    with pytest.raises(SpecError, match=r"fleets\[1\].name: fleet name 'llm' is used twice"):
        validate_fleets([base_fleet(), base_fleet()])


@pytest.mark.parametrize("raw", [None, [], {"name": "x"}, "fleet"])
def test_fleets_must_be_a_list(raw: Any) -> None:
    with pytest.raises(SpecError) as caught:
        validate_fleets(raw)
    assert [p.path for p in caught.value.problems] == ["fleets"]


def test_long_drain_timeout_is_a_warning_not_an_error() -> None:
    raw = base_fleet()
    raw["service"]["drain_timeout"] = 200
    fleets, warnings = validate_fleets([raw])
    assert fleets[0].service.drain_timeout == 200
    assert [str(w) for w in warnings] == [
        "fleets[0].service.drain_timeout: 200s is longer than aws's 120s spot notice: "
        "a preempted node dies before its drain ends"
    ]


def test_price_override_admits_unknown_type() -> None:
    raw = copy.deepcopy(base_fleet())
    raw["instances"][0] = {"type": "g9.mega", "spot": {"bid": 0.3}, "on_demand_price": 2.0}
    fleets, warnings = validate_fleets([raw])
    assert fleets[0].instances[0].on_demand_price == 2.0
    assert any("not in the catalog: check its spelling" in str(w) for w in warnings)


def test_a_priced_typo_plans_with_a_warning_naming_the_type_it_resembles() -> None:
    raw = copy.deepcopy(base_fleet())
    raw["instances"][0] = {"type": "g6.xlage", "spot": {"bid": 0.3}, "on_demand_price": 0.8}
    _, warnings = validate_fleets([raw])
    assert any(str(w).startswith("fleets[0].instances[0].type:") and "'g6.xlarge'" in str(w) for w in warnings)


@pytest.mark.parametrize(
    ("cloud", "tags", "reason"),
    [
        ("gcp", {"Team": "ml"}, "labels keys match"),
        ("gcp", {"team": "ML"}, "labels values match"),
        ("gcp", {"team": "x" * 64}, "at most 63"),
        ("alicloud", {f"k{i}": "v" for i in range(19)}, "at most 18"),
        ("alicloud", {"acs:team": "ml"}, "keeps keys starting with"),
        ("alicloud", {"site": "https://x"}, "http:// or https://"),
    ],
)
def test_tags_follow_each_clouds_limits(cloud: str, tags: dict[str, str], reason: str) -> None:
    from spotstack.components.spec import FleetSpec
    from spotstack.components.tag_checks import check_tags

    spec = FleetSpec.model_construct(cloud=cloud, tags=tags)
    assert any(reason in str(p) for p in check_tags(spec, "fleets[0]")), check_tags(spec, "fleets[0]")


def test_valid_fleet_parses_with_defaults() -> None:
    fleets, warnings = validate_fleets([base_fleet()])
    f = fleets[0]
    assert [i.type for i in f.instances] == ["g6.xlarge", "g5.xlarge", "g6e.xlarge"]
    assert f.service.public is True and f.capacity.on_demand_above_base_percent == 0
    assert warnings == []
