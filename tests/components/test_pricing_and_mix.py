"""Price and capacity-mix math, as tables, without the engine."""

from __future__ import annotations

from typing import Any

import pytest

from spotstack.components.aws import mix
from spotstack.components.pricing import cost_range, on_demand_count, spot_cap
from spotstack.components.validate import validate_fleets
from tests.conftest import base_fleet


def spec(**changes: Any) -> Any:
    raw = base_fleet()
    raw.update(changes)
    return validate_fleets([raw])[0][0]


@pytest.mark.parametrize(
    ("market", "expected"),
    [
        ({"bid": 0.2}, 0.161),  # 0.2 x 0.8048
        ({"bid": 1.0}, 0.8048),
        ({"max_price": 0.5}, 0.5),
        ({}, 0.8048),  # no cap: the on-demand price
    ],
)
def test_spot_cap(market: dict[str, float], expected: float) -> None:
    s = spec(instances=[{"type": "g6.xlarge", "spot": market}])
    assert spot_cap(s, s.instances[0]) == pytest.approx(expected, abs=1e-4)


def test_price_override_drives_the_cap() -> None:
    s = spec(instances=[{"type": "g6.xlarge", "spot": {"bid": 0.5}, "on_demand_price": 2.0}])
    assert spot_cap(s, s.instances[0]) == 1.0


@pytest.mark.parametrize(
    ("replicas", "base", "percent", "on_demand"),
    [(3, 1, 0, 1), (3, 0, 0, 0), (5, 1, 50, 3), (5, 1, 25, 2), (2, 4, 0, 2), (4, 0, 100, 4)],
)
def test_on_demand_count(replicas: int, base: int, percent: int, on_demand: int) -> None:
    assert on_demand_count(replicas, base, percent) == on_demand


def test_cost_range_orders_spot_below_mix_below_on_demand() -> None:
    c = cost_range(spec())
    assert c.replicas == 3
    assert c.all_spot < c.expected < c.all_on_demand
    assert c.all_on_demand == pytest.approx(3 * 0.8048)
    assert c.expected == pytest.approx(0.8048 + 2 * 0.3219, abs=1e-3)
    assert c.monthly(1.0) == 730.0


@pytest.mark.parametrize(
    ("instances", "price", "warns"),
    [
        ([{"type": "g6.xlarge", "spot": {"bid": 0.4}}], "0.3219", 0),
        ([{"type": "g6.xlarge", "spot": {}}, {"type": "g5.xlarge", "spot": {}}], "", 0),
        (
            [{"type": "g6.xlarge", "spot": {"max_price": 0.3}}, {"type": "g5.xlarge", "spot": {"max_price": 0.3}}],
            "0.3000",
            0,
        ),
        ([{"type": "g6.xlarge", "spot": {"bid": 0.4}}, {"type": "g5.xlarge", "spot": {"bid": 0.4}}], "0.3219", 1),
        ([{"type": "g6.xlarge", "on_demand": {}}], "", 0),
    ],
)
def test_group_spot_max_price(instances: list[dict[str, Any]], price: str, warns: int) -> None:
    got, warnings = mix.spot_max_price(spec(instances=instances))
    assert (got, len(warnings)) == (price, warns)


def test_on_demand_only_types_stay_out_of_the_spot_group() -> None:
    m, _ = mix.main_group_mix(spec())
    assert m.overrides == ["g6.xlarge", "g5.xlarge"]
    fb = mix.fallback_group_mix(spec())
    assert fb.overrides == ["g6.xlarge", "g5.xlarge", "g6e.xlarge"]
    assert fb.on_demand_percentage_above_base_capacity == 100


def test_on_demand_only_type_without_fallback_is_reported() -> None:
    raw = base_fleet()
    raw["capacity"]["dynamic_on_demand_fallback"] = False
    s = validate_fleets([raw])[0][0]
    _, warnings = mix.main_group_mix(s)
    assert any("g6e.xlarge" in w and "fallback" in w for w in warnings)


def test_all_on_demand_fleet_uses_every_type_at_100_percent() -> None:
    m, _ = mix.main_group_mix(
        spec(instances=[{"type": "g6.xlarge", "on_demand": {}}, {"type": "g5.xlarge", "on_demand": {}}])
    )
    assert (m.overrides, m.on_demand_percentage_above_base_capacity) == (["g6.xlarge", "g5.xlarge"], 100)


@pytest.mark.parametrize(("drain", "hb"), [(1, 31), (60, 90), (90, 120), (7200, 7200)])
def test_lifecycle_heartbeat(drain: int, hb: int) -> None:
    assert mix.lifecycle_heartbeat_s(drain) == hb


def test_requests_per_target_per_minute() -> None:
    assert mix.requests_per_target_per_minute(2.5) == 150
