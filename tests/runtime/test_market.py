"""The spot market replay: trace files, time compression, and the edges that preempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotstack.runtime.local.market import Market, Trace, load_trace, synthetic

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"


def test_trace_replay_with_time_compression() -> None:
    m = Market({"g6": Trace(60.0, (1, 0, 1))}, speed=60.0, started=1000.0)
    assert [m.obtainable("g6", 1000.0 + s) for s in (0.5, 1.5, 2.5, 99)] == [True, False, True, True]
    assert m.obtainable("unlisted", 1001.5) is True
    assert m.edges(1000.5, 1001.5) == ["g6"] and m.edges(1001.5, 1002.5) == []


def test_a_market_held_at_its_start_takes_nothing_until_let_go() -> None:
    """The regions scenario holds the clock at the start until the fleet settles: however long that takes, no pool
    falls while held, and the outage comes its full lead after the last hold."""
    m = Market({"g6": Trace(60.0, (1, 1, 0))}, speed=60.0, started=1000.0)
    prev = 1000.0
    for now in (1001.0, 1002.0, 1003.0, 1004.0):  # four wall seconds: past the outage, had it not been held
        m.restart(now - 0.5)
        assert m.edges(prev, now) == [] and m.obtainable("g6", now)
        prev = now
    assert m.edges(prev, 1004.0 - 0.5 + 1.9) == [] and m.edges(prev, 1004.0 - 0.5 + 2.1) == ["g6"]


def test_synthetic_pools_fail_apart_then_together() -> None:
    a, b = synthetic(0), synthetic(2)
    short_a = [i for i, x in enumerate(a.data[:20]) if x == 0]
    short_b = [i for i, x in enumerate(b.data[:20]) if x == 0]
    assert short_a and short_b and not set(short_a) & set(short_b)
    assert all(a.data[i] == b.data[i] == 0 for i in range(24, 32))  # the shared outage


def test_bad_trace_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"data": [1, 0]}))
    with pytest.raises(ValueError, match="not a spot trace"):
        load_trace(p)
    p.write_text(json.dumps({"metadata": {"gap_seconds": 10}, "data": [1, 2]}))
    with pytest.raises(ValueError, match="list of 0 and 1"):
        load_trace(p)
    p.write_text('{"metadata": {"gap_seconds": NaN}, "data": [1]}')
    with pytest.raises(ValueError, match="gap_seconds must be from 1 to 86400"):
        load_trace(p)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/traces is not beside this checkout")
def test_real_aws_trace_loads() -> None:
    t = load_trace(SHARED / "preemption" / "1-node" / "aws-04-22-2023" / "us-west-2b_v100_1.json")
    assert t.gap_s == 32 and len(t.data) > 10000 and 0 < sum(t.data) < len(t.data)
