"""The whole system on this machine: `spotstack local demo` under load through preemptions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.haproxy]


def our_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    marks = ("spotstack.runtime.local.node", "moto.server", "moto_server")
    return [a for a in out if any(m in a for m in marks) or ("haproxy" in a and ".spotstack/local" in a)]


def test_demo_loses_no_request_and_loads_replacements_from_peers() -> None:
    before = our_processes()
    env = {**os.environ, "COLUMNS": "160"}
    out = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "local", "demo", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["failed"] == 0 and r["ok"] == r["requests"] > 100, r
    assert r["preemptions"] >= 5 and r["killed_without_notice"] == 1, r
    assert r["fallbacks"] >= 1, r
    # The warm pool (stacks/Pulumi.local.yaml: size 2) booted once, stopped with the model on disk, and
    # fallback nodes started from it without fetching.
    assert r["warm_starts"] >= 1 and r["bytes_on_disk"] > 0, r
    # Noticed nodes served until their replacements did (the notice window and the controller's release): the
    # fleet never fell below its target through a notice (one tick of slack for a busy machine).
    assert r["below_target_s"] - r["below_target_unnoticed_s"] <= 1.0, r
    assert "release spot-" in out.stderr, out.stderr[-3000:]
    assert r["bytes_from_peers"] > r["bytes_from_origin"] > 0, r  # replacements came from peers
    assert r["cost_usd"] < r["cost_all_on_demand_usd"], r
    assert "READY" in out.stderr and "scale in fall-" in out.stderr  # fallback returned to spot
    assert our_processes() == before  # nothing left running
