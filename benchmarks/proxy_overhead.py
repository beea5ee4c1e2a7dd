"""What the agent's counting proxy costs in the request path.

Three processes as on a node: a workload (a minimal HTTP server answering 1 KiB), the agent
(`spotstack agent run`, proxying to the workload and counting requests in flight), and a metadata
emulator for it to watch. The client, in this process, sends the same requests straight to the
workload (the baseline) and through the proxy, in alternating rounds, and reports medians:
sequential latency (p50/p99) and throughput with 32 requests in flight.

    .venv/bin/python benchmarks/proxy_overhead.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from spotstack.runtime.net import free_port

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def wait_up(url: str, timeout_s: float = 20) -> None:
    end = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < end:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def sequential(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.get(url) as r:
            await r.read()
        out.append(time.perf_counter() - t)
    return out


async def concurrent(session: aiohttp.ClientSession, url: str, n: int, width: int = 32) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.get(url) as r:
                await r.read()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return n / (time.perf_counter() - t)


async def main(requests: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="spotstack-proxy-"))
    wport, pport, rport = free_port(), free_port(), free_port()
    url_file = tmp / "imds.url"
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "_echo_server.py"), str(wport)]),
        subprocess.Popen(
            [str(BIN / "spotstack"), "emulator", "aws", "--url-file", str(url_file)], stdout=subprocess.DEVNULL
        ),
    ]
    try:
        for _ in range(100):
            if url_file.exists():
                break
            await asyncio.sleep(0.1)
        cfg = {
            "cloud": "aws",
            "metadata": {"base_url": url_file.read_text()},
            "readiness": {"host": "127.0.0.1", "port": rport},
            "workload": {"port": wport},
            "inflight": {"proxy_listen_port": pport},
        }
        (tmp / "agent.json").write_text(json.dumps(cfg))
        procs.append(
            subprocess.Popen(
                [str(BIN / "spotstack"), "agent", "run", "--config", str(tmp / "agent.json"), "--log-level", "error"],
                env={**os.environ},
            )
        )
        direct, proxied = f"http://127.0.0.1:{wport}/infer", f"http://127.0.0.1:{pport}/infer"
        await wait_up(direct)
        await wait_up(proxied)
        res: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p99": [], "rps": []} for k in ("direct", "proxy")}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
            await sequential(s, direct, 200)  # warm both paths
            await sequential(s, proxied, 200)
            for _ in range(rounds):
                for name, url in (("direct", direct), ("proxy", proxied)):
                    lat = await sequential(s, url, requests)
                    res[name]["p50"].append(statistics.median(lat))
                    res[name]["p99"].append(pct(lat, 99))
                    res[name]["rps"].append(await concurrent(s, url, requests))
        med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in res.items()}
        print(f"{requests} requests x {rounds} rounds, 1 KiB responses, medians over rounds")
        for k in ("direct", "proxy"):
            print(
                f"{k:7s} p50 {med[k]['p50'] * 1e3:6.3f} ms  p99 {med[k]['p99'] * 1e3:6.3f} ms  "
                f"{med[k]['rps']:8.0f} req/s at 32 in flight"
            )
        print(
            f"proxy adds {(med['proxy']['p50'] - med['direct']['p50']) * 1e3:.3f} ms at p50 "
            f"({med['proxy']['p50'] / med['direct']['p50']:.2f}x); throughput ratio "
            f"{med['proxy']['rps'] / med['direct']['rps']:.2f}"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main(a.requests, a.rounds))
