"""`spotstack simulate --regions`: a pool's region from its trace file's zone (as each cloud names zones), and a
fleet confined to some regions replaying only their pools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spotstack.runtime.controller.traces import Trace, in_regions, region_of


@pytest.mark.parametrize(
    ("name", "region"),
    [
        ("aws-02-15-2023/us-east-1a_v100_1", "us-east-1"),
        ("us-west-2c_v100_1", "us-west-2"),
        ("gcp/us-central1-a_l4_1", "us-central1"),
        ("europe-west4-b_a100_4", "europe-west4"),
        ("ali/cn-hangzhou-h_a10_1", "cn-hangzhou"),
        ("ali/us-west-1a_a10_1", "us-west-1"),
        ("pool7", "unknown"),
    ],
)
def test_region_of_a_pool_is_its_zones_region(name: str, region: str) -> None:
    assert region_of(Trace(name, 60.0, (1,))) == region


def test_in_regions_keeps_those_regions_pools_and_names_what_exists_when_one_has_none() -> None:
    pools = [Trace(n, 60.0, (1,)) for n in ("us-east-1a_v100_1", "us-east-2a_v100_1", "us-west-2a_v100_1")]
    assert [p.name for p in in_regions(pools, ["us-east-1", "us-west-2"])] == ["us-east-1a_v100_1", "us-west-2a_v100_1"]
    with pytest.raises(ValueError, match=r"no traces in region\(s\) eu-west-1: the traces cover us-east-1, us-east-2"):
        in_regions(pools, ["eu-west-1"])


def test_the_cli_replays_only_the_named_regions(tmp_path: Path) -> None:
    for zone in ("us-east-1a", "us-east-1b", "us-west-2a"):
        (tmp_path / f"{zone}_v100_1.json").write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [1] * 300}))
    cmd = [sys.executable, "-m", "spotstack.cli.main", "simulate", "--traces", str(tmp_path), "--json"]
    out = subprocess.run([*cmd, "--regions", "us-west-2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["pools"] == ["us-west-2a_v100_1"] and doc["regions"] == ["us-west-2"]
    bad = subprocess.run([*cmd, "--regions", "eu-west-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "the traces cover us-east-1, us-west-2" in bad.stderr
