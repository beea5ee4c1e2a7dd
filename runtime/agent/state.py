"""What the agent knows about itself, shown by /status and `spotstack agent status`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class AgentState:
    cloud: str
    node: str
    state: str = "starting"
    started_at: float = field(default_factory=time.time)
    dry_run: bool = False
    notices: list[dict[str, Any]] = field(default_factory=list)
    drain: dict[str, Any] | None = None
    inflight: int = 0
    streams_cut: int = 0
    """Answers the proxy cut mid-stream during the drain (the workload ended before they did)."""
    model: dict[str, Any] | None = None
    """The model pull: state (loading/ready/failed), percent, bytes from peers and origin."""

    launch_hook: str | None = None
    """AWS warm pool: the launching hook's completion (None: no hook, or not READY yet)."""
    jobs: dict[str, Any] | None = None
    """The queue worker: accepting, running task ids, counts by outcome, scale-in protection."""
    blocked: str | None = None
    """Why the node must not take traffic although nothing is draining (e.g. the cache has no token yet)."""

    @property
    def model_pending(self) -> bool:
        return self.model is not None and self.model.get("state") != "ready"

    @property
    def draining(self) -> bool:
        return self.state in ("draining", "drained")

    @property
    def leaving_at(self) -> float | None:
        """When this node is due to go: the earliest deadline of a notice it acts on and that was not withdrawn
        since (the gateway moves long streams off the node ahead of it). None without such a notice."""
        live: dict[str, float] = {}
        for n in self.notices:
            if n.get("verdict") in ("drain", "defer") and n.get("deadline"):
                live[str(n.get("detail"))] = float(n["deadline"])
            elif n.get("verdict") == "withdrawn":
                live.pop(str(n.get("detail")), None)
        return min(live.values()) if live else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
