"""A local node boots behind the serving nodes and serves beside them (runtime/local/priority.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from spotstack.runtime.local.priority import BOOT_NICE, node_preexec

NICE_NOW = "import os; print(os.nice(0))"
SERVE = (
    "import os; from spotstack.runtime.local.priority import serving_priority; "
    "ok = serving_priority(); print(ok, os.nice(0))"
)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=node_preexec, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_node_boots_at_the_boot_priority() -> None:
    assert _run(NICE_NOW) == str(os.nice(0) + BOOT_NICE)


def test_a_loaded_node_goes_back_to_the_serving_priority_where_it_may() -> None:
    # Lowering a nice value needs CAP_SYS_NICE (root has it): without it the node keeps the boot priority.
    if os.geteuid() == 0:
        assert _run(SERVE) == "True 0"
    else:
        assert _run(SERVE) == f"False {os.nice(0) + BOOT_NICE}"
