"""A withdrawn notice does not drain the node (the seams issue, item 2): a scheduled event moved and then canceled,
and a rebalance recommendation withdrawn, read by the real AWS monitors from the IMDSv2 emulator. Before, a deferred
notice kept its timer and drained the node at the old time whatever the metadata said since."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from spotstack.runtime.agent.supervisor import Supervisor
from spotstack.runtime.drain.decide import Verdict
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.notices import aws
from spotstack.runtime.notices.event import InterruptionEvent
from spotstack.runtime.notices.metadata import aws_imds
from tests.waits import ANSWER_S, wait_for


class Watch:
    def __init__(self) -> None:
        self.drains: list[InterruptionEvent] = []
        self.verdicts: list[tuple[str, Verdict, float]] = []

    async def drain(self, event: InterruptionEvent) -> None:
        self.drains.append(event)

    def notice(self, event: InterruptionEvent, monitor: object, v: Verdict) -> None:
        self.verdicts.append((event.id, v, event.deadline))


@pytest.fixture
async def imds() -> AsyncIterator[tuple[AwsImdsEmulator, aiohttp.ClientSession]]:
    async with AwsImdsEmulator() as emu, aiohttp.ClientSession() as session:
        yield emu, session


@pytest.mark.slow
async def test_a_moved_then_canceled_scheduled_event_never_drains(
    imds: tuple[AwsImdsEmulator, aiohttp.ClientSession],
) -> None:
    emu, session = imds
    watch = Watch()
    monitor = aws.ScheduledEventsMonitor(aws_imds(session, emu.url, timeout_s=ANSWER_S))
    # Due 3 s before its deadline: an event 6 s away is deferred, then would drain at +3 s.
    sup = Supervisor([monitor], watch.drain, poll_interval_s=0.1, horizon_s=3.0, on_notice=watch.notice)
    first_due = time.time() + 6 - 3
    emu.add_scheduled_event("system-reboot", time.time() + 6)
    sup.start()
    try:
        await wait_for(lambda: bool(sup.deferred), what="the event deferred")
        emu.reschedule_event("instance-event-0abc", time.time() + 3600)  # the owner moved it an hour on
        await wait_for(lambda: time.time() > first_due + 1, what="the old due time to pass")
        assert watch.drains == [], "drained at the old time of a moved event"
        assert sup.deferred, "the moved event is still pending"
        emu.cancel_event("instance-event-0abc")
        await wait_for(lambda: not sup.deferred, what="the canceled event withdrawn")
        assert [v for _, v, _ in watch.verdicts] == [Verdict.DEFER, Verdict.WITHDRAWN]
        # Withdrawn for good: nothing drains, whatever time passes.
        emu.add_scheduled_event("instance-stop", time.time() + 4, event_id="instance-event-0def")
        await wait_for(lambda: len(watch.drains) == 1, what="a new event to drain as usual")
        assert watch.drains[0].id != watch.verdicts[0][0]
    finally:
        await sup.stop()


async def test_a_withdrawn_rebalance_recommendation_does_not_drain(
    imds: tuple[AwsImdsEmulator, aiohttp.ClientSession],
) -> None:
    emu, session = imds
    watch = Watch()
    monitor = aws.RebalanceMonitor(aws_imds(session, emu.url, timeout_s=ANSWER_S))
    # drain_on_rebalance: the recommendation's deadline (its time + 120 s) is deferred until 3 s before.
    sup = Supervisor(
        [monitor], watch.drain, poll_interval_s=0.1, horizon_s=3.0, drain_on_rebalance=True, on_notice=watch.notice
    )
    emu.post_rebalance()
    sup.start()
    try:
        await wait_for(lambda: bool(sup.deferred), what="the recommendation deferred")
        emu.withdraw_rebalance()
        await wait_for(lambda: not sup.deferred, what="the recommendation withdrawn")
        assert watch.drains == [] and [v for _, v, _ in watch.verdicts] == [Verdict.DEFER, Verdict.WITHDRAWN]
    finally:
        await sup.stop()
