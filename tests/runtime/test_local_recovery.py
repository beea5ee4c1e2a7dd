"""The local fleet as the adversarial run found it (hardening issue, items 15-17): replacements on reused HAProxy
slots get traffic, a SIGKILLed supervisor leaves nothing behind once `down` runs, and a second `up` is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spotstack.runtime.local.reaper import Ledger
from spotstack.runtime.local.reaper import pid_alive as alive
from tests.runtime.localkit import project
from tests.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.haproxy]


def local(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "local", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def status(cwd: Path) -> dict[str, Any]:
    """The supervisor's snapshot from its control API, in-process: tests poll it many times a second, and a CLI
    process per poll (`local status --json`, checked once below) costs each a second of CPU on a 2-core machine."""
    from spotstack.cli.local_control import call

    ctl = json.loads((cwd / ".spotstack" / "local" / "local" / "control.json").read_text())
    return call(ctl, "GET", "/status")


def start_load(cwd: Path, rps: int) -> subprocess.Popen[str]:
    """`local load` with a long cap (the test ends the window with SIGINT, which still prints the report), returned
    once its window is open (the fleet's counters read): a preemption from then on counts in its report."""
    load = subprocess.Popen(
        [sys.executable, "-m", "spotstack.cli.main", "local", "load", "--rps", str(rps), "--duration", "600", "--json"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert load.stderr is not None
    line = load.stderr.readline()
    if not line.startswith("load: "):
        load.kill()
        raise AssertionError(line + load.stderr.read()[-2000:])
    return load


def test_preemptions_on_a_slow_market_lose_nothing_and_a_killed_supervisor_is_reaped(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    workdir = cwd / ".spotstack" / "local" / "local"
    up = local(cwd, "up", "--speed", "0.001")
    assert up.returncode == 0, up.stderr[-3000:]
    supervisor = int(json.loads((workdir / "control.json").read_text())["pid"])
    load: subprocess.Popen[str] | None = None
    try:
        second = local(cwd, "up", "--speed", "0.001", timeout=60)
        assert second.returncode == 1 and "already running" in second.stderr, second.stderr

        load = start_load(cwd, rps=10)  # until the last preemption is served
        cli = local(cwd, "status", "--json", timeout=30)  # the command users run; the polls below skip the CLI
        assert cli.returncode == 0 and all({"name", "role", "state"} <= set(n) for n in json.loads(cli.stdout)["nodes"])
        preempted: list[str] = []
        # Four, the last without a notice: the first replacement takes the fleet's free slot (5 of 6 are filled),
        # the next three land in slots that retired nodes left.
        while (k := len(preempted)) < 4:
            # One at a time: the next preemption waits until the last victim has left and the fleet has a READY
            # replica that is not the on-demand base (replacements land in slots retired nodes left).
            def victim() -> str | None:
                nodes = status(cwd)["nodes"]
                if set(preempted) & {n["name"] for n in nodes}:
                    return None
                ready = [n for n in nodes if n["state"] == "READY"]
                spot = [n["name"] for n in ready if n["role"] != "base"]
                return spot[0] if len(ready) >= 3 and spot else None

            wait_until(
                lambda: victim() is not None, timeout=120, what="the last victim gone and a READY replica", every=0.2
            )
            name = victim()
            assert name is not None
            args = ["preempt", name, "--json"] + (["--no-notice"] if k == 3 else [])
            r = local(cwd, *args, timeout=30)
            assert r.returncode == 0, r.stderr
            reply = json.loads(r.stdout)
            assert reply["preempted"] == name and reply["notice_s"] == (0 if k == 3 else 10), reply
            if reply["leaving"]:
                continue  # the controller scaled it in after it was chosen: choose again
            preempted.append(name)
            assert load.poll() is None, "every preemption must fall inside the load window"

        # The window runs on until the killed node is gone and the fleet is back at three READY replicas.
        def replaced() -> bool:
            nodes = status(cwd)["nodes"]
            return name not in {n["name"] for n in nodes} and sum(n["state"] == "READY" for n in nodes) >= 3

        wait_until(replaced, timeout=120, what="the killed node replaced", every=0.2)
        load.send_signal(signal.SIGINT)
        out, errs = load.communicate(timeout=120)
        assert load.returncode == 0, errs[-2000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["failed"] == 0 and report["ok"] == report["requests"] > 200, report
        assert report["preemptions"] == 4 and report["killed_without_notice"] == 1, report

        bad = local(cwd, "preempt", "spot-999", timeout=30)
        assert bad.returncode == 1 and "no replica named 'spot-999'" in bad.stderr and "{" not in bad.stderr

        children = Ledger(workdir).alive()
        assert len(children) >= 5  # moto, HAProxy and the nodes
        shm = Path(f"/dev/shm/spotstack-local-{supervisor}")
        assert shm.is_dir() and shm in Ledger(workdir).dirs()
        os.kill(supervisor, signal.SIGKILL)
        wait_until(lambda: not alive(supervisor), what="the supervisor to die")
        # Its children die with it (parent-death signal); `status` says so in words.
        wait_until(lambda: not any(alive(c.pid) for c in children), what="the children to follow their supervisor")
        st = local(cwd, "status", timeout=30)
        assert st.returncode == 1 and "died" in st.stderr and "Traceback" not in st.stderr
    finally:
        if load is not None and load.poll() is None:  # a failed wait: the load must not outlive the test
            load.kill()
        down = local(cwd, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert not (workdir / "control.json").exists()
    assert Ledger(workdir).alive() == []
    assert not shm.exists()  # the killed supervisor's memory-backed caches are freed too
    again = local(cwd, "down", timeout=60)
    assert again.returncode == 0 and "was running" in again.stdout
