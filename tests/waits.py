"""Waiting for a condition with a deadline: tests wait for what they assert, never for a fixed time.

A busy CI machine makes every step slower; a deadline only bounds how long a broken build takes to fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEFAULT_S = 30.0
ANSWER_S = 30.0
"""A metadata client's timeout where the test is not about timeouts: the emulator shares the test's event loop,
and on a busy machine the loop can stall past the clients' 2 s default (busy run 10 at 63a9f09)."""


async def wait_for(cond: Callable[[], bool | Awaitable[bool]], timeout: float = DEFAULT_S, what: str = "it") -> None:
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until(cond: Callable[[], bool], timeout: float = DEFAULT_S, what: str = "it", every: float = 0.02) -> None:
    """`every`: seconds between checks; more where a check costs (a request to a busy fleet)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def marked(mark: str) -> list[int]:
    """Processes whose environment carries SPOTSTACK_TEST_MARK=`mark`: what one test started, its children and
    their children included (they inherit the environment), and nothing any other test started."""
    import os

    want = f"SPOTSTACK_TEST_MARK={mark}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        found.append(int(pid))
            except OSError:
                continue  # gone, or not ours to read
    return found
