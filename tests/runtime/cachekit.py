"""Helpers for cache tests: generated models, stores and peer servers on loopback."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from spotstack.runtime.cache.manifest import Manifest, build_manifest, write_manifest
from spotstack.runtime.cache.pull import Origin, PullOptions, PullResult, pull
from spotstack.runtime.cache.server import PeerServer
from spotstack.runtime.cache.store import Store

TOKEN = "test-fleet-token-0123456789"
MiB = 1 << 20


def make_model(root: Path, sizes: dict[str, int], seed: int = 7) -> Manifest:
    rng = random.Random(seed)
    for name, size in sizes.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(size))
    m = build_manifest(str(root), chunk_size=1 * MiB)
    write_manifest(str(root), m)
    return m


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@asynccontextmanager
async def peer(store_dir: Path, max_transfers: int = 8) -> AsyncIterator[PeerServer]:
    server = PeerServer(Store(store_dir, 1 << 34), TOKEN, "127.0.0.1", 0, max_transfers)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def do_pull(
    store_dir: Path, manifest: Manifest, dest: Path, peers: list[str], origin: Path | str | None, **opts: float
) -> PullResult:
    return pull(
        Store(store_dir, 1 << 34),
        manifest,
        dest,
        peers=peers,
        token=TOKEN,
        origin=Origin(str(origin)) if origin is not None else None,
        options=PullOptions(**opts),
    )  # type: ignore[arg-type]
