"""The agent configuration of a local node: the same `AgentConfig` document a cloud node gets from cloud-init,
pointed at the node's own metadata emulator, the fleet's HAProxy slot, its disk and the fleet's peers file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DRAIN_MARGIN_S = 0.5
"""The local agents' drain safety margin."""
DRAIN_LEAD_S = 1.0
"""The local agents' load-balancer lead: how long before the drain a noticed node leaves rotation."""


def agent_config(
    name: str,
    ports: dict[str, int],
    ndir: Path,
    disk: Path,
    store_dir: Path,
    *,
    lb: tuple[str, str] | None,
    drain_timeout_s: float,
    model_url: str,
    workdir: Path,
) -> dict[str, Any]:
    """`lb`: (HAProxy socket, server slot), or None for a node outside the load balancer (a warm pool
    instance's first boot). `disk`: where the model is placed (a warm pool disk, or a fresh one)."""
    return {
        "cloud": "aws",
        "node_name": name,
        "metadata": {"base_url": f"http://127.0.0.1:{ports['emulator']}", "poll_interval_s": 0.25},
        "readiness": {"host": "127.0.0.1", "port": ports["agent"]},
        "inflight": {"proxy_listen_port": ports["proxy"]},
        "workload": {"port": ports["model"], "pid_file": str(ndir / "node.pid"), "signal": "SIGUSR1"},
        "load_balancer": {"kind": "none"}
        if lb is None
        else {"kind": "haproxy", "haproxy_socket": lb[0], "haproxy_backend": "replicas", "haproxy_server": lb[1]},
        "drain": {"timeout_s": drain_timeout_s, "safety_margin_s": DRAIN_MARGIN_S, "lead_s": DRAIN_LEAD_S},
        "cache": {
            "enabled": True,
            "model_url": model_url,
            "dest": str(disk),
            "store_dir": str(store_dir),
            "memory_limit_bytes": 1 << 30,
            "peer_port": ports["peer"],
            "token_file": str(workdir / "token"),
            "discovery": "file",
            "discovery_target": str(workdir / "peers"),
            # Nodes starting together split the object store's reads (the swarm); peers know it by this.
            "advertise": f"127.0.0.1:{ports['peer']}",
        },
    }
