"""Incremental inventories: after the first answer a peer sends only the chunks it gained, and a restarted peer
(another epoch) sends everything again. An old peer's plain list still works."""

from __future__ import annotations

import asyncio
from pathlib import Path

from spotstack.runtime.cache.server import InventoryLog
from spotstack.runtime.cache.sources import Peer
from tests.runtime.cachekit import TOKEN, MiB, do_pull, make_model, peer


def test_log_sends_what_is_new_and_everything_on_another_epoch() -> None:
    log = InventoryLog()
    first = log.since(["a", "b"], "0" * 16 + ":0")
    assert first == {"epoch": log.epoch, "seq": 2, "full": True, "chunks": ["a", "b"]}
    assert log.since(["a", "b"], f"{log.epoch}:2")["chunks"] == []
    later = log.since(["a", "b", "c", "d"], f"{log.epoch}:2")
    assert later == {"epoch": log.epoch, "seq": 4, "full": False, "chunks": ["c", "d"]}
    assert log.since(["a", "b", "c", "d"], "ffffffffffffffff:4")["full"]  # a restarted server: another epoch
    assert log.since(["a"], f"{log.epoch}:99")["full"]  # a sequence it never gave
    assert log.since(["a"], "garbage")["full"]


async def test_peer_client_accumulates_increments_from_a_real_server(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 4 * MiB})
    await asyncio.to_thread(do_pull, tmp_path / "a", m, tmp_path / "dest-a", [], tmp_path / "model")
    async with peer(tmp_path / "a") as srv:
        client = Peer(f"127.0.0.1:{srv.port}", TOKEN, 5.0)
        assert await asyncio.to_thread(client.inventory) == set(m.files[0].chunks)
        sent_before = client._since
        # Nothing new: the second answer carries no hash, the client still knows them all.
        assert await asyncio.to_thread(client.inventory) == set(m.files[0].chunks)
        assert client._since == sent_before
        client.drop()
    async with peer(tmp_path / "a") as restarted:  # a new server process: a new epoch, the whole list again
        client2 = Peer(f"127.0.0.1:{restarted.port}", TOKEN, 5.0)
        client2._since = sent_before
        assert await asyncio.to_thread(client2.inventory) == set(m.files[0].chunks)
        assert client2._since.split(":")[0] != sent_before.split(":")[0]
        client2.drop()
