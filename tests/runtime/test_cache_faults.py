"""Every fault ends in a byte-identical model or a clear error, never a corrupt or partial file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.cache.manifest import MANIFEST_NAME, Manifest
from spotstack.runtime.cache.pull import PullError, pull
from spotstack.runtime.cache.sources import STEP, Peer
from spotstack.runtime.cache.store import Store
from spotstack.runtime.net import free_port, serve
from tests.runtime.cachekit import TOKEN, MiB, digest_tree, do_pull, make_model, peer
from tests.waits import wait_until

SIZES = {"model-00001.safetensors": 9 * MiB + 123, "model-00002.safetensors": 6 * MiB, "config.json": 700}


def expected(model: Path) -> dict[str, str]:
    return {k: v for k, v in digest_tree(model).items() if k != MANIFEST_NAME}


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Manifest, Path]:
    """A model, and two peer stores that already hold all of it."""
    m = make_model(tmp_path / "model", SIZES)
    for name in ("a", "b"):
        do_pull(tmp_path / name, m, tmp_path / f"dest-{name}", [], tmp_path / "model")
        Store(tmp_path / name, 1 << 34).remember_source(str(tmp_path / "model"), m.model_id)
    return m, tmp_path


async def test_pull_from_two_peers_uses_both_and_no_origin(seeded: tuple[Manifest, Path]) -> None:
    m, tmp = seeded
    async with peer(tmp / "a") as a, peer(tmp / "b") as b:
        peers = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        r = await asyncio.to_thread(do_pull, tmp / "new", m, tmp / "out", peers, None)
    assert digest_tree(tmp / "out") == expected(tmp / "model")
    assert r.progress.from_peers == m.total_bytes and r.progress.from_origin == 0
    assert len(r.progress.by_source) == 2 and min(r.progress.by_source.values()) > 2 * MiB


def healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def corrupt(path: Path, size: int) -> None:
    """Flip bytes inside every chunk of a store file."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        for off in range(100, size, MiB):
            f.seek(off)
            f.write(b"\xff\x00\xff")


async def test_corrupting_peer_is_caught_and_banned(seeded: tuple[Manifest, Path]) -> None:
    m, tmp = seeded
    for f in m.files:  # every file: whichever chunks (or runs of chunks) peer a is asked for are corrupt
        corrupt(Store(tmp / "a", 1 << 34).file_path(f.key), f.size)
    async with peer(tmp / "a") as a, peer(tmp / "b") as b:
        peers = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        r = await asyncio.to_thread(do_pull, tmp / "new", m, tmp / "out", peers, tmp / "model")
    assert digest_tree(tmp / "out") == expected(tmp / "model")
    assert r.progress.refetched >= 1
    assert r.progress.by_source.get(f"127.0.0.1:{a.port}", 0) < m.total_bytes / 2


