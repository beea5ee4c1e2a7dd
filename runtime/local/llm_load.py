"""Streaming LLM load on a local fleet: `concurrency` clients, each streaming completions and chats one after
another (answers of 50 to 2000 tokens), every stream compared with its uninterrupted reference (greedy decoding of
the same fixed-seed model: the exact text a replica that never died would have sent).

A stream counts as failed when it ends without `[DONE]` or with an error; its tokens as duplicated or missing
where its text differs from the reference (a diff: text the reference lacks is duplicated, text it has that
the stream lacks is missing).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from spotstack.runtime.llm.model import TinyLM, encode
from spotstack.runtime.llm.server import chat_prompt

WORDS = ["spot", "capacity", "drains", "a", "replica", "before", "its", "node", "goes", "the", "gateway", "carries"]


@dataclass
class StreamResult:
    kind: str
    max_tokens: int
    ok: bool = False
    error: str = ""
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    duplicated: int = 0
    missing: int = 0
    prompt: list[int] = field(default_factory=list)
    text: str = ""


@dataclass
class LlmLoadResult:
    streams: list[StreamResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        done = self.streams
        ttfts = sorted(s.ttft for s in done if s.ok)
        gaps = sorted(g for s in done for g in s.gaps)
        errors: dict[str, int] = {}
        for s in done:
            if not s.ok:
                errors[s.error[:80]] = errors.get(s.error[:80], 0) + 1
        return {
            "streams": len(done),
            "completed": sum(s.ok for s in done),
            "failed": sum(not s.ok for s in done),
            "tokens": sum(s.max_tokens for s in done if s.ok),
            "duplicated_tokens": sum(s.duplicated for s in done),
            "missing_tokens": sum(s.missing for s in done),
            "byte_identical": sum(s.ok and not s.duplicated and not s.missing for s in done),
            "ttft_s": {"p50": _pct(ttfts, 50), "p99": _pct(ttfts, 99)},
            "inter_token_s": {"p50": _pct(gaps, 50), "p99": _pct(gaps, 99)},
            "errors": errors,
            "seconds": round(self.seconds, 1),
        }


def _pct(xs: list[float], p: float) -> float:
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 4) if xs else 0.0


def reference(model: TinyLM, prompt: list[int], n: int) -> str:
    from spotstack.runtime.llm.model import decode

    cache = model.new_cache()
    out = [model.prefill(cache, prompt)]
    while len(out) < n:
        out.append(model.step(cache, out[-1]))
    return decode(out)


def _diff(got: str, want: str) -> tuple[int, int]:
    dup = miss = 0
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, got, want, autojunk=False).get_opcodes():
        if op in ("insert", "replace"):
            miss += b1 - b0
        if op in ("delete", "replace"):
            dup += a1 - a0
    return dup, miss


async def one_stream(
    session: aiohttp.ClientSession, url: str, rng: random.Random, headers: dict[str, str]
) -> StreamResult:
    kind = rng.choice(["completions", "chat"])
    # Answer lengths as chat traffic has them (most short, a long tail): log-uniform over 50-2000 tokens.
    n = round(math.exp(rng.uniform(math.log(50), math.log(2000))))
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
    if kind == "chat":
        messages = [{"role": "user", "content": text}]
        body: dict[str, Any] = {"messages": messages, "max_tokens": n, "stream": True}
        prompt = encode(chat_prompt(messages, True, False))
        path = "/v1/chat/completions"
    else:
        body = {"prompt": text, "max_tokens": n, "stream": True}
        prompt = encode(text)
        path = "/v1/completions"
    res = StreamResult(kind, n)
    parts: list[str] = []
    t0 = time.monotonic()
    last = t0
    done = 0
    try:
        async with session.post(url + path, json=body, headers=headers) as r:
            if r.status != 200:
                res.error = f"HTTP {r.status}: {(await r.text())[:120]}"
                return res
            async for line in r.content:
                if line == b"data: [DONE]\n":
                    done += 1
                elif line.startswith(b"data: {"):
                    doc = json.loads(line[6:])
                    for c in doc.get("choices") or []:
                        piece = c.get("text") or (c.get("delta") or {}).get("content") or ""
                        if piece:
                            now = time.monotonic()
                            if not parts:
                                res.ttft = now - t0
                            else:
                                res.gaps.append(now - last)
                            last = now
                            parts.append(piece)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        res.error = type(exc).__name__
    res.prompt, res.text = prompt, "".join(parts)
    if not res.error and done != 1:
        res.error = f"{done} [DONE] events"
    res.ok = not res.error
    return res


async def run_llm_load(
    url: str,
    concurrency: int,
    duration_s: float,
    seed: int = 1,
    api_key: str | None = None,
    stop: asyncio.Event | None = None,
) -> LlmLoadResult:
    """`concurrency` clients streaming one request after another until `duration_s` has passed or `stop` is set
    (each stream that started is awaited to its end)."""
    out = LlmLoadResult()
    model = TinyLM()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=900, sock_read=120)

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.monotonic() - started < duration_s and not (stop and stop.is_set()):
                out.streams.append(await one_stream(session, url, rng, headers))

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    out.seconds = time.monotonic() - started

    # Each stream against its reference, once the load is over (computing them meanwhile would hold this process's
    # event loop, and the clients would read their tokens late and in bursts), and in a thread: seconds of model
    # steps would hold the fleet's own loop (its ticks, its controller) in this process.
    def check() -> None:
        for s in out.streams:
            s.duplicated, s.missing = _diff(s.text, reference(model, s.prompt, s.max_tokens))

    await asyncio.to_thread(check)
    return out
