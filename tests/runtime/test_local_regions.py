"""The local fleet across two regions (`spotstack local demo --regions 2`): each region's nodes behind its own
HAProxy, a front HAProxy over them, and a regional outage (every pool of the first region, spot and on-demand,
gone for a while): no request fails, the other region's stand-ins serve, and both regions are back on spot after.
Plus the pure parts: where a launch goes, the outage market, the front's health check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from spotstack.runtime.controller.decide import Policy
from spotstack.runtime.local.haproxy import Server, render_config
from spotstack.runtime.local.plan import FleetPlan
from spotstack.runtime.local.regions import (
    HEALTH_PATH,
    on_demand_region,
    outage_market,
    spot_pool,
    with_regions,
)
from tests import loopcheck
from tests.runtime.localkit import project
from tests.waits import marked

PLAN = FleetPlan(
    "minilm",
    ("g6.xlarge", "g5.xlarge"),
    ("g6.xlarge",),
    3,
    6,
    3,
    1,
    0,
    True,
    3.0,
    {"g6.xlarge": (0.8, 0.32)},
    policy=Policy(("g6.xlarge", "g5.xlarge"), ("g6.xlarge",), 3, 6, 1, 0, True),
)


def test_pools_are_per_region_and_each_region_keeps_its_share_of_spot() -> None:
    plan = with_regions(PLAN, 2)
    assert plan.regions == ("region-1", "region-2")
    assert plan.spot_types == ("region-1/g6.xlarge", "region-2/g6.xlarge", "region-1/g5.xlarge", "region-2/g5.xlarge")
    assert plan.policy is not None and plan.policy.spot_types == plan.spot_types
    assert plan.prices["region-2/g6.xlarge"] == PLAN.prices["g6.xlarge"]
    assert with_regions(PLAN, 1) is PLAN
    # A spot launch goes to the region furthest below its share, in its type's pool there (decide() may have
    # ranked the other region's pool first: the region's group launches its own).
    assert spot_pool("region-2/g5.xlarge", plan.regions, {"region-2": 1}, 2) == "region-1/g5.xlarge"
    assert spot_pool("region-1/g6.xlarge", plan.regions, {"region-1": 1}, 2) == "region-2/g6.xlarge"
    assert spot_pool("region-2/g6.xlarge", plan.regions, {}, 3) == "region-1/g6.xlarge"  # home takes the remainder
    # On-demand goes to the first region that has it, home first; nowhere when none has.
    assert on_demand_region(plan.regions, lambda r: r != "region-1") == "region-2"
    assert on_demand_region(plan.regions, lambda r: True) == "region-1"
    assert on_demand_region(plan.regions, lambda r: False) is None


def test_the_outage_market_takes_one_regions_every_pool_and_its_on_demand() -> None:
    plan = with_regions(PLAN, 2)
    market, outage_s = outage_market(plan, 60.0, before=4, outage=6, after=10)
    assert outage_s == 360.0  # 6 minutes of trace
    market.started = 1000.0
    during, after = 1000.0 + 5.0, 1000.0 + 11.0  # at speed 60: a trace minute a second
    for pool in plan.spot_types:
        out = pool.startswith("region-1/")
        assert market.obtainable(pool, during) is not out and market.obtainable(pool, after)
    assert not market.on_demand_obtainable("region-1", during) and market.on_demand_obtainable("region-2", during)
    assert market.on_demand_obtainable("region-1", after)
    assert sorted(market.edges(1000.0 + 3.5, during)) == ["region-1/g5.xlarge", "region-1/g6.xlarge"]


@pytest.mark.haproxy
def test_a_regions_haproxy_answers_its_health_as_its_rotation(tmp_path: Path) -> None:
    """The front's check of a region: `monitor-uri`, failing while no server of the region is in rotation."""
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        pytest.skip("haproxy is not installed")
    text = render_config(8000, tmp_path / "s.sock", [Server("s0", 9, 9, disabled=True)], monitor_path=HEALTH_PATH)
    assert f"monitor-uri {HEALTH_PATH}" in text and "monitor fail if { nbsrv(replicas) lt 1 }" in text
    cfg = tmp_path / "h.cfg"
    cfg.write_text(text)
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


@pytest.mark.slow
@pytest.mark.haproxy
def test_a_regional_outage_fails_no_request_and_both_regions_return_to_spot(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    mark = uuid.uuid4().hex
    env = {**os.environ, "COLUMNS": "160", "SPOTSTACK_TEST_MARK": mark, **loopcheck.ENV}
    since = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "local", "demo", "--regions", "2", "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["failed"] == 0 and r["ok"] == r["requests"] > 100, r
    o = r["outage"]
    assert o["region"] == "region-1" and o["trace_s"] >= 300, o  # at least 5 minutes of trace
    assert o["fallback_elsewhere_peak"] >= 1, o  # the other region's stand-ins served meanwhile
    assert r["back_on_spot_in_every_region"], r["regions_at_end"]
    assert all(v["spot_ready"] >= 1 and v["fallback"] == 0 for v in r["regions_at_end"].values()), r
    assert " in region-2" in out.stderr  # a stand-in launched there
    assert marked(mark) == []  # nothing it started is left running
    assert loopcheck.slow_callbacks(out.stderr, cwd / ".spotstack" / "local" / "local", since) == []
