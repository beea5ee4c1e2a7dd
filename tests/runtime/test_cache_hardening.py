"""Regression tests for the peer cache's defects found by adversarial testing (hardening issue, items 1, 2, 8-11)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from spotstack.runtime.cache.manifest import MANIFEST_NAME, Manifest, build_manifest, write_manifest
from spotstack.runtime.cache.pull import TMP_MARK, PullError, clean_leftovers
from spotstack.runtime.cache.sources import usable_peers
from spotstack.runtime.net import serve
from tests.runtime.cachekit import TOKEN, MiB, digest_tree, do_pull, make_model, peer

SPOTSTACK = [sys.executable, "-m", "spotstack.cli.main"]
SPOTSTACK = [sys.executable, "-m", "spotstack.cli.main"]


def manifest_doc(m: Manifest) -> dict[str, object]:
    return json.loads(m.to_json())  # type: ignore[no-any-return]


async def serve_manifest(doc: dict[str, object]) -> tuple[web.AppRunner, int]:
    """A lying peer: it holds the token and answers any manifest request with `doc`."""

    async def manifest(request: web.Request) -> web.Response:
        return web.json_response(doc)

    async def inventory(request: web.Request) -> web.Response:
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/v1/manifest", manifest)
    app.router.add_get("/v1/inventory", inventory)
    return await serve(app, "127.0.0.1", 0)


def cli_pull(
    model_url: str, dest: Path, store: Path, token_file: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *SPOTSTACK,
            "cache",
            "pull",
            model_url,
            "--dest",
            str(dest),
            "--store",
            str(store),
            "--token-file",
            str(token_file),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "path",
    ["/tmp/evil", "../../escape", "a/../../escape", "a//b", "./a", "a\\..\\b", "a\x00b", "a/./b", ""],
)
def test_manifest_paths_must_stay_inside_dest(tmp_path: Path, path: str) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 100})
    doc = manifest_doc(m)
    doc["files"][0]["path"] = path  # type: ignore[index]
    with pytest.raises(ValidationError):
        Manifest.model_validate(doc)


async def test_a_peer_manifest_with_an_escaping_path_writes_nothing_outside(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 1000})
    doc = manifest_doc(m)
    target = tmp_path / "outside.txt"
    doc["files"][0]["path"] = str(target)  # type: ignore[index]
    runner, port = await serve_manifest(doc)
    (tmp_path / "token").write_text(TOKEN)
    try:
        # The origin is unreadable, so the manifest can only come from the lying peer.
        r = await asyncio.to_thread(
            cli_pull,
            str(tmp_path / "missing-origin"),
            tmp_path / "dest",
            tmp_path / "store",
            tmp_path / "token",
            "--peers",
            f"127.0.0.1:{port}",
        )
    finally:
        await runner.cleanup()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not target.exists()


def test_a_symlinked_folder_in_dest_is_not_followed(tmp_path: Path) -> None:
    make_model(tmp_path / "model", {"sub/w.bin": 1000, "c.json": 10})
    m = build_manifest(str(tmp_path / "model"), chunk_size=MiB)
    (tmp_path / "dest").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dest" / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PullError, match="symbolic link"):
        do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["files"][0].update(size=d["files"][0]["size"] + 1000), "chunks"),
        (lambda d: d["files"][0].update(chunks=d["files"][0]["chunks"][:-1]), "chunks"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(chunk_hash="md5"), "chunk_hash"),
        (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
        (lambda d: d["files"][0]["chunks"].__setitem__(0, "../../etc/passwd"), "chunks"),
    ],
)
def test_inconsistent_manifests_are_refused_before_any_byte(tmp_path: Path, change: object, reason: str) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 3 * MiB})
    doc = manifest_doc(m)
    change(doc)  # type: ignore[operator]
    with pytest.raises(ValidationError, match=reason):
        Manifest.model_validate(doc)


def test_a_larger_size_than_the_chunks_fails_the_cli_pull_and_places_nothing(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 2 * MiB + 10})
    doc = manifest_doc(m)
    doc["files"][0]["size"] += 1000  # type: ignore[index]
    (tmp_path / "model" / MANIFEST_NAME).write_text(json.dumps(doc))
    (tmp_path / "token").write_text(TOKEN)
    r = cli_pull(str(tmp_path / "model"), tmp_path / "dest", tmp_path / "store", tmp_path / "token", "--chunks-only")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "dest" / "w.bin").exists()


def test_files_with_the_same_content_and_empty_files_pull(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    blob = os.urandom(3 * MiB + 7)
    for name in ("a.bin", "copy/a.bin"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(blob)
    (root / "empty1").write_bytes(b"")
    (root / "empty2").write_bytes(b"")
    m = build_manifest(str(root), chunk_size=MiB)
    write_manifest(str(root), m)
    r = do_pull(tmp_path / "store", m, tmp_path / "dest", [], root)
    assert digest_tree(tmp_path / "dest") == {k: v for k, v in digest_tree(root).items() if k != MANIFEST_NAME}
    assert r.progress.done == len(blob)  # the shared content is fetched once


def test_malformed_peer_entries_are_skipped() -> None:
    good, bad = usable_peers(["127.0.0.1:8470", ":84700", "host:", "10.0.0.1:99999", "node-2:8470", "ftp://x:1"])
    assert good == ["127.0.0.1:8470", "node-2:8470"]
    assert bad == [":84700", "host:", "10.0.0.1:99999", "ftp://x:1"]


def test_a_malformed_peers_entry_is_a_warning_not_a_traceback(tmp_path: Path) -> None:
    make_model(tmp_path / "model", {"w.bin": 1000})
    (tmp_path / "token").write_text(TOKEN)
    r = cli_pull(
        str(tmp_path / "model"), tmp_path / "dest", tmp_path / "store", tmp_path / "token", "--peers", ":84700"
    )
    assert r.returncode == 0, r.stderr
    assert "skipping peer ':84700'" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "dest" / "w.bin").stat().st_size == 1000


async def test_a_busy_peer_sends_the_chunk_elsewhere(tmp_path: Path) -> None:
    """One peer with no free slot: three concurrent pulls all succeed, from the origin or the other peer."""
    m = make_model(tmp_path / "model", {"a.bin": 6 * MiB, "b.bin": 5 * MiB})
    do_pull(tmp_path / "p1", m, tmp_path / "d1", [], tmp_path / "model")
    async with peer(tmp_path / "p1", max_transfers=0) as busy:
        peers = [f"127.0.0.1:{busy.port}"]
        results = await asyncio.gather(
            *(
                asyncio.to_thread(do_pull, tmp_path / f"s{k}", m, tmp_path / f"out{k}", peers, tmp_path / "model")
                for k in range(3)
            )
        )
        assert busy.refused["busy"] > 0
    for k, r in enumerate(results):
        assert r.progress.from_origin == m.total_bytes
        assert digest_tree(tmp_path / f"out{k}") == digest_tree(tmp_path / "d1")


def test_leftovers_of_a_killed_pull_are_removed_at_the_next(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 1000})
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [dest / f".w.bin{TMP_MARK}{dead_pid}", dest / "sub" / f".x{TMP_MARK}{dead_pid}"]
    for p in stale:
        p.write_bytes(b"half")
    live = dest / f".y{TMP_MARK}1"  # pid 1 is alive: another pull's file is left alone
    live.write_bytes(b"busy")
    do_pull(tmp_path / "store", m, dest, [], tmp_path / "model")
    assert not any(p.exists() for p in stale) and live.exists()
    assert clean_leftovers(tmp_path / "nothing-here") == []


@pytest.mark.slow
def test_a_2000_file_model_pulls_under_1024_descriptors(tmp_path: Path) -> None:
    root = tmp_path / "model"
    for k in range(2000):
        d = root / f"shard-{k // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"part-{k:04d}.bin").write_bytes(k.to_bytes(4, "little") * 64)
    write_manifest(str(root), build_manifest(str(root), chunk_size=MiB))
    (tmp_path / "token").write_text(TOKEN)
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
        "from spotstack.cli.main import main; sys.argv[0] = 'spotstack'; main()"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "cache",
            "pull",
            str(root),
            "--dest",
            str(tmp_path / "dest"),
            "--json",
            "--store",
            str(tmp_path / "store"),
            "--token-file",
            str(tmp_path / "token"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["bytes"] == 2000 * 256
    assert sum(1 for p in (tmp_path / "dest").rglob("*.bin")) == 2000
