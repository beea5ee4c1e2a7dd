"""The local fleet's model server: real MiniLM embeddings over HTTP, from files in a directory.

    POST /embed {"text": "..."}  ->  {"embedding": [...384 floats], "dim": 384}
    POST /task  {"texts": [...]} ->  {"count": n, "dim": 384, "norms": [...]}   (a queue task: an embedding batch)
    GET  /ready                  ->  200 once the model is loaded, else 503

It reads the model only from `model_dir` (the directory the agent pulled through the peer cache),
as any model server would read ordinary files.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from spotstack.runtime.local.minilm import MiniLM
from spotstack.runtime.net import serve

log = logging.getLogger("spotstack.model")


class ModelServer:
    def __init__(self, model_dir: str | Path, host: str, port: int) -> None:
        self.model_dir = Path(model_dir)
        self.host, self.port = host, port
        self.model: MiniLM | None = None
        self.served = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._runner: web.AppRunner | None = None

    async def load(self) -> None:
        self.model = await asyncio.get_running_loop().run_in_executor(self._pool, MiniLM, self.model_dir)
        log.info("model loaded from %s", self.model_dir)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.model else 503, text="ready\n" if self.model else "loading\n")

    async def embed(self, request: web.Request) -> web.Response:
        if self.model is None:
            return web.Response(status=503, text="loading\n")
        try:
            text = str((await request.json())["text"])[:4000]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text='expected {"text": "..."}\n')
        model = self.model
        vec = await asyncio.get_running_loop().run_in_executor(self._pool, model.embed, text)
        self.served += 1
        return web.json_response({"embedding": [round(float(x), 6) for x in vec], "dim": model.dim})

    async def task(self, request: web.Request) -> web.Response:
        """A queue task: embed a batch. What a real batch job would write (the vectors) is summarised by their
        norms and a checksum, so results stay small in the output queue."""
        if self.model is None:
            return web.Response(status=503, text="loading\n")
        try:
            texts = (await request.json())["texts"]
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text='expected {"texts": ["...", ...]}\n')
        model = self.model

        def batch() -> list[float]:
            return [float((model.embed(t[:4000]) ** 2).sum() ** 0.5) for t in texts[:64]]

        norms = await asyncio.get_running_loop().run_in_executor(self._pool, batch)
        self.served += 1
        return web.json_response({"count": len(norms), "dim": model.dim, "norms": [round(n, 6) for n in norms]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ready", self.ready)
        app.router.add_post("/embed", self.embed)
        app.router.add_post("/task", self.task)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._pool.shutdown(wait=False, cancel_futures=True)
