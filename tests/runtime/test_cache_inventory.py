"""Inventory streams (runtime/cache/inventory.py): a swarm's joiners learn what each other gained from one long-lived
response per pair, not a request every 0.25 s; a peer without the stream is polled; a stopping server ends its
streams at once."""

from __future__ import annotations

import asyncio
import http.client
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from aiohttp import web

from spotstack.runtime.cache.inventory import PREFIX, STREAM_PATH
from spotstack.runtime.cache.manifest import MANIFEST_NAME
from spotstack.runtime.cache.pull import PullOptions, PullResult
from spotstack.runtime.cache.server import PeerServer
from tests.runtime.cachekit import TOKEN, MiB, digest_tree, do_pull, make_model, peer
from tests.runtime.test_cache_swarm import CountingOrigin, Reads
from tests.waits import wait_for


def open_stream(port: int) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", STREAM_PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    assert r.status == 200
    return conn, r


async def test_a_stream_says_what_the_node_holds_then_each_gain(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"a.bin": 3 * MiB})
    late = make_model(tmp_path / "late", {"b.bin": 2 * MiB}, seed=9)
    async with peer(tmp_path / "store") as server:
        await asyncio.to_thread(do_pull, tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")
        conn, r = await asyncio.to_thread(open_stream, server.port)
        try:
            first = (await asyncio.to_thread(r.readline)).split()
            assert sorted(first) == sorted(h[:PREFIX].encode() for f in m.files for h in f.chunks)
            # The node pulls another model while the stream is open: its chunks come down the same stream.
            await asyncio.to_thread(do_pull, tmp_path / "store", late, tmp_path / "dest2", [], tmp_path / "late")
            want = {h[:PREFIX].encode() for f in late.files for h in f.chunks}
            got: set[bytes] = set()
            deadline = time.monotonic() + 20
            while not want <= got and time.monotonic() < deadline:
                got |= set((await asyncio.to_thread(r.readline)).split())
            assert want <= got
            assert not got & set(first)  # each hash said once
        finally:
            conn.close()


async def test_a_quiet_stream_beats_and_a_stopping_server_ends_it(tmp_path: Path) -> None:
    async with peer(tmp_path / "store") as server:
        server._watch.every_s = 0.05
        conn, r = await asyncio.to_thread(open_stream, server.port)
        try:
            assert await asyncio.to_thread(r.readline) == b"\n"  # holds nothing yet: an empty first line
            stopped = time.monotonic()
            await server.stop()
            rest = await asyncio.to_thread(r.read)  # returns once the server ends the stream
            assert time.monotonic() - stopped < 3.0 and rest.strip() == b""
        finally:
            conn.close()


class FarOrigin(CountingOrigin):
    """An object store 0.15 s away per read: the pull lasts long enough (>1 s) that polling every 0.25 s shows,
    however fast this machine moves the bytes."""

    def read(self, rel: str, offset: int, size: int) -> bytes:
        time.sleep(0.15)
        return super().read(rel, offset, size)


def swarm(tmp: Path, names: list[str], stream: bool, reads: Reads, far: bool = False) -> list[PullResult]:
    from concurrent.futures import ThreadPoolExecutor

    from spotstack.runtime.cache.manifest import read_manifest
    from spotstack.runtime.cache.pull import pull
    from spotstack.runtime.cache.store import Store

    m = read_manifest(str(tmp / "model"))
    tag = "stream" if stream else "poll"

    def one(k: int) -> PullResult:
        return pull(
            Store(tmp / f"{tag}-store-{k}", 1 << 34),
            m,
            tmp / f"{tag}-dest-{k}",
            peers=names,
            token=TOKEN,
            origin=(FarOrigin if far else CountingOrigin)(str(tmp / "model"), reads, names[k]),
            options=PullOptions(swarm_self=names[k], inventory_stream=stream),
        )

    with ThreadPoolExecutor(len(names)) as ex:
        return list(ex.map(one, range(len(names))))


@pytest.mark.slow
async def test_a_swarm_learns_by_stream_with_a_fraction_of_the_polled_requests(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"a.bin": 40 * MiB, "c.json": 300})
    want = {k: v for k, v in digest_tree(tmp_path / "model").items() if k != MANIFEST_NAME}
    figures = {}
    for stream in (False, True):
        tag = "stream" if stream else "poll"
        async with AsyncExitStack() as stack:
            servers = [await stack.enter_async_context(peer(tmp_path / f"{tag}-store-{k}")) for k in range(3)]
            names = [f"127.0.0.1:{s.port}" for s in servers]
            reads = Reads()
            results = await asyncio.to_thread(swarm, tmp_path, names, stream, reads, True)
        for k in range(3):
            assert digest_tree(tmp_path / f"{tag}-dest-{k}") == want
        assert sum(reads.by_node.values()) == m.total_bytes  # still each chunk from the origin once
        figures[tag] = sum(r.progress.inventory_requests for r in results)
    # Streamed: one request per pair (6), a few more if a joiner's server answered late; polled: one per peer every
    # 0.25 s for the whole pull.
    print(figures)
    assert figures["stream"] <= 12, figures
    assert figures["stream"] < figures["poll"], figures


