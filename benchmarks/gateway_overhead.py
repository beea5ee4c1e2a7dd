"""What the fleet gateway costs in the path of streamed LLM requests, and how fast it continues a cut stream.

Processes as in a fleet: a stand-in replica (an OpenAI-compatible SSE server that sends `--tokens` token events,
one every `--itl-ms`, answering with token ids as vLLM does; fast and cheap so that it is never the bottleneck) and
`spotstack gateway run` in front of it. The client here sends the same streamed requests straight to the replica
(the baseline) and through the gateway, in alternating rounds, and reports medians over the rounds:

- latency: TTFT p50 and inter-token p99 with `--concurrency` streams at a time, paced tokens, the streams
  started spread over one stream's duration (as independent users arrive, not in lockstep);
- throughput: streamed requests per second through one gateway process, tokens unpaced (`--burst-tokens` each);
- continuation: two real generative replicas (`spotstack llm serve`) behind the gateway; one is killed mid-stream
  (SIGKILL) in each of `--cuts` runs; the gap the client sees against the replica's own TTFT.

    .venv/bin/python benchmarks/gateway_overhead.py [--rounds 5] [--seconds 5] [--cuts 10]
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
from aiohttp import web

BIN = Path(sys.executable).parent


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


# ---- the stand-in replica (run as its own process) -------------------------------------------------
def replica_main(port_file: Path, tokens: int, itl_ms: float) -> None:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens", tokens))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            choice = {"index": 0, "text": "x", "token_ids": [i % 90], "finish_reason": "length" if i == n - 1 else None}
            doc = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
            if itl_ms:
                await asyncio.sleep(itl_ms / 1000)
        usage = {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": 4 + n}
        await resp.write(b"data: " + json.dumps({"id": "cmpl-1", "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        app.router.add_get("/ready", ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        port_file.write_text(str(port))
        await asyncio.Event().wait()

    asyncio.run(main())


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def spotstack(port_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """A `spotstack` command on a port of its own choosing, written to `port_file`."""
    return spawn(
        [str(BIN / "spotstack"), *args, "--port", "0", "--port-file", str(port_file), "--log-level", "warning"]
    )


async def port_of(port_file: Path) -> int:
    end = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > end:
            raise SystemExit(f"{port_file} never appeared")
        await asyncio.sleep(0.05)
    return int(port_file.read_text())


# ---- the client -------------------------------------------------------------------------------------
async def one(session: aiohttp.ClientSession, url: str, tokens: int) -> tuple[float, list[float]]:
    """One streamed request: (TTFT, inter-token gaps)."""
    t0 = time.perf_counter()
    ttft, gaps, last = 0.0, [], 0.0
    body = {"prompt": "bench", "max_tokens": tokens, "stream": True}
    async with session.post(url + "/v1/completions", json=body) as r:
        async for line in r.content:
            if line.startswith(b"data: {"):
                now = time.perf_counter()
                if ttft == 0.0:
                    ttft = now - t0
                else:
                    gaps.append(now - last)
                last = now
    return ttft, gaps


async def load(
    url: str, concurrency: int, seconds: float, tokens: int, spread_s: float = 0.0
) -> tuple[int, list[float], list[float]]:
    """`concurrency` streams at a time for `seconds`: (requests done, TTFTs, inter-token gaps). `spread_s`: the
    workers start spread over this long (one stream's duration), as independent users arrive; streams of equal
    length started at one instant stay in lockstep, and every TTFT would then be measured at the back of a
    `concurrency`-deep burst."""
    done, ttfts, gaps = 0, [], []
    end = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker(i: int) -> None:
            nonlocal done
            await asyncio.sleep(spread_s * i / concurrency)
            while time.perf_counter() < end:
                t, g = await one(session, url, tokens)
                done += 1
                ttfts.append(t)
                gaps.extend(g)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, ttfts, gaps


async def overhead(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    me = [sys.executable, __file__, "--role", "replica"]
    paced = spawn([*me, "--port-file", str(tmp / "paced"), "--itl-ms", str(args.itl_ms)])
    burst = spawn([*me, "--port-file", str(tmp / "burst"), "--itl-ms", "0"])
    procs = [paced, burst]
    try:
        pp, bp = await port_of(tmp / "paced"), await port_of(tmp / "burst")
        gws = {}
        for name, port in (("paced", pp), ("burst", bp)):
            g = spotstack(tmp / f"gw-{name}", "gateway", "run", "--replica", f"http://127.0.0.1:{port}")
            procs.append(g)
            gws[name] = await port_of(tmp / f"gw-{name}")
        await asyncio.sleep(1.0)  # the gateways' first probes
        rows: dict[str, list[float]] = {k: [] for k in ("ttft_d", "ttft_g", "itl_d", "itl_g", "rps_d", "rps_g")}
        for r in range(args.rounds):
            for via, port in (("d", pp), ("g", gws["paced"])):
                spread = args.tokens * args.itl_ms / 1000  # one stream's duration
                _, ttfts, gaps = await load(
                    f"http://127.0.0.1:{port}", args.concurrency, args.seconds, args.tokens, spread
                )
                rows[f"ttft_{via}"].append(statistics.median(ttfts) * 1000)
                rows[f"itl_{via}"].append(pct(gaps, 99) * 1000)
            for via, port in (("d", bp), ("g", gws["burst"])):
                n, _, _ = await load(
                    f"http://127.0.0.1:{port}", args.burst_concurrency, args.seconds, args.burst_tokens
                )
                rows[f"rps_{via}"].append(n / args.seconds)
            print(
                f"round {r + 1}: TTFT p50 {rows['ttft_d'][-1]:.2f} -> {rows['ttft_g'][-1]:.2f} ms, "
                f"ITL p99 {rows['itl_d'][-1]:.2f} -> {rows['itl_g'][-1]:.2f} ms, "
                f"{rows['rps_d'][-1]:.0f} -> {rows['rps_g'][-1]:.0f} streamed req/s",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in rows.items()}
        return {
            "ttft_p50_ms": {
                "direct": round(med["ttft_d"], 2),
                "gateway": round(med["ttft_g"], 2),
                "added": round(med["ttft_g"] - med["ttft_d"], 2),
            },
            "inter_token_p99_ms": {
                "direct": round(med["itl_d"], 2),
                "gateway": round(med["itl_g"], 2),
                "added": round(med["itl_g"] - med["itl_d"], 2),
            },
            "streamed_requests_per_s": {
                "direct": round(med["rps_d"]),
                "gateway": round(med["rps_g"]),
                "tokens_each": args.burst_tokens,
            },
        }
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def continuation(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    """Cut a stream `--cuts` times (SIGKILL of its replica) and time the client's gap against the replica's TTFT."""
    gaps, ttfts = [], []
    for k in range(args.cuts):
        procs = []
        try:
            procs += [spotstack(tmp / f"c{k}-{i}", "llm", "serve") for i in range(2)]
            ports = [await port_of(tmp / f"c{k}-{i}") for i in range(2)]
            reps = [a for p in ports for a in ("--replica", f"http://127.0.0.1:{p}")]
            procs.append(spotstack(tmp / f"g{k}", "gateway", "run", *reps))
            gp = await port_of(tmp / f"g{k}")
            await asyncio.sleep(1.0)
            async with aiohttp.ClientSession() as s:
                t, _ = await one(s, f"http://127.0.0.1:{ports[1]}", 4)  # the replica's own TTFT, direct
                ttfts.append(t)
                body = {"prompt": f"run {k}", "max_tokens": 200, "stream": True}
                got, last, gap = 0, 0.0, 0.0
                async with s.post(f"http://127.0.0.1:{gp}/v1/completions", json=body) as r:
                    async for line in r.content:
                        if not line.startswith(b"data: {"):
                            continue
                        now = time.perf_counter()
                        got += 1
                        if got == 31:
                            gap = now - last  # the token after the kill
                        last = now
                        if got == 30:
                            procs[0].kill()  # the first listed replica serves it
                if got < 200:
                    raise SystemExit(f"run {k}: the stream ended after {got} tokens")
                gaps.append(gap)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    return {
        "runs": args.cuts,
        "continuation_gap_ms": {"p50": round(pct(gaps, 50) * 1000, 1), "p99": round(max(gaps) * 1000, 1)},
        "replica_ttft_ms": {"p50": round(pct(ttfts, 50) * 1000, 1), "p99": round(max(ttfts) * 1000, 1)},
        "gap_p99_over_ttft_p99": round(max(gaps) / max(ttfts), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="client", choices=["client", "replica"])
    ap.add_argument("--port-file", type=Path)
    ap.add_argument("--itl-ms", type=float, default=20.0, help="the stand-in's inter-token time (latency rounds)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--burst-tokens", type=int, default=8)
    ap.add_argument("--burst-concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cuts", type=int, default=10)
    args = ap.parse_args()
    if args.role == "replica":
        replica_main(args.port_file, args.tokens, args.itl_ms)
        return
    with tempfile.TemporaryDirectory() as d:
        out = {"cpus": os.cpu_count(), **asyncio.run(overhead(args, Path(d)))}
        if args.cuts:
            out["continuation"] = asyncio.run(continuation(args, Path(d)))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
