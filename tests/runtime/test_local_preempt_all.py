"""Every replica of a local fleet preempted at once, twice, under 10 requests a second (hardening round 3, item 9):
no request fails. Before the hold server, 42 of 480 failed with HAProxy's "503 no server available" in the 2-4 s
windows between the noticed nodes leaving rotation and their replacements becoming READY."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.test_local_recovery import local, project, start_load, status
from tests.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.haproxy]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fleet for the file (its start and stop are ~15 s): the token checks first, which change nothing."""
    cwd = project(tmp_path_factory.mktemp("fleet"))
    up = local(cwd, "up", "--speed", "0.001")  # a market that preempts nothing by itself: ours are the only ones
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        yield cwd
    finally:
        down = local(cwd, "down", timeout=120)
    assert down.returncode == 0, down.stderr


def test_the_fleet_token_is_private_and_the_control_api_needs_it(fleet: Path) -> None:
    """Item 11: the token file is 0600 and /status, /preempt and /down answer 401 without it."""
    import urllib.error
    import urllib.request

    workdir = fleet / ".spotstack" / "local" / "local"
    assert (workdir / "token").stat().st_mode & 0o777 == 0o600
    assert (workdir / "control.json").stat().st_mode & 0o777 == 0o600
    url = json.loads((workdir / "control.json").read_text())["url"]
    for method, path in (("GET", "/status"), ("POST", "/preempt/spot"), ("POST", "/down")):
        for auth in (None, "Bearer wrong-token", "Bearer \udcff"):
            headers = {"Authorization": auth} if auth else {}
            req = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
            for k, v in headers.items():
                req.add_header(k, v.encode("utf-8", "surrogateescape").decode("latin-1"))
            try:
                urllib.request.urlopen(req, timeout=10).close()
                raise AssertionError(f"{method} {path} with {auth!r} was accepted")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401, (method, path, auth, exc.code)
    cli = local(fleet, "status", "--json", timeout=30)
    assert cli.returncode == 0 and any(n["state"] == "READY" for n in json.loads(cli.stdout)["nodes"])  # token


def test_preempting_every_replica_at_once_fails_no_request(fleet: Path) -> None:
    cwd = fleet
    load = start_load(cwd, rps=10)  # until the second round's replacements serve
    try:

        def ready() -> list[str]:
            return [n["name"] for n in status(cwd)["nodes"] if n["state"] == "READY"]

        preempted = 0
        for _ in range(2):
            wait_until(lambda: len(ready()) >= 3, timeout=120, what="the fleet back at 3 READY replicas", every=0.2)
            names = ready()
            preempts = [
                subprocess.Popen(
                    [sys.executable, "-m", "spotstack.cli.main", "local", "preempt", n],
                    cwd=cwd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for n in names
            ]
            said = [p.communicate(timeout=60)[0].decode() for p in preempts]
            assert all(p.returncode == 0 for p in preempts), said
            # A fallback the controller scaled in between the READY list and the preemption was already leaving.
            now = [f"preempted {n}: it has 10 s of notice" in out for n, out in zip(names, said, strict=True)]
            assert all(now[i] or "was already leaving" in out for i, out in enumerate(said)), said
            preempted += sum(now)
            assert load.poll() is None, "both rounds must fall inside the load window"
            # The next round starts once every noticed node is gone (the condition, not a time).
            wait_until(
                lambda gone=set(names): not gone & {n["name"] for n in status(cwd)["nodes"]},
                timeout=120,
                what="the preempted nodes gone",
                every=0.2,
            )
        wait_until(lambda: len(ready()) >= 3, timeout=120, what="the fleet back at 3 READY replicas", every=0.2)
        load.send_signal(signal.SIGINT)
        out, errs = load.communicate(timeout=120)
        assert load.returncode == 0, errs[-2000:]
    finally:
        if load.poll() is None:  # a failed wait: the load must not outlive the test
            load.kill()
    report = json.loads(out.strip().splitlines()[-1])
    # Two rounds, each at least the 10 s notice: 200+ requests, some sent while no replica was READY.
    assert report["failed"] == 0 and report["ok"] == report["requests"] >= 150, report
    assert report["preemptions"] == preempted >= 4, report
