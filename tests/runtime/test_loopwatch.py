"""The loop watch (runtime/loopwatch.py): a callback that holds the loop with CPU is reported, by name and with
its CPU time; an await, however long, is not; stopping the last watch puts asyncio back as it was."""

from __future__ import annotations

import asyncio
import asyncio.events
import logging
import time

import pytest

from spotstack.runtime import loopwatch


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_a_callback_that_burns_cpu_is_reported_and_an_await_is_not() -> None:
    seen: list[tuple[str, float, float]] = []
    original = asyncio.events.Handle._run
    stop = loopwatch.watch(0.1, lambda what, cpu, wall: seen.append((what, cpu, wall)))
    try:

        async def blocking_work() -> None:
            _burn(0.15)  # as a boto3 client built on the loop

        async def patient_work() -> None:
            await asyncio.sleep(0.3)

        await asyncio.gather(
            asyncio.create_task(blocking_work(), name="builds-a-client"),
            asyncio.create_task(patient_work(), name="waits"),
        )
    finally:
        stop()
    assert asyncio.events.Handle._run is original
    (what, cpu, wall) = next(s for s in seen if "builds-a-client" in s[0])
    assert "blocking_work" in what and cpu >= 0.15 and wall >= cpu * 0.9
    # Named with its file though it returned in that very step (its frame is gone): the test harness excuses a
    # test's own body by its file (tests/conftest.py, loop_watch).
    assert f" at {__file__}" in what, what
    assert not [s for s in seen if "waits" in s[0]]


def test_from_env_refuses_a_threshold_that_is_not_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(loopwatch.ENV, "fast")
    original = asyncio.events.Handle._run
    with caplog.at_level(logging.ERROR, "spotstack.loop"):
        loopwatch.from_env()
    assert "expected seconds" in caplog.text
    assert asyncio.events.Handle._run is original


@pytest.mark.slow
async def test_a_garbage_collection_is_not_counted_against_the_callback_it_lands_in() -> None:
    import gc

    seen: list[tuple[str, float, float]] = []
    junk = [[i, [i]] for i in range(1_000_000)]  # a large heap: a full collection of it takes ~0.1 s of CPU
    stop = loopwatch.watch(0.05, lambda what, cpu, wall: seen.append((what, cpu, wall)))
    try:

        async def collects() -> float:
            t = time.thread_time()
            gc.collect()
            return time.thread_time() - t

        spent = await asyncio.create_task(collects(), name="collects")
    finally:
        stop()
        del junk
    assert spent > 0.05  # the collection itself was long enough to be reported, were it counted
    assert not [s for s in seen if "collects" in s[0]]