async def test_a_chunk_that_arrives_in_dribbles_is_received_whole_over_one_kept_connection() -> None:
    """The body is read with blocking reads under the kernel's receive timeout, each taking what has arrived (at most
    STEP): bytes that came with the headers, pauses and uneven writes still give every byte once, in order, and the
    connection goes back to Python's timeout and carries the next chunk."""
    import blake3

    body = os.urandom(2 * STEP + 12345)  # crosses piece boundaries, with a tail
    digest = blake3.blake3(body).hexdigest()
    transports: list[int] = []

    async def dribble(request: web.Request) -> web.StreamResponse:
        transports.append(id(request.transport))
        resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(body))})
        await resp.prepare(request)
        for a, b in ((0, 1000), (1000, 700_000), (700_000, STEP + 3), (STEP + 3, len(body))):
            await resp.write(body[a:b])
            await asyncio.sleep(0.05)
        return resp

    app = web.Application()
    app.router.add_get("/v1/chunks/{h}", dribble)
    runner, port = await serve(app, "127.0.0.1", 0, shutdown_timeout=0.1)
    try:
        src = Peer(f"127.0.0.1:{port}", TOKEN, timeout_s=2.0)

        def collect(into: list[tuple[int, bytes]]) -> Callable[[int, memoryview], None]:
            return lambda offset, piece: into.append((offset, bytes(piece)))

        def fetch_twice() -> list[tuple[list[tuple[int, bytes]], str, float | None]]:
            """Both fetches on one thread: its kept connection is the one the second goes over."""
            out = []
            for _ in range(2):
                pieces: list[tuple[int, bytes]] = []
                hasher = blake3.blake3()
                src.fetch(digest, len(body), hasher, write=collect(pieces))
                sock = src._conn().sock  # private: the connection this thread keeps for its next chunk
                out.append((pieces, hasher.hexdigest(), sock.gettimeout() if sock is not None else None))
            return out

        for pieces, hexdigest, timeout in await asyncio.to_thread(fetch_twice):
            writes = [(offset, offset + len(data)) for offset, data in pieces]
            assert b"".join(data for _, data in pieces) == body and hexdigest == digest
            assert [w[0] for w in writes] == [0] + [w[1] for w in writes[:-1]]  # in order, each byte once
            assert all(0 < b - a <= STEP for a, b in writes)  # each read at most STEP (hashed while in cache)
            assert timeout == 2.0  # back to Python's timeout, connection kept
    finally:
        await runner.cleanup()
    assert len(transports) == 2 and transports[0] == transports[1]


async def test_stalling_peer_times_out_and_others_finish(seeded: tuple[Manifest, Path]) -> None:
    m, tmp = seeded
    stalls = 0

    async def inventory(request: web.Request) -> web.Response:
        return web.json_response([h for f in m.files for h in f.chunks])

    async def stall(request: web.Request) -> web.StreamResponse:
        nonlocal stalls
        stalls += 1
        resp = web.StreamResponse(status=206, headers={"Content-Length": str(MiB)})
        await resp.prepare(request)
        await resp.write(b"\0" * 1000)  # a little, then nothing
        await asyncio.sleep(30)
        return resp

    app = web.Application()
    app.router.add_get("/v1/inventory", inventory)
    app.router.add_get("/v1/chunks/{h}", stall)
    runner, port = await serve(app, "127.0.0.1", 0, shutdown_timeout=0.1)
    try:
        async with peer(tmp / "b") as b:
            peers = [f"127.0.0.1:{port}", f"127.0.0.1:{b.port}"]
            started = time.monotonic()
            r = await asyncio.to_thread(do_pull, tmp / "new", m, tmp / "out", peers, None, chunk_timeout_s=1.0)
    finally:
        await runner.cleanup()
    assert digest_tree(tmp / "out") == expected(tmp / "model")
    assert stalls >= 1 and time.monotonic() - started < 15
    assert r.progress.by_source == {f"127.0.0.1:{b.port}": m.total_bytes}


@pytest.fixture
def big_model(tmp_path: Path) -> Iterator[tuple[Manifest, Path]]:
    m = make_model(tmp_path / "model", {"w1.bin": 48 * MiB, "w2.bin": 48 * MiB})
    do_pull(tmp_path / "a", m, tmp_path / "dest-a", [], tmp_path / "model")
    do_pull(tmp_path / "b", m, tmp_path / "dest-b", [], tmp_path / "model")
    yield m, tmp_path


