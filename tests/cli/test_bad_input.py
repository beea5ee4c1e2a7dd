"""Every command with bad values and missing files (hardening round 3, item 13): a usage error or one line saying
what and how to fix, an exit code that says so, never a traceback, and nothing started for nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT

MISSING = "/nonexistent/spotstack-test"


def cases(tmp: Path) -> list[tuple[list[str], set[int]]]:
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    odd = tmp / "odd"
    odd.mkdir(exist_ok=True)
    (odd / os.fsdecode(b"w\xff.bin")).write_bytes(b"x")
    traces = tmp / "traces"
    traces.mkdir(exist_ok=True)
    (traces / "a.json").write_text('{"metadata": {"gap_seconds": 60}, "data": [1, 0, 1]}')
    bad_trace = tmp / "bad.json"
    bad_trace.write_text('{"metadata": {"gap_seconds": NaN}, "data": [1]}')
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    pull = ["cache", "pull", str(tmp / "m"), "--dest", str(tmp / "d"), "--token-file", MISSING]
    return [
        ([*pull[:5], "--limit-gib", "nan"], {2}),
        ([*pull[:5], "--limit-gib", "-1"], {2}),
        ([*pull[:5], "--peers-file", MISSING], {2}),
        ([*pull[:5], "--connections-per-peer", "0"], {2}),
        (pull, {1, 2}),
        (["cache", "manifest", MISSING], {2}),
        (["cache", "manifest", str(empty)], {2}),
        (["cache", "manifest", str(odd)], {2}),
        (["cache", "verify", MISSING], {2}),
        (["cache", "serve", "--port", "70000"], {2}),
        (["cache", "serve", "--port", "-1"], {2}),
        (["cache", "serve", "--max-transfers", "0"], {2}),
        (["agent", "run", "--log-level", "bogus"], {2}),
        (["agent", "run", "--config", MISSING], {2}),
        (["agent", "status", "--url", down], {1}),
        (["agent", "fetch-secret", "--cloud", "aws", "--name", "x", "--metadata-url", down], {1, 2}),
        (["controller", "once", "--config", MISSING], {2}),
        (["controller", "once"], {2}),
        (["controller", "once", "--stack", "dev", "--endpoint-url", down], {1}),
        (["controller", "run", "--stack", "dev", "--interval-s", "-1"], {2}),
        (["controller", "run", "--stack", "dev", "--interval-s", "nan"], {2}),
        (["controller", "run", "--stack", "dev", "--interval-s", "0"], {2}),
        (["local", "demo", "--rps", "0"], {2}),
        (["local", "demo", "--rps", "inf"], {2}),
        (["local", "demo", "--trace", MISSING], {2}),
        (["local", "demo", "--trace", str(bad_trace)], {2}),
        (["local", "up", "--speed", "-1"], {2}),
        (["local", "up", "--trace", MISSING], {2}),
        (["local", "status", "--stack", "nope"], {2}),
        (["local", "status", "--interval", "nan"], {2}),
        (["local", "load", "--rps", "nan"], {2}),
        (["local", "load", "--duration", "0"], {2}),
        (["local", "preempt", "spot-1", "--stack", "local"], {1}),
        (["job", "submit", "--json-file", MISSING], {2}),
        (["job", "list"], {1, 2}),  # the jobs stack's local fleet is not up
        (["job", "submit", "--stack", "jobs", "--", "echo", "hi"], {1, 2}),
        (["job", "status", "t1", "--stack", "nope"], {2}),
        (["simulate", "--traces", MISSING], {2}),
        (["simulate", "--traces", str(traces), "--tick-s", "0"], {2}),
        (["simulate", "--traces", str(traces), "-n", "1000000000"], {2}),
        (["plan", "--stack", "nope"], {2}),
        (["emulator", "aws", "--port", "70000"], {2}),
        (["bake", "--cloud", "azure", "--out", str(tmp / "bake")], {2}),
    ]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTSTACK_", "ALIBABA_", "GOOGLE_"))}
    env |= {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_MAX_ATTEMPTS": "1", "AWS_CONNECT_TIMEOUT": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_every_command_refuses_bad_input_without_a_traceback(tmp_path: Path) -> None:
    # A copy of the project: a fleet another test runs from the checkout (the jobs demo) is not this test's to
    # reach (`job submit` would put a task on its queue).
    import shutil

    proj = tmp_path / "project"
    proj.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", proj / "Pulumi.yaml")
    shutil.copytree(ROOT / "stacks", proj / "stacks")
    todo = cases(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda c: run(c[0], proj), todo))
    bad = []
    for (args, codes), r in zip(todo, done, strict=True):
        said = r.stderr.strip()
        if "Traceback" in r.stdout + r.stderr or r.returncode not in codes or not said:
            bad.append(f"spotstack {' '.join(args)} -> {r.returncode}: {(r.stderr or r.stdout)[-600:]}")
        # One line of error (click's usage errors: its box, which may wrap; ours: one line).
        elif "Usage:" not in said and len([ln for ln in said.splitlines() if ln.startswith("error")]) != 1:
            bad.append(f"spotstack {' '.join(args)}: not one error line: {said[-600:]}")
    assert not bad, "\n".join(bad)
    assert not (proj / ".spotstack" / "local" / "local" / "control.json").exists()  # no fleet was started


def test_an_unforeseen_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """The console script's last guard: an exception no command foresaw (here planted in the manifest builder)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x")
    script = (
        "import sys, spotstack.runtime.cache.manifest as m\n"
        "def boom(*a, **k): raise RuntimeError('planted\\nacross lines')\n"
        "m.build_manifest = boom\n"
        "from spotstack.cli.main import main\n"
        f"sys.argv = ['spotstack', 'cache', 'manifest', {str(tmp_path / 'm')!r}]\n"
        "main()\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr, quiet.stderr
    lines = [ln for ln in quiet.stderr.splitlines() if ln.startswith("error")]  # after the progress bar
    assert len(lines) == 1 and "RuntimeError: planted across lines" in lines[0] and "SPOTSTACK_DEBUG=1" in lines[0]
    env = {**os.environ, "SPOTSTACK_DEBUG": "1"}
    loud = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "boom" in loud.stderr


def test_commands_without_project_suggest_only_what_they_have(tmp_path: Path) -> None:
    local = run(["local", "status"], tmp_path)
    assert local.returncode == 2 and "no Pulumi.yaml" in local.stderr and "--project" not in local.stderr
    plan = run(["plan"], tmp_path)
    assert plan.returncode == 2 and "--project" in plan.stderr


def test_status_names_what_a_killed_fleet_left(tmp_path: Path) -> None:
    from spotstack.cli.local_control import _leftovers
    from spotstack.runtime.local.reaper import Ledger

    shm = tmp_path / "shm"
    (shm / "node" / "store").mkdir(parents=True)
    (shm / "node" / "store" / "w.bin").write_bytes(b"x" * 3_000_000)
    Ledger(tmp_path).record_dir(shm)
    said = _leftovers(tmp_path, "local")
    assert "3 MB in /dev/shm" in said and "spotstack local down --stack local" in said
    assert _leftovers(tmp_path / "other", "local") == ""
