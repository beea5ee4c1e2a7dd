"""An OpenAI-compatible generative server over `TinyLM`: the local fleet's LLM workload, and the stand-in engine
the gateway's tests and benchmarks run against.

    POST /v1/completions       {"prompt": "text" | [token ids], "max_tokens": n, "stream": bool, ...}
    POST /v1/chat/completions  {"messages": [...], "continue_final_message": bool, ...}
    GET  /v1/models, /ready, /health, /metrics (requests in flight)

Streams are server-sent events, one token per event, ending with `data: [DONE]`, as vLLM, SGLang and TGI send them.
Like vLLM it accepts a prompt as token ids, `return_token_ids` (each choice then carries `token_ids`), and chat
continuation of a final assistant message (`continue_final_message`, `add_generation_prompt: false`).
`stream_options.include_usage` adds the usage event before `[DONE]`.

Timing models an engine on a GPU: the first token after `ttft_s` plus the prompt at `prefill_tokens_per_s`, then
one token every 1/`tokens_per_s` (default 30 tok/s: a 7-8B model on an L4). The model's real compute runs inside
those budgets. With `temperature` > 0 a token is sampled with a generator keyed on (`seed`, position), so a
continuation samples the same tokens the uninterrupted run would have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from spotstack.runtime.llm.model import Shape, TinyLM, decode, encode
from spotstack.runtime.net import serve

log = logging.getLogger("spotstack.llm")

MODEL_NAME = "spotstack-tiny"


@dataclass(frozen=True)
class EngineTiming:
    tokens_per_s: float = 30.0
    ttft_s: float = 0.1
    prefill_tokens_per_s: float = 20000.0
    max_tokens_limit: int = 8192


class BadRequest(ValueError):
    pass


def chat_prompt(messages: list[dict[str, Any]], add_generation_prompt: bool, continue_final: bool) -> str:
    """The chat template: `<|role|>` + newline + content, messages separated by newlines. A continued final message
    stays open (no separator after it), so generation extends it, as vLLM's `continue_final_message` does."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list is required")
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}]: role and content (strings) are required")
        last = i == len(messages) - 1
        parts.append(f"<|{m['role']}|>\n{m['content']}" + ("" if last and continue_final else "\n"))
    if continue_final:
        if messages[-1]["role"] != "assistant":
            raise BadRequest("continue_final_message: the final message must be the assistant's")
    elif add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


@dataclass
class Job:
    chat: bool
    prompt: list[int]
    max_tokens: int
    temperature: float
    seed: int
    token_ids: bool
    usage: bool
    model: str


def parse(body: Any, chat: bool, limit: int) -> Job:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if chat:
        cont = bool(body.get("continue_final_message", False))
        text = chat_prompt(body.get("messages"), bool(body.get("add_generation_prompt", not cont)), cont)  # type: ignore[arg-type]
        prompt = encode(text)
    else:
        raw = body.get("prompt", "")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (str, list)):
            raw = raw[0]  # a batch of one, as the OpenAI API allows
        if isinstance(raw, str):
            prompt = encode(raw)
        elif isinstance(raw, list) and all(isinstance(t, int) and 0 <= t < 96 for t in raw):
            prompt = list(raw)
        else:
            raise BadRequest("prompt: a string or a list of token ids (0..95)")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
        raise BadRequest(f"max_tokens: an integer in 1..{limit}")
    temperature = body.get("temperature", 0.0) or 0.0
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise BadRequest("temperature: a number >= 0")
    seed = body.get("seed", 0) or 0
    if not isinstance(seed, int):
        raise BadRequest("seed: an integer")
    opts = body.get("stream_options") or {}
    return Job(
        chat=chat,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=float(temperature),
        seed=seed,
        token_ids=bool(body.get("return_token_ids", False)),
        usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
        model=str(body.get("model") or MODEL_NAME),
    )


class LlmServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        timing: EngineTiming = EngineTiming(),
        model_dir: Path | None = None,
    ) -> None:
        """Without `model_dir` the weights are the fixed-seed ones at once; with it, not READY until `load()`."""
        self.host, self.port, self.timing = host, port, timing
        self.model_dir = model_dir
        self._model: TinyLM | None = TinyLM(Shape()) if model_dir is None else None
        self.active = 0
        self.served = 0
        self.generated = 0
        """Tokens sent, all requests."""
        self.ready = model_dir is None
        self._streams: set[web.StreamResponse] = set()
        self._registry = CollectorRegistry()
        Gauge("num_requests_running", "Requests being generated", registry=self._registry).set_function(
            lambda: self.active
        )
        self._runner: web.AppRunner | None = None

    @property
    def model(self) -> TinyLM:
        assert self._model is not None, "not loaded"
        return self._model

    async def load(self) -> None:
        """Read the weights from `model_dir` (the folder the agent placed the model in), then answer READY."""
        assert self.model_dir is not None
        self._model = await asyncio.to_thread(TinyLM.load, self.model_dir)
        self.ready = True
        log.info("model loaded from %s", self.model_dir)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/ready", self.ready_check)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.ready_check)
        self._runner, self.port = await serve(app, self.host, self.port, shutdown_timeout=1.0)
        log.info("LLM server on %s (%.0f tok/s)", self.url, self.timing.tokens_per_s)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def abort_streams(self) -> int:
        """Cut every stream in flight at the transport, as a killed process would (tests: a replica that dies)."""
        n = 0
        for resp in list(self._streams):
            task_transport = getattr(resp, "_req", None)
            transport = task_transport.transport if task_transport is not None else None
            if transport is not None:
                transport.abort()
                n += 1
        return n

    async def ready_check(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503, text="ready\n" if self.ready else "not ready\n")

    async def metrics(self, request: web.Request) -> web.Response:
        """Requests in flight as a Prometheus gauge, as vLLM exports `vllm:num_requests_running`: what an agent
        in front of an engine it does not proxy waits on to reach zero in its drain."""
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    def _tokens(self, job: Job) -> Any:
        """The job's tokens, one by one (a generator: each `next` is one decoding step). Sampling draws with a
        generator keyed on (seed, position): the same draw wherever and whenever that position is decoded."""
        cache = self.model.new_cache()
        logits = self.model.feed(cache, job.prompt)
        for i in range(job.max_tokens):
            if job.temperature > 0:
                tok = self.model.sample(logits, job.temperature, np.random.default_rng([job.seed, cache.length]))
            else:
                tok = int(np.argmax(logits))
            yield tok
            if i + 1 < job.max_tokens:
                logits = self.model.feed(cache, [tok])

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
            stream = bool(body.get("stream", False)) if isinstance(body, dict) else False
            job = parse(body, chat, self.timing.max_tokens_limit)
        except (ValueError, json.JSONDecodeError) as exc:
            return web.json_response({"error": {"message": str(exc), "type": "invalid_request_error"}}, status=400)
        if not self.ready:
            return web.json_response({"error": {"message": "not ready", "type": "unavailable"}}, status=503)
        self.active += 1
        try:
            if stream:
                return await self._stream(request, job)
            return await self._whole(job)
        finally:
            self.active -= 1
            self.served += 1

    async def _paced(self, job: Job) -> Any:
        """Yield the job's token ids on the engine's schedule."""
        t = self.timing
        start = time.monotonic()
        first = start + t.ttft_s + len(job.prompt) / t.prefill_tokens_per_s
        gen = self._tokens(job)
        for i in range(job.max_tokens):
            tok = next(gen)
            delay = first + i / t.tokens_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.generated += 1
            yield tok

    def _chunk(self, rid: str, created: int, job: Job, tok: int | None, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        text = decode([tok]) if tok is not None else ""
        if job.chat:
            choice["delta"] = {"content": text} if tok is not None else {}
        else:
            choice["text"] = text
        if job.token_ids and tok is not None:
            choice["token_ids"] = [tok]
        obj = "chat.completion.chunk" if job.chat else "text_completion"
        return {"id": rid, "object": obj, "created": created, "model": job.model, "choices": [choice]}

    async def _stream(self, request: web.Request, job: Job) -> web.StreamResponse:
        rid = ("chatcmpl-" if job.chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self._streams.add(resp)
        try:

            async def send(doc: dict[str, Any]) -> None:
                await resp.write(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")

            if job.chat:
                first = self._chunk(rid, created, job, None, None)
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                await send(first)
            n = 0
            async for tok in self._paced(job):
                n += 1
                doc = self._chunk(rid, created, job, tok, "length" if n == job.max_tokens else None)
                if n == 1 and job.token_ids:
                    doc["choices"][0]["prompt_token_ids"] = job.prompt  # as vLLM's first chunk carries them
                await send(doc)
            if job.usage:
                usage = {"prompt_tokens": len(job.prompt), "completion_tokens": n, "total_tokens": len(job.prompt) + n}
                obj = "chat.completion.chunk" if job.chat else "text_completion"
                await send(
                    {"id": rid, "object": obj, "created": created, "model": job.model, "choices": [], "usage": usage}
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        finally:
            self._streams.discard(resp)
        return resp

    async def _whole(self, job: Job) -> web.Response:
        toks = [tok async for tok in self._paced(job)]
        text = decode(toks)
        rid = ("chatcmpl-" if job.chat else "cmpl-") + uuid.uuid4().hex
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if job.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if job.token_ids:
            choice["token_ids"] = toks
        usage = {
            "prompt_tokens": len(job.prompt),
            "completion_tokens": len(toks),
            "total_tokens": len(job.prompt) + len(toks),
        }
        obj = "chat.completion" if job.chat else "text_completion"
        return web.json_response(
            {
                "id": rid,
                "object": obj,
                "created": int(time.time()),
                "model": job.model,
                "choices": [choice],
                "usage": usage,
            }
        )