@pytest.mark.slow
def test_peer_killed_mid_transfer(big_model: tuple[Manifest, Path]) -> None:
    m, tmp = big_model
    (tmp / "token").write_text(TOKEN)
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spotstack.cli.main",
                "cache",
                "serve",
                "--store",
                str(tmp / s),
                "--token-file",
                str(tmp / "token"),
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
            ],
            stderr=subprocess.DEVNULL,
        )
        for s, p in zip("ab", ports, strict=True)
    ]
    try:
        for p in ports:
            wait_until(lambda p=p: healthy(p), what=f"the peer on {p}")
        killed = []

        def kill_a_when_busy(prog: object) -> None:
            done = getattr(prog, "done", 0)
            if not killed and done > 10 * MiB:
                procs[0].send_signal(signal.SIGKILL)
                killed.append(done)

        r = pull(
            Store(tmp / "new", 1 << 34),
            m,
            tmp / "out",
            peers=[f"127.0.0.1:{p}" for p in ports],
            token=TOKEN,
            origin=None,
            progress=kill_a_when_busy,
        )
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert killed and killed[0] < m.total_bytes
    assert digest_tree(tmp / "out") == expected(tmp / "model")
    assert r.progress.by_source.get(f"127.0.0.1:{ports[1]}", 0) > m.total_bytes / 2


