"""The CPU priority of a local node: it boots behind the serving nodes and serves beside them.

On a cloud a new machine boots on its own CPUs. Here it shares the serving nodes' cores, and its imports and model
load (about a CPU-second) would slow the very replicas that take over its predecessor's streams, at the moment
they take them over.
"""

from __future__ import annotations

import contextlib
import logging
import os

from spotstack.runtime.local.reaper import die_with_parent

log = logging.getLogger("spotstack.node")

BOOT_NICE = 10


def node_preexec() -> None:
    """First thing in a node process (`zygote.py`): it dies with its parent (even a SIGKILLed one) and boots at
    `BOOT_NICE` (any user may raise its own nice value)."""
    die_with_parent()
    with contextlib.suppress(OSError, AttributeError):
        os.nice(BOOT_NICE)


def serving_priority() -> bool:
    """Back to the serving nodes' priority once the model is loaded. Lowering a nice value needs CAP_SYS_NICE:
    without it the node serves at the boot priority (every node alike, behind the gateways and the load balancer)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
        return True
    except (OSError, AttributeError):
        log.info("serving at nice %d: lowering it needs CAP_SYS_NICE", BOOT_NICE)
        return False
