"""One node of a local fleet as its supervisor tracks it (role, type, HAProxy slot, ports, process, state), and how
its process starts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotstack.runtime.controller.decide import Role, State
from spotstack.runtime.files import write_atomic
from spotstack.runtime.local.zygote import NodeProcess, Zygote


@dataclass
class Node:
    name: str
    role: Role
    type: str
    slot: str
    ports: dict[str, int]
    proc: NodeProcess
    launched_at: float
    state: State = "provisioning"
    ready_since: float | None = None
    kill_at: float | None = None
    preempted: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    ended_at: float | None = None
    disk: Path | None = None
    """Where its model is placed: kept when a fallback node goes back to the warm pool (stopped)."""
    warm: bool = False
    """Started from the warm pool: its disk already held the model."""
    seen_notice: bool = False
    """Its agent has seen its notice (and, within the window, serves on until released)."""
    tasks: list[str] = field(default_factory=list)
    """Ids of the queue tasks its worker runs now."""
    busy: bool = False
    """Its queue worker is running tasks (from the agent's /status): a scale-in ends idle nodes first."""
    released: bool = False
    """The controller told it (POST /release) that its replacement serves: leave rotation now."""
    posting: bool = False
    """A notice or scale-in is being posted to it right now (`LocalFleet._post`)."""
    region: str = ""
    """Its region, in a fleet across regions."""
    owed: str | None = None
    """What the cloud has posted for it that its metadata emulator has not taken yet ("notice", "terminated"): a
    node still starting gets it once its emulator listens, as a late-booting instance still finds its notice."""

    @property
    def market(self) -> str:
        return "spot" if self.role == "spot" else "on_demand"


def spawn_node(cfg_path: Path, spec: dict[str, Any], zygote: Zygote) -> NodeProcess:
    """Write a node's config (`runtime/local/node.py` reads it) and start its process: a fork of the fleet's zygote,
    in a session of its own (the supervisor ends it with its group), dying with the supervisor and booting behind
    the serving nodes."""
    cfg_path.write_text(json.dumps(spec))
    return zygote.fork(cfg_path)


def write_peers(workdir: Path, nodes: Iterable[Node], starting: Iterable[int] = ()) -> None:
    """The peer cache's list of nodes (`<workdir>/peers`). Nodes still starting are listed too: those that pull
    together form a swarm (each reads its share of the model from the object store and the rest from the others).
    `starting`: peer ports of nodes about to be forked. Written whole or not at all: a node reads it at any time."""
    ports = [n.ports["peer"] for n in nodes if n.state in ("provisioning", "loading", "ready", "draining")]
    write_atomic(workdir / "peers", "".join(f"127.0.0.1:{p}\n" for p in [*ports, *starting]) or "\n")
