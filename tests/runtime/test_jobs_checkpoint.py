"""The training script's checkpoint helper (runtime/jobs/checkpoint.py): a notice that comes while it is still
being set up is kept, not fatal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, signal, sys
from spotstack.runtime.jobs import checkpoint

real = checkpoint.Checkpoints.__init__

def slow_setup(self, url):
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's notice, while fsspec is still importing
    real(self, url)

checkpoint.Checkpoints.__init__ = slow_setup
ck = checkpoint.Checkpoints.from_env()
print("stop requested:", ck.stop_requested())
"""


def test_a_notice_during_the_helpers_setup_asks_the_run_to_stop(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={"SPOTSTACK_CHECKPOINT_URL": str(tmp_path / "ck"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Before the fix, SIGTERM's default action ended the run here (returncode -15), before any checkpoint.
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stop requested: True"
