"""Which source a chunk is fetched from. Pure: no I/O, state in, choice out.

The swarm: nodes pulling the same model at the same time split the origin's work. Each chunk has one owner
among the joiners (rendezvous hashing of the chunk over their names: every joiner computes the same owner, and
a joiner leaving moves only its own chunks); the owner reads it from the origin, the others wait for it to show
up in the owner's inventory and take it from there (or from whoever has it by then). A joiner that waited
`wait_s` for a chunk, or whose owner is gone or banned, reads it from the origin itself: a slow or dead joiner
costs time, never the pull.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

ORIGIN = "origin"


def owner(members: tuple[str, ...], chunk: str) -> str:
    """The joiner that reads `chunk` from the origin (highest rendezvous weight; ties cannot happen in practice)."""
    return max(members, key=lambda m: hashlib.blake2b(f"{m}|{chunk}".encode(), digest_size=8).digest())


@dataclass
class Swarm:
    me: str
    """This node's name as its peers know it (host:port of its cache server)."""
    members: tuple[str, ...]
    """Every joiner of this pull, this node included."""
    wait_s: float = 30.0
    waiting: dict[str, float] = field(default_factory=dict)
    """chunk -> when this node first deferred it to its owner."""
    gone: set[str] = field(default_factory=set)
    """Joiners not answering (not up yet, or dead): their chunks pass to the others while they are gone."""

    def owner_of(self, chunk: str, banned: set[str]) -> str:
        """The chunk's owner among the joiners still answering (a joiner gone hands its chunks on: every
        joiner that saw it go computes the same new owner)."""
        live = tuple(m for m in self.members if m == self.me or (m not in self.gone and m not in banned))
        return owner(live, chunk)

    def defers(self, chunk: str, now: float, banned: set[str], tried: set[str]) -> bool:
        """Whether to wait for `chunk`'s owner rather than read it from the origin now (not when the owner
        already failed to give this chunk)."""
        o = self.owner_of(chunk, banned)
        if o == self.me or o in tried:
            return False
        return now - self.waiting.setdefault(chunk, now) < self.wait_s


@dataclass
class Sources:
    holders: dict[str, set[str]]
    """chunk hash -> peers that said they have it."""
    per_peer_limit: int = 2
    origin_limit: int = 4
    has_origin: bool = True
    busy: dict[str, int] = field(default_factory=dict)
    """source -> fetches in flight."""
    banned: set[str] = field(default_factory=set)
    """Peers that served corrupt bytes, refused our token, or failed repeatedly."""
    failures: dict[str, int] = field(default_factory=dict)
    max_failures: int = 2
    swarm: Swarm | None = None
    zone_of: dict[str, str] = field(default_factory=dict)
    """peer -> its zone, where discovery said; with `zone`, peers in this node's zone are asked first
    (transfer across zones is billed on every cloud)."""
    zone: str | None = None


def choose(s: Sources, chunk: str, tried: set[str], now: float = 0.0) -> str | None:
    """The least-busy peer holding `chunk` that this chunk has not failed on; else (unless a fellow joiner owns
    it and is fetching it) the origin.

    None means "nothing free right now, wait" when something is busy or a joiner will have it, and is final
    when every source has been tried (the caller tells these apart with `exhausted`).
    """
    peers = [p for p in s.holders.get(chunk, ()) if p not in s.banned and p not in tried]
    free = [p for p in peers if s.busy.get(p, 0) < s.per_peer_limit]
    if free:
        return min(free, key=lambda p: (s.zone is not None and s.zone_of.get(p) != s.zone, s.busy.get(p, 0), p))
    if peers:
        return None  # a peer has it but is busy: waiting beats the slow origin
    if s.swarm is not None and ORIGIN not in tried and s.swarm.defers(chunk, now, s.banned, tried):
        return None  # its owner reads it from the origin: take it from the owner
    if s.has_origin and ORIGIN not in tried and s.busy.get(ORIGIN, 0) < s.origin_limit:
        return ORIGIN
    return None


def exhausted(s: Sources, chunk: str, tried: set[str], now: float = 0.0) -> bool:
    """No source is left that could still serve this chunk."""
    peers = [p for p in s.holders.get(chunk, ()) if p not in s.banned and p not in tried]
    if peers:
        return False
    if s.swarm is not None and s.swarm.defers(chunk, now, s.banned, tried):
        return False  # a fellow joiner will have it
    return not s.has_origin or ORIGIN in tried


def record_failure(s: Sources, source: str, *, fatal: bool) -> None:
    """Corrupt bytes or a refused token ban a peer at once; other failures after `max_failures`."""
    if source == ORIGIN:
        return
    s.failures[source] = s.failures.get(source, 0) + 1
    if fatal or s.failures[source] >= s.max_failures:
        s.banned.add(source)
