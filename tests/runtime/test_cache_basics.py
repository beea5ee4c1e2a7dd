"""Manifest, store and peer server: formats, eviction, and the server's security model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from spotstack.runtime.cache.manifest import MANIFEST_NAME, Manifest, read_manifest
from spotstack.runtime.cache.store import Store, StoreFull
from tests.runtime.cachekit import TOKEN, MiB, digest_tree, do_pull, make_model, peer


def test_manifest_hashes_every_chunk_and_file(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"a.bin": 3 * MiB + 5, "sub/b.json": 10, "empty": 0})
    assert read_manifest(str(tmp_path / "model")) == m
    by = {f.path: f for f in m.files}
    assert set(by) == {"a.bin", "sub/b.json", "empty"}
    assert len(by["a.bin"].chunks) == 4 and by["a.bin"].chunk_span(3, m.chunk_size) == (3 * MiB, 5)
    assert by["empty"].chunks == [] and len(m.model_id) == 32
    assert not list((tmp_path / "model").glob(".manifest-*"))  # written atomically, no temp left
    assert MANIFEST_NAME not in by


def test_manifest_cli_writes_next_to_the_model(tmp_path: Path) -> None:
    import subprocess
    import sys

    make_model(tmp_path / "m", {"w.bin": 2 * MiB})
    (tmp_path / "m" / MANIFEST_NAME).unlink()
    out = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "cache", "manifest", str(tmp_path / "m"), "--chunk-mib", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    m = Manifest.model_validate_json((tmp_path / "m" / MANIFEST_NAME).read_text())
    assert out.stdout.strip() == m.digest_hex and len(m.files[0].chunks) == 2  # what --manifest-digest takes


def test_lru_eviction_spares_pinned_models(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", limit_bytes=10 * MiB)
    for name in ("old", "mid", "pinned"):
        p = store.file_path(name * 4)
        p.write_bytes(b"x" * 3 * MiB)
    import os
    import time

    now = time.time()
    for age, name in ((300, "pinned"), (200, "old"), (100, "mid")):
        os.utime(store.file_path(name * 4), (now - age, now - age))
    store.pinned_files = lambda: {"pinned" * 4}  # type: ignore[method-assign]
    assert store.make_room(2 * MiB, keep=set()) == ["oldoldoldold"]
    with pytest.raises(StoreFull, match="pinned models stay"):
        store.make_room(9 * MiB, keep=set())


async def test_server_refuses_without_token_with_wrong_token_and_paths(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 2 * MiB})
    await asyncio.to_thread(do_pull, tmp_path / "a", m, tmp_path / "dest-a", [], tmp_path / "model")
    async with peer(tmp_path / "a") as srv, aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{srv.port}"
        good = {"Authorization": f"Bearer {TOKEN}"}
        h = m.files[0].chunks[0]
        async with s.get(f"{base}/v1/chunks/{h}") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        async with s.get(f"{base}/v1/chunks/{h}", headers={"Authorization": "Bearer wrong-token-0000000000"}) as r:
            assert r.status == 403
        async with s.get(f"{base}/v1/chunks/{h}", headers={"Authorization": TOKEN}) as r:
            assert r.status == 403  # the scheme is part of the secret's comparison
        for bad in ("..%2F..%2Fetc%2Fpasswd", "files%2F" + m.files[0].sha256, "ABCDEF" * 6, h[:-1], h + "0"):
            async with s.get(f"{base}/v1/chunks/{bad}", headers=good) as r:
                assert r.status in (400, 404), bad
        async with s.get(f"{base}/v1/chunks/../../etc/passwd", headers=good) as r:
            assert r.status in (400, 404)
        async with s.get(f"{base}/v1/chunks/{'0' * 32}", headers=good) as r:
            assert r.status == 404
        async with s.get(f"{base}/v1/chunks/{h}", headers=good) as r:
            body = await r.read()
            assert r.status == 200 and len(body) == MiB and r.headers["X-Chunk-Hash"] == h
        async with s.get(f"{base}/v1/inventory", headers=good) as r:
            assert set(await r.json()) == set(m.files[0].chunks)
        async with s.get(f"{base}/healthz") as r:
            assert r.status == 200
        assert srv.refused["unauthenticated"] == 1 and srv.refused["forbidden"] == 2 and srv.refused["bad_hash"] >= 3


async def test_server_caps_concurrent_transfers(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 8 * MiB})
    await asyncio.to_thread(do_pull, tmp_path / "a", m, tmp_path / "d", [], tmp_path / "model")
    async with peer(tmp_path / "a", max_transfers=1) as srv, aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{srv.port}/v1/chunks/"
        hdr = {"Authorization": f"Bearer {TOKEN}"}

        async def get(h: str) -> int:
            async with s.get(url + h, headers=hdr) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(get(h) for h in m.files[0].chunks))
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}


def test_origin_only_pull_is_byte_identical_and_hard_linked(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"a.bin": 5 * MiB + 1, "nested/b.bin": 700_000, "empty": 0})
    r = do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")
    assert digest_tree(tmp_path / "dest") == {
        k: v for k, v in digest_tree(tmp_path / "model").items() if k != MANIFEST_NAME
    }
    assert r.progress.from_origin == m.total_bytes and r.progress.from_peers == 0
    a = tmp_path / "dest" / "a.bin"
    assert a.stat().st_ino == (tmp_path / "store" / "files" / m.files[0].key).stat().st_ino
    assert not list((tmp_path / "store" / "partial").iterdir())
    again = do_pull(tmp_path / "store", m, tmp_path / "dest2", [], tmp_path / "model")
    assert again.already_cached == m.total_bytes and again.progress.done == 0


def test_a_restarted_node_keeps_the_model_it_placed_on_disk(tmp_path: Path) -> None:
    """A warm-pool node is stopped and started: its memory store is empty, its disk still holds the model. The
    next pull keeps the placed files (same bytes, untouched since) and fetches only what changed on disk."""
    m = make_model(tmp_path / "model", {"a.bin": 3 * MiB + 5, "nested/b.bin": 700_000, "c.bin": 1 * MiB})
    dest = tmp_path / "dest"
    first = do_pull(tmp_path / "store", m, dest, [], tmp_path / "model")
    assert first.on_disk == 0 and first.progress.from_origin == m.total_bytes

    # The stop empties the memory store; the disk is as it was.
    again = do_pull(tmp_path / "store-after-stop", m, dest, [], tmp_path / "model")
    assert again.on_disk == m.total_bytes and again.progress.done == 0

    # A file changed on disk (or half-written by something else) is not trusted: fetched again, the rest kept.
    (dest / "c.bin").write_bytes(b"tampered")
    third = do_pull(tmp_path / "store-3", m, dest, [], tmp_path / "model")
    size_c = next(f.size for f in m.files if f.path == "c.bin")
    assert third.progress.from_origin == size_c and third.on_disk == m.total_bytes - size_c
    assert digest_tree(dest) == {k: v for k, v in digest_tree(tmp_path / "model").items() if k != MANIFEST_NAME}

    # A record that is not ours (or garbage) keeps nothing.
    (dest / ".spotstack-placed.json").write_text("{not json")
    fourth = do_pull(tmp_path / "store-4", m, dest, [], tmp_path / "model")
    assert fourth.on_disk == 0 and fourth.progress.from_origin == m.total_bytes


def test_new_manifests_hash_chunks_with_blake3_and_old_ones_are_still_read(tmp_path: Path) -> None:
    import blake3
    import xxhash

    from spotstack.runtime.cache.pull import PullError

    m = make_model(tmp_path / "model", {"a.bin": 2 * MiB + 3})
    data = (tmp_path / "model" / "a.bin").read_bytes()
    assert m.version == 2 and m.chunk_hash == "blake3" and m.cryptographic
    assert m.files[0].chunks[0] == blake3.blake3(data[:MiB]).hexdigest()
    # A version 1 manifest (xxh3-128 chunks, not cryptographic) still pulls, and its files' sha256 are checked.
    v1 = Manifest(
        version=1,
        chunk_hash="xxh3_128",
        chunk_size=m.chunk_size,
        files=[
            f.model_copy(
                update={
                    "chunks": [xxhash.xxh3_128_hexdigest(data[i * MiB : (i + 1) * MiB]) for i in range(len(f.chunks))]
                }
            )
            for f in m.files
        ],
    )
    assert not v1.cryptographic
    do_pull(tmp_path / "s1", v1, tmp_path / "d1", [], tmp_path / "model")
    assert (tmp_path / "d1" / "a.bin").read_bytes() == data
    wrong = v1.model_copy(update={"files": [v1.files[0].model_copy(update={"sha256": "0" * 64})]})
    with pytest.raises(PullError, match="sha256 mismatch"):
        do_pull(tmp_path / "s2", wrong, tmp_path / "d2", [], tmp_path / "model")
    # With BLAKE3 chunks the per-file sha256 is left out of the hot path (the chunks prove the bytes)...
    wrong2 = m.model_copy(update={"files": [m.files[0].model_copy(update={"sha256": "0" * 64})]})
    do_pull(tmp_path / "s3", wrong2, tmp_path / "d3", [], tmp_path / "model")
    # ...unless asked for.
    with pytest.raises(PullError, match="sha256 mismatch"):
        do_pull(tmp_path / "s4", wrong2, tmp_path / "d4", [], tmp_path / "model", verify_sha256=True)
    # A manifest whose version and chunk hash disagree, or whose digests are the wrong width, is refused.
    doc = m.model_dump()
    with pytest.raises(ValueError, match="version 1 manifest hashes chunks with xxh3_128"):
        Manifest.model_validate({**doc, "version": 1})
    with pytest.raises(ValueError, match="64 hex digits"):
        Manifest.model_validate({**doc, "files": [{**doc["files"][0], "chunks": ["a" * 32] * 3}]})


def test_a_manifest_lying_about_a_sha256_cannot_alias_another_file(tmp_path: Path) -> None:
    """With BLAKE3 chunks the sha256 is not checked on a pull, so it must not name files in the store: a manifest
    (from a peer, say) claiming another model's sha256 for different bytes gets its own bytes, not the other's."""
    a = make_model(tmp_path / "a", {"w.bin": 2 * MiB}, seed=1)
    b = make_model(tmp_path / "b", {"w.bin": 2 * MiB}, seed=2)
    liar = b.model_copy(update={"files": [b.files[0].model_copy(update={"sha256": a.files[0].sha256})]})
    do_pull(tmp_path / "store", a, tmp_path / "da", [], tmp_path / "a")
    do_pull(tmp_path / "store", liar, tmp_path / "db", [], tmp_path / "b")
    assert (tmp_path / "db" / "w.bin").read_bytes() == (tmp_path / "b" / "w.bin").read_bytes()
    assert (tmp_path / "da" / "w.bin").read_bytes() == (tmp_path / "a" / "w.bin").read_bytes()
    assert liar.files[0].key != a.files[0].key and liar.model_id != a.model_id
