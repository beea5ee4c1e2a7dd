"""The whole system on this machine: `spotstack local demo` under load through preemptions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import loopcheck
from tests.runtime.localkit import project
from tests.waits import marked

pytestmark = [pytest.mark.slow, pytest.mark.haproxy]


def test_demo_loses_no_request_and_loads_replacements_from_peers(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    mark = uuid.uuid4().hex
    env = {**os.environ, "COLUMNS": "160", "SPOTSTACK_TEST_MARK": mark, **loopcheck.ENV}
    since = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "local", "demo", "--json"],
        cwd=cwd,
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
    # Noticed nodes served until their replacements did (the notice window, and the controller's release when a
    # replacement served before the window ended). How long the fleet sat below its target, and whether a release
    # came before a window ran out, depend on how busy the machine is (with three other test workers on 2 cores,
    # 12 s below target, and once no release at all), so the test asserts what is exact: no request failed (above).
    # The release itself is tested where its timing is the test's own (test_agent_e2e.py).
    # The first nodes loaded the model from the object store between them (none had it); every node launched after
    # the fleet first was READY (a replacement) loaded it from peers, or from its own disk (a warm start). How many
    # there are depends on the market's timing, so the test does not weigh the peers' bytes against the origin's.
    events = out.stderr[out.stderr.rindex("fleet READY: the spot market starts") :]  # the closing event list
    launched = set(re.findall(r" launch (\S+) ", events))
    loads = re.findall(r"(\S+) READY \((\d+) MB from peers, (\d+) MB from origin, (\d+) MB already on disk\)", events)
    later = [(name, *mb) for name, *mb in loads if name in launched]
    assert later and r["bytes_from_origin"] > 0, out.stderr[-3000:]
    assert all(origin == "0" and int(peers) + int(disk) > 0 for _, peers, origin, disk in later), later
    assert r["bytes_from_peers"] > 0, r
    assert r["cost_usd"] < r["cost_all_on_demand_usd"], r
    assert "READY" in out.stderr and "scale in fall-" in out.stderr  # fallback returned to spot
    assert marked(mark) == []  # nothing it started is left running
    # No process of the fleet (supervisor, nodes) held its event loop with a blocking call.
    assert loopcheck.slow_callbacks(out.stderr, cwd / ".spotstack" / "local" / "local", since) == []
