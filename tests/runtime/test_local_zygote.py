"""The local fleet's node zygote (`runtime/local/zygote.py`): nodes are forks of one process that imported what a
node runs; the supervisor follows each through a pidfd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from spotstack.runtime.local.zygote import NodeProcess, Zygote


def test_a_node_that_fails_is_seen_to_end_and_the_zygote_forks_the_next(tmp_path: Path) -> None:
    z = Zygote(dict(os.environ), tmp_path / "zygote.log")
    pid = z.start()
    try:
        assert pid == z.pid
        first = z.fork(tmp_path / "missing.json")  # node.main cannot read it: the node ends at once
        assert first.pid != z.pid
        assert first.exited(timeout_s=30)
        os.kill(pid, signal.SIGINT)  # a Ctrl-C at the supervisor's terminal reaches its group: the zygote stays
        second = z.fork(tmp_path / "missing-too.json")
        assert second.pid not in (first.pid, z.pid) and second.exited(timeout_s=30)
    finally:
        z.stop()
    assert z._proc is not None and z._proc.returncode == 0  # stdin closed: it left on its own


def test_a_pidfd_follows_a_process_the_supervisor_did_not_start() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        followed = NodeProcess(proc.pid)
        assert not followed.exited()
        proc.kill()
        assert followed.exited(timeout_s=30)
    finally:
        proc.kill()
        proc.wait()
