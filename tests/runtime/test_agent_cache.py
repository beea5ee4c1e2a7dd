"""`spotstack agent run` with the cache: it serves peers, pulls its model from them, then is ready."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from tests.runtime.cachekit import TOKEN, MiB, digest_tree, do_pull, make_model, peer


async def test_agent_pulls_from_peers_before_it_is_ready(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 6 * MiB, "c.json": 100})
    do_pull(tmp_path / "peer", m, tmp_path / "peer-dest", [], tmp_path / "model")
    (tmp_path / "token").write_text(TOKEN)
    async with peer(tmp_path / "peer") as other, GcpMetadataEmulator() as emu:
        (tmp_path / "peers").write_text(f"127.0.0.1:{other.port}\n# the node itself is excluded\n")
        cfg = AgentConfig.model_validate(
            {
                "cloud": "gcp",
                "metadata": {"base_url": emu.url},
                "readiness": {"host": "127.0.0.1", "port": 0},
                "cache": {
                    "enabled": True,
                    "model_url": str(tmp_path / "model"),
                    "dest": str(tmp_path / "dest"),
                    "store_dir": str(tmp_path / "store"),
                    "peer_port": 0,
                    "token_file": str(tmp_path / "token"),
                    "discovery": "file",
                    "discovery_target": str(tmp_path / "peers"),
                },
            }
        )
        agent = Agent(cfg)
        await agent.start()
        try:
            assert agent.server is not None
            ready = f"http://127.0.0.1:{agent.server.port}/ready"
            async with aiohttp.ClientSession() as s:
                for _ in range(100):
                    loading = not (agent.state.model and agent.state.model["state"] == "ready")
                    async with s.get(ready) as r:
                        status = r.status
                    # Never ready while the model is loading. (It may finish between the look and the answer: a
                    # 200 then is right, but only with the model loaded by the time the answer is read.)
                    assert status == 503 or (agent.state.model and agent.state.model["state"] == "ready")
                    if not loading:
                        break
                    await asyncio.sleep(0.05)
                assert status == 200
                # It now serves the model to the next node, too.
                hdr = {"Authorization": f"Bearer {TOKEN}"}
                async with s.get(f"http://127.0.0.1:{agent.peer_server.port}/v1/inventory", headers=hdr) as r:
                    assert set(await r.json()) == {h for f in m.files for h in f.chunks}
                async with s.get(f"http://127.0.0.1:{agent.peer_server.port}/v1/chunks/{'0' * 63}", headers=hdr) as r:
                    assert r.status == 400  # refused, and counted
                # Prometheus: bytes by source, chunk latencies, the cache server's counters.
                async with s.get(f"http://127.0.0.1:{agent.server.port}/metrics") as r:
                    text = await r.text()
            metrics = {
                ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln and not ln.startswith("#")
            }
            assert metrics['spotstack_cache_pulled_bytes_total{source="peer"}'] == m.total_bytes
            assert 'spotstack_cache_pulled_bytes_total{source="origin"}' not in metrics
            assert metrics['spotstack_cache_chunk_seconds_count{source="peer"}'] == sum(len(f.chunks) for f in m.files)
            assert metrics['spotstack_cache_refused_requests_total{reason="bad_hash"}'] == 1
            assert metrics["spotstack_cache_served_bytes_total"] == 0
            assert metrics["spotstack_cache_peer_bans_total"] == 0
            assert agent.state.model is not None
            assert agent.state.model["from_peers"] == m.total_bytes and agent.state.model["from_origin"] == 0
            assert digest_tree(tmp_path / "dest") == {
                "c.json": digest_tree(tmp_path / "model")["c.json"],
                "w.bin": digest_tree(tmp_path / "model")["w.bin"],
            }
        finally:
            await agent.stop()
