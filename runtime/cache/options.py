"""What a pull is told (`PullOptions`) and what it tells (`Progress` as it goes, `PullResult` at the end)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from spotstack.runtime.cache import schedule
from spotstack.runtime.cache.manifest import Manifest


@dataclass
class Progress:
    total: int
    done: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    refetched: int = 0
    started: float = field(default_factory=time.monotonic)
    last_chunk: tuple[str, int, float] | None = None
    """The chunk just completed: its source, bytes and seconds from request to verified (for metrics)."""
    banned: set[str] = field(default_factory=set)
    """Peers banned so far (corrupt bytes, a refused token, repeated failures)."""
    inventory_requests: int = 0
    inventory_bytes: int = 0
    """What learning the peers' inventories cost (HTTP, both ways), set when the pull ends."""

    @property
    def from_peers(self) -> int:
        return sum(v for k, v in self.by_source.items() if k != schedule.ORIGIN)

    @property
    def from_origin(self) -> int:
        return self.by_source.get(schedule.ORIGIN, 0)


@dataclass
class PullResult:
    manifest: Manifest
    dest: Path
    progress: Progress
    seconds: float
    already_cached: int
    on_disk: int = 0
    """Bytes kept from an earlier pull into the same dest (a restarted node), not fetched again."""

    @property
    def gbps(self) -> float:
        return self.progress.done / self.seconds / 1e9 if self.seconds else 0.0


@dataclass
class PullOptions:
    connections_per_peer: int = 2
    origin_connections: int = 4
    chunks_per_request: int = 8
    """Consecutive chunks of a file asked of a peer in one request (a run, where the peer serves them; at most its
    MAX_RUN): fewer round trips and one sendfile stream per answer. On loopback, 2.2 GB from two peers: median
    1.22 s a pull one chunk a request, 1.13 s four, 1.08 s eight (less CPU on both ends, each of 6 pairs)."""
    chunk_timeout_s: float = 10.0
    """A peer that sends nothing for this long is a stalled peer."""
    max_attempts_per_chunk: int = 6
    max_busy_waits: int = 100
    """Times a chunk waits 0.1 s for a busy peer when no other source has it (a busy answer is no failure)."""
    verify_sha256: bool | None = None
    """Check each file's sha256 before it is renamed into place. Every chunk is always checked; None (the
    default): only when the manifest's chunk hash is not cryptographic (version 1, xxh3-128). With BLAKE3
    chunks the file sha256 adds nothing but ~0.9 CPU-seconds per GB on one core."""
    swarm_self: str | None = None
    """This node's name as its peers list it (host:port of its cache server): pull as one of a swarm, the
    origin's chunks split with the peers that pull at the same time (`schedule.Swarm`). None: no swarm."""
    swarm_wait_s: float = 30.0
    """How long to wait for a fellow joiner's chunk before reading it from the origin."""
    inventory_refresh_s: float = 0.25
    """How often a swarm pull asks a peer without the inventory stream what it holds now (and how soon it tries a
    stream again that failed)."""
    inventory_stream: bool = True
    """Learn what fellow joiners gain from their inventory streams (inventory.py); False: poll every peer every
    `inventory_refresh_s` (what pulls did before; the benchmark's baseline)."""
    zone: str | None = None
    """This node's zone: peers in it are asked first (`peer_zones` says where the others are)."""
    peer_zones: dict[str, str] = field(default_factory=dict)
    swarm_gone_after: int = 8
    """Inventory requests a joiner may fail in a row before its chunks pass to the others (it gets them back
    when it answers again)."""
