"""First boot's apt-get waits for the dpkg lock and retries (the deployability issue, item 9): unattended-upgrades
holds the lock in a fresh Ubuntu VM's first minutes, and a plain apt-get then failed the GPU set-up step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from spotstack.runtime.bootstrap import APT, ENSURE_VENV, GPU_SETUP

STUB = """#!/bin/sh
n=$(cat "$CALLS" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$CALLS"
echo "$@" >> "$ARGS"
[ "$n" -gt "$FAIL_FIRST" ]
"""


def run(tmp: Path, fail_first: int) -> tuple[int, list[str]]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "apt-get").write_text(STUB)
    (bin_dir / "apt-get").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(tmp / "calls"),
        "ARGS": str(tmp / "args"),
        "FAIL_FIRST": str(fail_first),
        "SPOTSTACK_APT_PAUSE_S": "0",
    }
    r = subprocess.run(["sh", "-c", f"{APT}; apt_retry install -y docker.io"], env=env, timeout=60)
    return r.returncode, (tmp / "args").read_text().splitlines()


def test_apt_waits_for_the_lock_and_retries_until_it_works(tmp_path: Path) -> None:
    code, calls = run(tmp_path, fail_first=2)  # the lock held, then a mirror hiccup
    assert code == 0 and len(calls) == 3
    assert all("-o DPkg::Lock::Timeout=300" in c and c.endswith("install -y docker.io") for c in calls)


def test_apt_gives_up_after_five_tries(tmp_path: Path) -> None:
    code, calls = run(tmp_path, fail_first=99)
    assert code != 0 and len(calls) == 5


def test_every_first_boot_apt_call_goes_through_the_retry() -> None:
    for script in (ENSURE_VENV, GPU_SETUP):
        body = script.replace(APT, "")
        assert "apt-get" not in body and "apt_retry" in body


def test_the_workload_waits_for_the_whole_model(tmp_path: Path) -> None:
    """The unit's first step returns only once the agent's record of the placed model is there (and not empty)."""
    from spotstack.runtime.bootstrap import PLACED_RECORD, Workload, workload_unit
    from spotstack.runtime.cache.place import PLACED

    assert PLACED_RECORD == PLACED
    unit = workload_unit(Workload("img", 8080, model_dir=str(tmp_path), wait_for_model=True))
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStartPre="))
    import shlex

    script = shlex.split(line.split("=", 1)[1])[-1]
    waiting = subprocess.Popen(["sh", "-c", script])
    try:
        assert waiting.poll() is None
        (tmp_path / PLACED).write_text("")  # being written: not yet
        assert waiting.poll() is None
        (tmp_path / PLACED).write_text('{"files": {}}')
        assert waiting.wait(10) == 0
    finally:
        waiting.kill()
    assert "ExecStartPre" not in workload_unit(Workload("img", 8080))
