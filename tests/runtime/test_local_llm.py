"""The LLM fleet on this machine: `spotstack local demo --llm` streams through the gateways while spot nodes are
taken with notice, with a 30 s notice and without notice; every stream must end whole and equal its reference."""

from __future__ import annotations

import json
import os
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


def test_llm_demo_continues_every_stream_through_every_kind_of_preemption(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    mark = uuid.uuid4().hex
    env = {**os.environ, "COLUMNS": "160", "SPOTSTACK_TEST_MARK": mark, **loopcheck.ENV}
    since = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "local", "demo", "--llm", "--json",
         "--concurrency", "12"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["failed"] == 0 and r["completed"] == r["streams"] >= 20, r
    assert r["duplicated_tokens"] == 0 and r["missing_tokens"] == 0 and r["byte_identical"] == r["streams"], r
    p = r["preemptions"]
    assert p == {"total": 8, "notice": 3, "kill": 2, "gcp-30s": 3}, r  # each as soon as the fleet healed
    assert r["continued"] >= 3, r  # streams did cross replicas (cut, or moved ahead of a notice)
    assert marked(mark) == []  # nothing it started is left running
    # No process of the fleet (supervisor, nodes, gateways) held its event loop with a blocking call.
    assert loopcheck.slow_callbacks(out.stderr, cwd / ".spotstack" / "local" / "llm", since) == []
