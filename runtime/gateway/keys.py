"""API keys: who may call the gateway, compared in constant time, never logged (a key is known in logs and metrics
by the first 8 hex digits of its SHA-256), with an optional per-key request rate.

Keys come from a file, one a line (`#` comments): locally a file the user writes; on a cloud node the boot
document fetches the keys from the secret store (SSM / Secret Manager / OOS) into that file with the node's
identity, as it does the cache token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class Bucket:
    tokens: float
    at: float


@dataclass
class Keys:
    digests: list[bytes]
    rate_per_s: float | None = None
    _buckets: dict[bytes, Bucket] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, rate_per_s: float | None = None) -> Keys:
        p = Path(path)
        if p.stat().st_mode & 0o077 and os.name == "posix":
            # Readable by others: say so (the keys still load; a shared CI box may need it).
            import logging

            logging.getLogger("spotstack.gateway").warning("%s is readable by other users: chmod 600 it", p)
        keys = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if not keys:
            raise ValueError(f"{p}: no API keys in it (one a line)")
        return cls([hashlib.sha256(k.encode()).digest() for k in keys], rate_per_s)

    def check(self, header: str | None) -> tuple[bytes | None, str]:
        """The matching key's digest and '' — or None and why not (for the 401's body)."""
        if not header or not header.startswith("Bearer "):
            return None, "an API key is required: Authorization: Bearer <key>"
        digest = hashlib.sha256(header[7:].strip().encode()).digest()
        found = None
        for d in self.digests:  # every key compared, in constant time: the time says nothing about which matched
            if hmac.compare_digest(d, digest):
                found = d
        return (found, "") if found is not None else (None, "the API key is not valid")

    def allow(self, digest: bytes, now: float | None = None) -> bool:
        """The key's token bucket (burst: one second's worth) has a request left."""
        if self.rate_per_s is None:
            return True
        t = time.monotonic() if now is None else now
        b = self._buckets.setdefault(digest, Bucket(self.rate_per_s, t))
        b.tokens = min(self.rate_per_s, b.tokens + (t - b.at) * self.rate_per_s)
        b.at = t
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False


class KeysNotLoaded(RuntimeError):
    """The keys file is not there yet (the boot fetches it from the secret store): no request is let through."""


class KeyFile:
    """The keys of a file, re-read when it changes (keys rotate without a restart). Until the file exists every
    request is refused with KeysNotLoaded (the gateway answers 503): a gateway never serves without its keys. A file
    that becomes unreadable or empty keeps the keys last read."""

    def __init__(self, path: str | Path, rate_per_s: float | None = None) -> None:
        self.path, self.rate_per_s = Path(path), rate_per_s
        self._keys: Keys | None = None
        self._stamp: tuple[float, int] | None = None

    def current(self) -> Keys:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_mtime, st.st_size) != self._stamp:
            try:
                fresh = Keys.from_file(self.path, self.rate_per_s)
                if self._keys is not None:
                    fresh._buckets = self._keys._buckets
                self._keys, self._stamp = fresh, (st.st_mtime, st.st_size)
            except (OSError, ValueError) as exc:
                import logging

                logging.getLogger("spotstack.gateway").warning("API keys: %s (keeping the keys last read)", exc)
                self._stamp = (st.st_mtime, st.st_size)
        if self._keys is None:
            raise KeysNotLoaded(f"the API keys ({self.path}) are not loaded yet")
        return self._keys

    def check(self, header: str | None) -> tuple[bytes | None, str]:
        return self.current().check(header)

    def allow(self, digest: bytes, now: float | None = None) -> bool:
        return self.current().allow(digest, now)
