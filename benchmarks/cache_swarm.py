"""K nodes joining at once with a cold origin (issue 14): the swarm against every node reading from the origin.

In one run, on the same generated model, with moto's S3 server (its own process) as the origin read through s3fs:
  - alone: K nodes pull at the same time, each with its own cache server but no swarm (today's behaviour when
           nobody holds the model yet: every node reads the whole model from the origin);
  - swarm: K nodes pull at the same time as one swarm (`PullOptions.swarm_self`): each chunk is read from the
           origin once, by its rendezvous owner, and the rest flows between the nodes.
  - swarm, polled: the swarm as it was, each joiner asking every peer what it holds every 0.25 s.
Reported: bytes read from the origin (target <= 1.2 x the model), time until the last node has the model, that every
node's files are byte-identical to the model, and what learning each other's inventories cost (requests and HTTP
bytes, streamed against polled: target <= 10%). Medians over --rounds.

    .venv/bin/python benchmarks/cache_swarm.py [--mb 500] [--nodes 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from spotstack.runtime.cache.manifest import MANIFEST_NAME, Manifest, build_manifest, write_manifest
from spotstack.runtime.cache.pull import Origin, PullOptions, pull
from spotstack.runtime.cache.server import PeerServer
from spotstack.runtime.cache.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from _moto_s3 import start_s3

TOKEN = "benchmark-fleet-token-000000"
BIN = Path(sys.executable).parent


class CountingOrigin(Origin):
    def __init__(self, url: str, counter: list[int], lock: threading.Lock) -> None:
        super().__init__(url)
        self.counter, self.lock = counter, lock

    def read(self, rel: str, offset: int, size: int) -> bytes:
        data = super().read(rel, offset, size)
        with self.lock:
            self.counter[0] += len(data)
        return data


def generate(root: Path, total: int) -> None:
    root.mkdir(parents=True)
    block = bytearray(os.urandom(1 << 20))
    with open(root / "model.safetensors", "wb") as f:
        for n in range(total >> 20):
            block[:8] = n.to_bytes(8, "little")
            f.write(block)
    (root / "config.json").write_text('{"architectures": ["Benchmark"]}')


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.glob("*")):
        if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_NAME:
            h.update(p.read_bytes())
    return h.hexdigest()


async def round_(
    m: Manifest, url: str, work: Path, nodes: int, swarm: bool, stream: bool = True
) -> tuple[float, int, tuple[int, int]]:
    counter, lock = [0], threading.Lock()
    servers = [PeerServer(Store(work / f"s{k}", 1 << 40), TOKEN, "127.0.0.1", 0) for k in range(nodes)]
    for s in servers:
        await s.start()
    names = [f"127.0.0.1:{s.port}" for s in servers]
    try:
        t = time.perf_counter()
        results = await asyncio.gather(
            *(
                asyncio.to_thread(
                    pull,
                    Store(work / f"s{k}", 1 << 40),
                    m,
                    work / f"d{k}",
                    peers=names if swarm else [],
                    token=TOKEN,
                    origin=CountingOrigin(url, counter, lock),
                    options=PullOptions(swarm_self=names[k] if swarm else None, inventory_stream=stream),
                )
                for k in range(nodes)
            )
        )
        secs = time.perf_counter() - t
    finally:
        for s in servers:
            await s.stop()
    assert all(r.progress.done == m.total_bytes for r in results)
    inventory = (sum(r.progress.inventory_requests for r in results), sum(r.progress.inventory_bytes for r in results))
    return secs, counter[0], inventory


def main(mb: int, nodes: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="spotstack-swarm-", dir="/dev/shm"))
    moto: subprocess.Popen[bytes] | None = None
    try:
        model = work / "model"
        generate(model, mb << 20)
        m = build_manifest(str(model))
        write_manifest(str(model), m)
        want = digest(model)
        moto, url = start_s3(model)
        print(f"model: {m.total_bytes / 1e6:.0f} MB, {sum(len(f.chunks) for f in m.files)} chunks; {nodes} nodes")
        modes = {"alone": (False, True), "swarm": (True, True), "swarm, polled": (True, False)}
        out: dict[str, list[tuple[float, int]]] = {k: [] for k in modes}
        inv: dict[str, list[tuple[int, int]]] = {k: [] for k in modes}
        for r in range(rounds):
            for mode, (swarm, stream) in modes.items():
                run = work / f"run-{r}-{mode.replace(', ', '-')}"
                secs, origin_bytes, inventory = asyncio.run(round_(m, url, run, nodes, swarm, stream))
                same = all(digest(run / f"d{k}") == want for k in range(nodes))
                assert same, "a node's files differ from the model"
                out[mode].append((secs, origin_bytes))
                inv[mode].append(inventory)
                print(
                    f"round {r + 1} {mode}: {secs:6.2f} s, origin {origin_bytes / m.total_bytes:.2f} x the model, "
                    f"every node byte-identical; inventory {inventory[0]} requests, {inventory[1] / 1e3:.1f} kB"
                )
                shutil.rmtree(run)
        alone_s = statistics.median(s for s, _ in out["alone"])
        swarm_s = statistics.median(s for s, _ in out["swarm"])
        polled_s = statistics.median(s for s, _ in out["swarm, polled"])
        alone_b = statistics.median(b for _, b in out["alone"]) / m.total_bytes
        swarm_b = statistics.median(b for _, b in out["swarm"]) / m.total_bytes
        req = {k: statistics.median(i[0] for i in v) for k, v in inv.items()}
        kb = {k: statistics.median(i[1] for i in v) / 1e3 for k, v in inv.items()}
        print(f"\n{nodes} nodes, {m.total_bytes / 1e6:.0f} MB, {os.cpu_count()} cores, medians of {rounds}")
        print(f"  all from origin   {alone_s:6.2f} s   origin bytes {alone_b:.2f} x the model")
        print(f"  swarm             {swarm_s:6.2f} s   origin bytes {swarm_b:.2f} x the model  (target <= 1.2)")
        print(f"  swarm time / all-from-origin time = {swarm_s / alone_s:.2f}")
        print(f"  swarm, polled     {polled_s:6.2f} s")
        s_req, s_kb, p_req, p_kb = req["swarm"], kb["swarm"], req["swarm, polled"], kb["swarm, polled"]
        print(f"  inventory, streamed: {s_req:.0f} requests, {s_kb:.1f} kB")
        print(f"  inventory, polled:   {p_req:.0f} requests, {p_kb:.1f} kB")
        print(f"  streamed / polled inventory bytes = {s_kb / p_kb:.1%} (target <= 10%)")
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    main(a.mb, a.nodes, a.rounds)
