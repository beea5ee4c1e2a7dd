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


def test_every_botocore_session_a_node_makes_shares_the_zygotes_parsed_data() -> None:
    """s3fs (aiobotocore) and boto3 each make sessions of their own: both get the loader the zygote filled, so no
    node parses S3's service model again. In a child interpreter: the test process's botocore stays as it is."""
    code = """
import aiobotocore.session, boto3, botocore.session
from spotstack.runtime.local.zygote import WARM_SERVICES, _share_botocore_data
_share_botocore_data()
shared = botocore.session.get_session().get_component("data_loader")
assert aiobotocore.session.AioSession().get_component("data_loader") is shared
assert boto3.session.Session()._session.get_component("data_loader") is shared
assert botocore.session.Session().get_component("data_loader") is shared
cached = {key[1] for key in shared._cache if key[0] == "load_service_model"}
assert set(WARM_SERVICES) <= cached, cached
assert botocore.session.create_loader("/tmp") is not shared  # a session given its own data path keeps it
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
