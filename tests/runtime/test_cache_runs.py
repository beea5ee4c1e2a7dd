"""Runs: consecutive chunks of a file asked of a peer in one request and sent in one answer (/v1/runs), and a pull
that asks runs only of peers that serve them, and each chunk alone of any peer that will not."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from spotstack.runtime.cache.assemble import FileJob, PullError
from spotstack.runtime.cache.manifest import MANIFEST_NAME, read_manifest
from spotstack.runtime.cache.pull import PullResult
from spotstack.runtime.cache.server import MAX_RUN, PeerServer
from spotstack.runtime.cache.store import Store
from tests.runtime.cachekit import TOKEN, MiB, digest_tree, do_pull, make_model

HDR = {"Authorization": f"Bearer {TOKEN}"}


class Counting(PeerServer):
    """A peer server that counts the chunk and run requests it answers; `runs` False: one from before runs (its
    inventory does not offer them, and it has no /v1/runs); `refuse_runs`: offers them but answers 409."""

    def __init__(self, store_dir: Path, *, runs: bool = True, refuse_runs: bool = False) -> None:
        super().__init__(Store(store_dir, 1 << 34), TOKEN, "127.0.0.1", 0)
        self.offers, self.refuse_runs = runs, refuse_runs
        self.chunk_requests = self.run_requests = 0

    async def chunk(self, request: web.Request) -> web.StreamResponse:
        self.chunk_requests += 1
        return await super().chunk(request)

    async def run(self, request: web.Request) -> web.StreamResponse:
        self.run_requests += 1
        if self.refuse_runs:
            return web.Response(status=409, text="not one span here\n")
        return await super().run(request)

    async def inventory(self, request: web.Request) -> web.Response:
        resp = await super().inventory(request)
        if not self.offers:
            answer = json.loads(resp.body)  # type: ignore[arg-type]
            if isinstance(answer, dict):
                answer.pop("runs", None)
            return web.json_response(answer)
        return resp

    def app(self) -> web.Application:
        app = super().app()
        if not self.offers:  # an older peer: no such route
            app = web.Application(middlewares=[self._auth])
            app.router.add_get("/v1/chunks/{digest}", self.chunk)
            app.router.add_get("/v1/inventory", self.inventory)
        return app


async def test_a_run_of_consecutive_chunks_comes_in_one_answer_and_anything_else_is_refused(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 4 * MiB + 100, "v.bin": 2 * MiB})
    await asyncio.to_thread(do_pull, tmp_path / "a", m, tmp_path / "dest", [], tmp_path / "model")
    w = next(f for f in m.files if f.path == "w.bin")
    v = next(f for f in m.files if f.path == "v.bin")
    data = (tmp_path / "model" / "w.bin").read_bytes()
    srv = Counting(tmp_path / "a")
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            base = f"http://127.0.0.1:{srv.port}"

            async def get(*hashes: str, headers: dict[str, str] = HDR) -> tuple[int, bytes]:
                async with s.get(f"{base}/v1/runs/{','.join(hashes)}", headers=headers) as r:
                    return r.status, await r.read()

            async with s.get(f"{base}/v1/inventory?since=0", headers=HDR) as r:
                assert (await r.json())["runs"] == MAX_RUN
            assert await get(*w.chunks[:3]) == (200, data[: 3 * MiB])
            assert await get(*w.chunks[3:]) == (200, data[3 * MiB :])  # the file's short last chunk too
            assert (await get(w.chunks[0], w.chunks[2]))[0] == 409  # not consecutive
            assert (await get(w.chunks[1], w.chunks[0]))[0] == 409  # not in order
            assert (await get(w.chunks[-1], v.chunks[0]))[0] == 409  # two files
            assert (await get(w.chunks[0], "0" * 64))[0] == 404  # not here
            assert (await get(*([w.chunks[0]] * (MAX_RUN + 1))))[0] == 400
            assert (await get(w.chunks[0], "../../etc/passwd"))[0] in (400, 404)
            assert (await get(w.chunks[0], headers={}))[0] == 401
            async with s.head(f"{base}/v1/runs/{w.chunks[0]}", headers=HDR) as r:
                assert r.status == 405  # a run is only ever sent, never asked about
        assert srv.served_bytes == len(data)
    finally:
        await srv.stop()


def expected(model: Path) -> dict[str, str]:
    return {k: v for k, v in digest_tree(model).items() if k != MANIFEST_NAME}


async def pull_through(srv: Counting, tmp_path: Path) -> PullResult:
    """Pull the 8-chunk model from `srv` alone, four chunks a request where it serves runs."""
    m = read_manifest(str(tmp_path / "model"))
    await srv.start()
    try:
        peers = [f"127.0.0.1:{srv.port}"]
        return await asyncio.to_thread(
            do_pull, tmp_path / "new", m, tmp_path / "out", peers, None, chunks_per_request=4
        )
    finally:
        await srv.stop()


def seeded(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 8 * MiB})
    do_pull(tmp_path / "a", m, tmp_path / "dest", [], tmp_path / "model")


@pytest.mark.parametrize(
    ("peer", "runs", "chunks"),
    [
        pytest.param({}, 2, 0, id="a peer that serves runs: four chunks a request"),
        pytest.param({"runs": False}, 0, 8, id="a peer from before runs: chunk by chunk"),
        # Each chunk was in one refused run (0-3, 4-7), then asked alone: no failure counted, the peer not banned.
        pytest.param({"refuse_runs": True}, 2, 8, id="a peer that refuses a run: its chunks alone"),
    ],
)
async def test_a_pull_asks_runs_only_where_a_peer_serves_them(
    tmp_path: Path, peer: dict[str, bool], runs: int, chunks: int
) -> None:
    await asyncio.to_thread(seeded, tmp_path)
    srv = Counting(tmp_path / "a", **peer)
    r = await pull_through(srv, tmp_path)
    assert digest_tree(tmp_path / "out") == expected(tmp_path / "model")
    assert (srv.run_requests, srv.chunk_requests, r.progress.refetched, r.progress.banned) == (runs, chunks, 0, set())


async def test_a_full_cache_between_chunks_of_a_run_is_this_nodes_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking a received chunk servable runs into a full cache while the run's answer is still open: said so at
    once, not taken for the peer's fault and retried until no source is left."""
    await asyncio.to_thread(seeded, tmp_path)

    def full(self: FileJob, i: int, data: memoryview | None, buf: bytearray | None) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(FileJob, "store_chunk", full)
    with pytest.raises(PullError, match=r"the cache at .* is full") as caught:
        await pull_through(Counting(tmp_path / "a"), tmp_path)
    assert "no source left" not in str(caught.value)
