"""The agent configuration of a local node: the same `AgentConfig` document a cloud node gets from cloud-init,
pointed at the node's own metadata emulator, the fleet's HAProxy slot, its disk and the fleet's peers file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RUNNING = "num_requests_running"
"""The LLM server's gauge of requests in flight (runtime/llm/server.py)."""
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
    jobs: dict[str, Any] | None = None,
    direct: bool = False,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`lb`: (HAProxy socket, server slot), or None for a node outside the load balancer (a warm pool
    instance's first boot). `disk`: where the model is placed (a warm pool disk, or a fresh one). `direct`: the
    traffic reaches the model server itself (gateways in front, as on a cloud), and the drain reads the streams in
    flight from its metrics (`num_requests_running`, as from vLLM's `vllm:num_requests_running`) instead of
    counting them in the agent's proxy. `template`: the node's configuration as the components give a cloud node of
    the spec (`FleetPlan.node`); what is written here replaces its values (`LOCAL`), the rest stays the spec's."""
    doc: dict[str, Any] = {
        "cloud": "aws",
        "node_name": name,
        "metadata": {"base_url": f"http://127.0.0.1:{ports['emulator']}", "poll_interval_s": 0.25},
        # READY once the model server has loaded the model too, not only once its files are placed.
        "readiness": {
            "host": "127.0.0.1",
            "port": ports["agent"],
            "workload_health_url": f"http://127.0.0.1:{ports['model']}/ready",
        },
        "inflight": {"metrics_url": f"http://127.0.0.1:{ports['model']}/metrics", "metrics_gauge": RUNNING}
        if direct
        else {"proxy_listen_port": ports["proxy"]},
        "workload": {"port": ports["model"], "pid_file": str(ndir / "node.pid"), "signal": "SIGUSR1"},
        "load_balancer": {"kind": "none"}
        if lb is None
        else {"kind": "haproxy", "haproxy_socket": lb[0], "haproxy_backend": "replicas", "haproxy_server": lb[1]},
        # A scale-in reaches the node as the lifecycle state Terminated (as from an ASG): it drains. There is no
        # hook to complete locally (the node process replaces the call; see node.py).
        "lifecycle": {"enabled": True, "hook_name": "local-drain", "group_name": "local"},
        "drain": {"timeout_s": drain_timeout_s, "safety_margin_s": DRAIN_MARGIN_S, "lead_s": DRAIN_LEAD_S},
        "cache": {
            "enabled": True,
            "model_url": model_url,
            "dest": str(disk),
            "store_dir": str(store_dir),
            "peer_port": ports["peer"],
            "token_file": str(workdir / "token"),
            "discovery": "file",
            "discovery_target": str(workdir / "peers"),
            # Nodes starting together split the object store's reads (the swarm); peers know it by this.
            "advertise": f"127.0.0.1:{ports['peer']}",
        },
    }
    if template is None:
        doc["cache"]["memory_limit_bytes"] = 1 << 30
    if jobs is not None and lb is not None:  # a warm pool instance's first boot takes no tasks
        doc["jobs"] = {**jobs, "workdir": str(ndir / "jobs")}
    if template is None:
        return doc
    # The local fleet plays AWS without a region: its clients go to the loopback endpoints they are given.
    base = {k: v for k, v in template.items() if k != "region"}
    return merged(base, doc)


LOCAL = {
    "node_name", "metadata", "readiness.host", "readiness.port", "readiness.workload_health_url", "inflight",
    "workload.port", "workload.pid_file", "workload.signal", "load_balancer", "lifecycle", "drain.safety_margin_s",
    "drain.lead_s", "cache.model_url", "cache.dest", "cache.store_dir", "cache.peer_port", "cache.token_file",
    "cache.discovery", "cache.discovery_target", "cache.advertise", "jobs",
}  # fmt: skip
"""What a local node's configuration changes of the spec's (dotted paths): its ports, paths and endpoints, its
HAProxy slot, the drain's time scale, the peers file, and the local queues."""


def merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top`'s values in place of its own, section by section."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
