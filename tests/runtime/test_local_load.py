"""`spotstack local load`'s sender (runtime/local/load.py): open-loop requests, and a window a signal ends early
with every request already sent answered (Ctrl-C ends the window, not the report)."""

from __future__ import annotations

import asyncio
import os
import signal

from aiohttp import web

from spotstack.runtime.local.load import run_load_until_signal
from spotstack.runtime.net import serve


async def test_a_signal_ends_the_window_and_every_request_sent_is_answered() -> None:
    seen, signalled = asyncio.Event(), asyncio.Event()
    answered = 0

    async def embed(request: web.Request) -> web.Response:
        nonlocal answered
        seen.set()
        await signalled.wait()  # in flight when the signal comes: it must still be answered
        answered += 1
        return web.json_response({"embedding": [0.0]})

    app = web.Application()
    app.router.add_post("/embed", embed)
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        load = asyncio.create_task(run_load_until_signal(f"http://127.0.0.1:{port}", 20.0, 3600.0))
        await asyncio.wait_for(seen.wait(), 30)
        os.kill(os.getpid(), signal.SIGINT)  # the handler is the load's own while it runs
        signalled.set()
        result = await asyncio.wait_for(load, 60)
    finally:
        await runner.cleanup()
    assert result.sent >= 1 and result.ok == result.sent == answered and result.failed == 0
    assert result.seconds < 3600
    # The handlers go with the window: a later Ctrl-C is the program's again.
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGINT) and not loop.remove_signal_handler(signal.SIGTERM)