async def test_a_peer_without_the_stream_is_polled(tmp_path: Path) -> None:
    import threading

    from spotstack.runtime.cache.inventory import Following
    from spotstack.runtime.cache.schedule import Swarm
    from spotstack.runtime.cache.sources import Peer

    m = make_model(tmp_path / "model", {"a.bin": 6 * MiB})

    async def no_stream(self: PeerServer, request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found\n")

    old = PeerServer.inventory_stream
    PeerServer.inventory_stream = no_stream  # type: ignore[method-assign, assignment]
    try:
        async with peer(tmp_path / "stream-store-0") as s0, peer(tmp_path / "stream-store-1") as s1:
            names = [f"127.0.0.1:{s0.port}", f"127.0.0.1:{s1.port}"]
            reads = Reads()
            results = await asyncio.to_thread(swarm, tmp_path, names, True, reads)
            # The follower itself, on a peer that holds none of what it wants: after the refused stream, it polls
            # (the swarm above may finish before its first poll: its peers also answer chunk requests directly).
            p = Peer(names[0], TOKEN, 5.0)
            lock = threading.Condition()
            following = Following({names[0]: p}, {"f" * 64}, lambda n, h: None, Swarm("me", ("me",)), lock, poll_s=0.05)
            following.start(set())
            try:
                await wait_for(lambda: p.inventory_requests >= 3, what="the refused stream, then polls")
            finally:
                await asyncio.to_thread(following.stop)
    finally:
        PeerServer.inventory_stream = old  # type: ignore[method-assign]
    assert all(r.progress.done == m.total_bytes for r in results)
    assert sum(reads.by_node.values()) == m.total_bytes
    assert all(r.progress.inventory_requests >= 1 for r in results)  # each asked for the stream


async def test_a_store_that_cannot_be_read_for_a_while_keeps_the_stream_open() -> None:
    from spotstack.runtime.cache.inventory import InventoryWatch

    reads = iter([OSError("EIO"), ["a" * 64], ["a" * 64, "b" * 64]])

    def read() -> list[str]:
        r = next(reads, ["a" * 64, "b" * 64])
        if isinstance(r, Exception):
            raise r
        return r

    watch = InventoryWatch(read, every_s=0.01)
    seen: list[frozenset[str]] = []
    async for now in watch.changes(heartbeat_s=5.0, max_s=30.0):
        seen.append(now)
        if len(now) == 2:
            break
    await watch.close()
    assert seen[0] == {"a" * 64} and seen[-1] == {"a" * 64, "b" * 64}  # the failed read was skipped, not fatal
