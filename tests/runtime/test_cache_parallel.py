"""Pulls in parallel processes into one store (hardening round 3, item 1): every byte right, every time.

The CLI and the agent both default to /dev/shm/spotstack, so an operator's pull beside the agent's, or two models
sharing a file, write one store at once. Before the store lock, 5 of 15 such pulls exited 0 with zero-filled
weights that the store then kept as verified.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spotstack.runtime.cache.manifest import MANIFEST_NAME, build_manifest, write_manifest
from spotstack.runtime.cache.store import Store
from tests.runtime.cachekit import TOKEN, MiB, digest_tree

SPOTSTACK = [sys.executable, "-m", "spotstack.cli.main"]


def _model(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    write_manifest(str(root), build_manifest(str(root), chunk_size=1 * MiB))


def _files(model: Path) -> dict[str, str]:
    """The model's files as a pull places them (its manifest stays at the origin)."""
    return {k: v for k, v in digest_tree(model).items() if k != MANIFEST_NAME}


@pytest.mark.slow
def test_parallel_pulls_into_one_store_place_every_byte(tmp_path: Path) -> None:
    rng = random.Random(11)
    shared = rng.randbytes(9 * MiB + 123)  # a file both models hold: one store file, two pulls writing it
    _model(tmp_path / "a", {"shared.bin": shared, "a.bin": rng.randbytes(7 * MiB + 5)})
    _model(tmp_path / "b", {"shared.bin": shared, "sub/b.bin": rng.randbytes(5 * MiB)})
    (tmp_path / "token").write_text(TOKEN)
    store = tmp_path / "store"
    procs = []
    for n in range(6):
        model = tmp_path / ("a" if n % 2 == 0 else "b")
        cmd = [
            *SPOTSTACK,
            *("cache", "pull", str(model), "--dest", str(tmp_path / f"dest{n}"), "--store", str(store)),
            *("--token-file", str(tmp_path / "token"), "--verify-sha256", "--json"),
        ]
        procs.append((model, n, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for model, n, p in procs:
        _, errs = p.communicate(timeout=180)
        assert p.returncode == 0, errs
        assert "Traceback" not in errs
        assert digest_tree(tmp_path / f"dest{n}") == _files(model), f"dest{n} differs from {model.name}"
    # What the store keeps as verified is verified: every file's bytes match its key's content.
    wanted = {hashlib.sha256(p.read_bytes()).hexdigest() for m in "ab" for p in (tmp_path / m).rglob("*.bin")}
    kept = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (store / "files").iterdir()}
    assert kept == wanted
    assert not [p for p in (store / "partial").iterdir()], "a finished pull leaves nothing partial"
    assert not [p for sub in ("manifests", "sources") for p in (store / sub).iterdir() if ".tmp" in p.name]


def test_a_resumed_partial_is_checked_again_before_it_is_trusted(tmp_path: Path) -> None:
    """A partial file's marks say which chunks were verified; bytes changed since (another writer, a bad page) are
    fetched again rather than renamed into files/ as verified."""
    from tests.runtime.cachekit import do_pull, make_model

    m = make_model(tmp_path / "model", {"w.bin": 3 * MiB})
    f = m.files[0]
    st = Store(tmp_path / "store", 1 << 30)
    part, ok = st.part_path(f.key), st.ok_path(f.key)
    part.write_bytes(b"\x00" * f.size)  # the size is right, every chunk marked, and every byte wrong
    ok.write_bytes(b"\x01" * len(f.chunks))
    do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model", verify_sha256=False)
    assert digest_tree(tmp_path / "dest") == _files(tmp_path / "model")


def test_a_pull_waits_for_another_writer_and_says_so(tmp_path: Path) -> None:
    """A second pull into a store another process is writing waits for it (and then finds the model there)."""
    import fcntl

    _model(tmp_path / "m", {"w.bin": random.Random(3).randbytes(2 * MiB)})
    (tmp_path / "token").write_text(TOKEN)
    Store(tmp_path / "store", 1 << 30)
    lock = open(tmp_path / "store" / "lock", "a+")  # noqa: SIM115 - held across the child's start
    fcntl.flock(lock, fcntl.LOCK_EX)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    cmd = [
        *SPOTSTACK,
        *("cache", "pull", str(tmp_path / "m"), "--dest", str(tmp_path / "d"), "--store", str(tmp_path / "store")),
        *("--token-file", str(tmp_path / "token")),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        line = p.stderr.readline()
        assert "waiting for another pull" in line and str(os.getpid()) in line, line
        assert p.poll() is None
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    _, errs = p.communicate(timeout=60)
    assert p.returncode == 0, errs
    assert digest_tree(tmp_path / "d") == _files(tmp_path / "m")
    shutil.rmtree(tmp_path / "store")
