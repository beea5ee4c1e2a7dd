"""Finds callbacks that hold the event loop: a blocking call (a boto3 client built, a filesystem opened, a
synchronous HTTP request) stalls every stream, probe and notice the process serves.

asyncio's debug mode reports callbacks over `slow_callback_duration` of wall time, which on a busy machine also
counts the time the process waited for a CPU, and it changes what it watches (aiohttp turns strict under
PYTHONASYNCIODEBUG). This measures each callback's CPU time on its own thread, which the machine's load does not
inflate, and its wall time beside it.

    SPOTSTACK_LOOP_WATCH=0.1 spotstack ...    # log every callback that used over 100 ms of CPU
"""

from __future__ import annotations

import asyncio.events
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("spotstack.loop")

ENV = "SPOTSTACK_LOOP_WATCH"

Report = Callable[[str, float, float], None]
"""(the callback, its CPU seconds, its wall seconds)."""

_original: Callable[[Any], None] | None = None
_main = threading.main_thread()
_watchers: list[tuple[float, Report]] = []


def watch(threshold_s: float, report: Report) -> Callable[[], None]:
    """Call `report` for every callback of an event loop on the main thread (where the agent, the gateway and
    the local fleet run theirs) that uses more than `threshold_s` of CPU. Returns the function that stops this
    watch."""
    global _original
    if _original is None:
        _original = asyncio.events.Handle._run
        asyncio.events.Handle._run = _timed  # type: ignore[method-assign,assignment]
        gc.callbacks.append(_gc_timer)
    entry = (threshold_s, report)
    _watchers.append(entry)

    def stop() -> None:
        global _original
        if entry in _watchers:
            _watchers.remove(entry)
        if not _watchers and _original is not None:
            asyncio.events.Handle._run = _original  # type: ignore[method-assign,assignment]
            _original = None
            gc.callbacks.remove(_gc_timer)

    return stop


def _timed(handle: asyncio.events.Handle) -> None:
    assert _original is not None
    if threading.current_thread() is not _main:  # a library's private loop (fsspec's IO thread): not ours
        _original(handle)
        return
    cpu0, wall0, gc0 = time.thread_time(), time.monotonic(), _gc[0]
    try:
        _original(handle)
    finally:
        # Less the collector's passes: a full collection of a large heap lands in whichever callback is running.
        cpu = time.thread_time() - cpu0 - (_gc[0] - gc0)
        for threshold, report in list(_watchers):
            if cpu > threshold:
                report(_describe(handle), cpu, time.monotonic() - wall0)


_gc = [0.0, 0.0]
"""CPU seconds the main thread spent collecting garbage, all told; when the pass under way started."""


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if threading.current_thread() is not _main:
        return
    if phase == "start":
        _gc[1] = time.thread_time()
    else:
        _gc[0] += time.thread_time() - _gc[1]


def _describe(handle: asyncio.events.Handle) -> str:
    cb = getattr(handle, "_callback", None)
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None)  # still there once the coroutine has returned (its frame is not)
        frame = getattr(coro, "cr_frame", None)
        where = f" at {code.co_filename}" if code is not None else ""
        if where and frame is not None:
            where += f":{frame.f_lineno}"
        return f"task {task.get_name()} ({getattr(coro, '__qualname__', coro)}){where}"
    return repr(handle)


def from_env() -> None:
    """`SPOTSTACK_LOOP_WATCH=<seconds>`: log each callback over that much CPU (error level, logger
    `spotstack.loop`)."""
    raw = os.environ.get(ENV)
    if not raw:
        return
    try:
        threshold = float(raw)
    except ValueError:
        log.error("%s=%r: expected seconds (e.g. 0.1); not watching", ENV, raw)
        return

    def report(what: str, cpu: float, wall: float) -> None:
        log.error("slow callback: %s used %.0f ms of CPU (%.0f ms wall)", what, cpu * 1000, wall * 1000)

    watch(threshold, report)
