"""`spotstack plan` as a user runs it: in a subprocess, offline, against real stack files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, base_fleet


def spotstack(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    # Offline: no credentials, and any proxy would be a way out; the plan must not need either.
    for k in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HTTPS_PROXY", "HTTP_PROXY"):
        env.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def dev_text() -> subprocess.CompletedProcess[str]:
    """`plan --stack dev` as text, once for the file's tests (a plan is seconds of CPU)."""
    return spotstack("plan", "--stack", "dev")


@pytest.fixture(scope="module")
def dev_json() -> subprocess.CompletedProcess[str]:
    return spotstack("plan", "--stack", "dev", "--json")


@pytest.mark.slow
def test_plan_dev_prints_tree_and_costs(dev_text: subprocess.CompletedProcess[str]) -> None:
    out = dev_text
    assert out.returncode == 0, out.stderr
    assert "spotstack:index:AwsGpuFleet llm" in out.stdout
    assert "aws:autoscaling/group:Group llm-asg" in out.stdout
    assert "all on-demand" in out.stdout and "/month" in out.stdout
    assert "requests per target per minute" in out.stdout  # a target says what it counts


@pytest.mark.slow
def test_plan_text_and_json_count_the_same_resources_and_do_not_wrap_when_piped(
    dev_text: subprocess.CompletedProcess[str], dev_json: subprocess.CompletedProcess[str]
) -> None:
    env_free = dev_text
    doc = json.loads(dev_json.stdout)
    assert f"{len(doc['resources'])} resources" in env_free.stdout
    # Piped output keeps every resource line whole, however long.
    assert "aws:autoscaling/group:Group llm-fallback-asg" in env_free.stdout


@pytest.mark.slow
def test_plan_json_is_machine_readable(dev_json: subprocess.CompletedProcess[str]) -> None:
    out = dev_json
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["stack"] == "dev"
    types = {r["type"] for r in doc["resources"]}
    assert {
        "aws:autoscaling/group:Group",
        "aws:ec2/launchTemplate:LaunchTemplate",
        "aws:iam/rolePolicy:RolePolicy",
    } <= types
    (cost,) = doc["costs"]
    h = cost["hourly"]
    assert h["all_spot"] < h["expected"] < h["all_on_demand"]
    assert cost["monthly"]["all_on_demand"] == round(h["all_on_demand"] * 730, 2)


def write_project(tmp: Path, fleets: object) -> Path:
    (tmp / "Pulumi.yaml").write_text("name: spotstack\nruntime: python\nstackConfigDir: stacks\n")
    (tmp / "__main__.py").write_text((ROOT / "__main__.py").read_text())  # the built-in program
    (tmp / "stacks").mkdir()
    (tmp / "stacks" / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": {"spotstack:fleets": fleets}}))
    return tmp


def test_bad_config_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    f = base_fleet()
    f["instances"][1]["spot"]["bid"] = 0
    f["capacity"]["desired"] = 40
    out = spotstack("plan", "--stack", "bad", "--project", str(write_project(tmp_path, [f])))
    assert out.returncode == 2
    assert "fleets[0].instances[1].spot.bid: must be > 0 and <= 1" in out.stderr
    assert "fleets[0].capacity.desired" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_missing_stack_names_the_stacks_there() -> None:
    out = spotstack("plan", "--stack", "nope")
    assert out.returncode == 2
    assert "Pulumi.nope.yaml" in out.stderr and "dev" in out.stderr


def test_help_explains() -> None:
    out = spotstack("plan", "--help")
    assert out.returncode == 0 and "offline" in out.stdout and "--json" in out.stdout


def test_local_stack_plans_nothing_and_says_why() -> None:
    out = spotstack("plan", "--stack", "local", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["resources"] == [] and any("local fleet" in w for w in doc["warnings"])


@pytest.mark.slow
def test_plan_leaves_no_event_loop_for_the_garbage_collector() -> None:
    """Left open, Pulumi's loop was finalised at exit after its self-pipe, printing
    "Exception ignored in BaseEventLoop.__del__ ... Invalid file descriptor: -1" on ~3 in 80 plans."""
    script = (
        "import asyncio, atexit, warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from spotstack.cli.main import app\n"
        "try:\n"
        "    app(['plan', '--stack', 'dev', '--json'], standalone_mode=False)\n"
        "finally:\n"
        "    loop = asyncio.get_event_loop()\n"
        "    atexit._run_exitfuncs()\n"
        "    print('closed' if loop.is_closed() else 'open')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("closed")
    assert "Exception ignored" not in out.stderr
