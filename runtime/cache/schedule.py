"""Which source a chunk is fetched from. Pure: no I/O, state in, choice out."""

from __future__ import annotations

from dataclasses import dataclass, field

ORIGIN = "origin"


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


def choose(s: Sources, chunk: str, tried: set[str]) -> str | None:
    """The least-busy peer holding `chunk` that this chunk has not failed on; else the origin.

    None means "nothing free right now, wait" when something is busy, and is final when every
    source has been tried (the caller tells these apart with `exhausted`).
    """
    peers = [p for p in s.holders.get(chunk, ()) if p not in s.banned and p not in tried]
    free = [p for p in peers if s.busy.get(p, 0) < s.per_peer_limit]
    if free:
        return min(free, key=lambda p: (s.busy.get(p, 0), p))
    if peers:
        return None  # a peer has it but is busy: waiting beats the slow origin
    if s.has_origin and ORIGIN not in tried and s.busy.get(ORIGIN, 0) < s.origin_limit:
        return ORIGIN
    return None


def exhausted(s: Sources, chunk: str, tried: set[str]) -> bool:
    """No source is left that could still serve this chunk."""
    peers = [p for p in s.holders.get(chunk, ()) if p not in s.banned and p not in tried]
    return not peers and (not s.has_origin or ORIGIN in tried)


def record_failure(s: Sources, source: str, *, fatal: bool) -> None:
    """Corrupt bytes or a refused token ban a peer at once; other failures after `max_failures`."""
    if source == ORIGIN:
        return
    s.failures[source] = s.failures.get(source, 0) + 1
    if fatal or s.failures[source] >= s.max_failures:
        s.banned.add(source)