def test_no_peer_at_all_falls_back_to_origin(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", SIZES)
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    r = do_pull(tmp_path / "s", m, tmp_path / "out", dead, tmp_path / "model")
    assert digest_tree(tmp_path / "out") == expected(tmp_path / "model")
    assert r.progress.from_origin == m.total_bytes


def test_no_peer_and_no_origin_is_a_clear_error(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", SIZES)
    with pytest.raises(PullError, match="no source left"):
        do_pull(tmp_path / "s", m, tmp_path / "out", [f"127.0.0.1:{free_port()}"], None)
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.slow
async def test_origin_down_while_peers_have_everything(seeded: tuple[Manifest, Path]) -> None:
    m, tmp = seeded
    (tmp / "token").write_text(TOKEN)
    origin = tmp / "model"
    moved = tmp / "model-gone"
    origin.rename(moved)  # the object store is unreachable: no manifest, no bytes
    async with peer(tmp / "a") as a, peer(tmp / "b") as b:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spotstack.cli.main",
            "cache",
            "pull",
            str(origin),
            "--dest",
            str(tmp / "out"),
            "--store",
            str(tmp / "new"),
            "--peers",
            f"127.0.0.1:{a.port},127.0.0.1:{b.port}",
            "--token-file",
            str(tmp / "token"),
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, errb = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, errb.decode()
    import json

    doc = json.loads(out)
    assert doc["from_origin"] == 0 and doc["from_peers"] == m.total_bytes and doc["manifest_from"].startswith("127.")
    assert digest_tree(tmp / "out") == expected(moved)


def test_destination_too_small_fails_before_fetching(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", SIZES)
    store = Path("/dev/shm") / f"spotstack-test-{os.getpid()}"
    try:
        with pytest.raises(PullError, match=r"has 0\.00 GB free"):
            pull(
                Store(store, 1 << 34),
                m,
                tmp_path / "out",
                peers=[],
                token=TOKEN,
                origin=None,
                free_bytes=lambda p: 1000,
            )
        assert not list((tmp_path / "out").iterdir())
    finally:
        import shutil

        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_destination_disk_leaves_no_partial_file(tmp_path: Path, tiny_disk: Path) -> None:
    m = make_model(tmp_path / "model", SIZES)  # ~15 MiB into an 8 MiB file system
    with pytest.raises(PullError, match="is full writing") as caught:
        # Claim plenty of room so the copy itself runs into ENOSPC.
        pull(
            Store(tmp_path / "store", 1 << 34),
            m,
            tiny_disk / "model",
            peers=[],
            token=TOKEN,
            origin=__import__("spotstack.runtime.cache.pull", fromlist=["Origin"]).Origin(str(tmp_path / "model")),
            free_bytes=lambda p: 1 << 40,
        )
    assert "nothing partial" in str(caught.value)
    leftovers = [p.name for p in (tiny_disk / "model").rglob("*") if p.is_file()]
    for name in leftovers:  # only whole, verified files may be there; never a temp or a torn file
        assert not name.startswith("."), leftovers
        f = next(f for f in m.files if f.path == name)
        assert (tiny_disk / "model" / name).stat().st_size == f.size
    # The pull is repeatable once space is made: the store kept every verified byte.
    r = do_pull(tmp_path / "store", m, tmp_path / "elsewhere", [], tmp_path / "model")
    assert r.already_cached == m.total_bytes
    assert digest_tree(tmp_path / "elsewhere") == expected(tmp_path / "model")


async def test_full_cache_while_receiving_from_a_peer_is_said_so(
    seeded: tuple[Manifest, Path], tiny_disk: Path
) -> None:
    """The store filling up while a peer's chunks are written is this node's failure (the cache is full), said so at
    once, not a peer fault retried on every other peer until no source is left."""
    m, tmp = seeded
    async with peer(tmp / "a") as a, peer(tmp / "b") as b:
        peers = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        with pytest.raises(PullError, match=r"the cache at .* is full") as caught:
            # Claim plenty of room: the 8 MiB store runs into ENOSPC while writing the ~15 MiB model.
            await asyncio.to_thread(
                pull, Store(tiny_disk / "store", 1 << 34), m, tmp / "out", peers=peers, token=TOKEN, origin=None
            )
    assert "no source left" not in str(caught.value)
    assert not (tmp / "out").exists() or not list((tmp / "out").iterdir())


async def test_serves_verified_chunks_before_its_own_pull_finishes(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 8 * MiB})
    store = Store(tmp_path / "mid", 1 << 34)
    store.add_manifest(m)
    f = m.files[0]
    # Half a pull: the first four chunks verified in the partial file, the rest not yet.
    data = (tmp_path / "model" / "w.bin").read_bytes()
    store.part_path(f.key).write_bytes(data[: 4 * MiB] + b"\0" * (4 * MiB))
    store.ok_path(f.key).write_bytes(b"\x01" * 4 + b"\x00" * 4)
    async with peer(tmp_path / "mid") as srv, aiohttp.ClientSession() as s:
        hdr = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(f"http://127.0.0.1:{srv.port}/v1/inventory", headers=hdr) as r:
            assert await r.json() == f.chunks[:4]
        async with s.get(f"http://127.0.0.1:{srv.port}/v1/chunks/{f.chunks[2]}", headers=hdr) as r:
            assert r.status == 200 and await r.read() == data[2 * MiB : 3 * MiB]
        async with s.get(f"http://127.0.0.1:{srv.port}/v1/chunks/{f.chunks[5]}", headers=hdr) as r:
            assert r.status == 404


async def test_a_pinned_manifest_digest_refuses_any_other_manifest(tmp_path: Path) -> None:
    """With the origin down, a peer's manifest is accepted only if it is the pinned one."""
    from spotstack.runtime.cache.sources import resolve_manifest

    m = make_model(tmp_path / "model", {"w.bin": 2 * MiB})
    do_pull(tmp_path / "a", m, tmp_path / "a-dest", [], tmp_path / "model")
    other = make_model(tmp_path / "other", {"w.bin": 2 * MiB}, seed=9)
    gone = str(tmp_path / "no-such-origin")  # the origin is down: only the peer can give the manifest
    Store(tmp_path / "a", 1 << 34).remember_source(gone, m.model_id)
    async with peer(tmp_path / "a") as a:
        peers = [f"127.0.0.1:{a.port}"]
        got, src = await asyncio.to_thread(resolve_manifest, gone, peers, TOKEN, digest=m.digest_hex)
        assert got == m and src == peers[0]
        with pytest.raises(PullError, match="is not the pinned"):
            await asyncio.to_thread(resolve_manifest, gone, peers, TOKEN, digest=other.digest_hex)
        # The origin's own manifest is held to the pin too.
        with pytest.raises(PullError, match="is not the pinned"):
            await asyncio.to_thread(resolve_manifest, str(tmp_path / "model"), [], TOKEN, digest=other.digest_hex)
    assert m.digest_hex != other.digest_hex and len(m.digest_hex) == 64
