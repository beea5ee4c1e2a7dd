"""The drain's rules as tables, and its sequence against recording fakes."""

from __future__ import annotations

import asyncio
import time

import pytest

from spotstack.runtime.drain.decide import Verdict, budget, horizon, verdict
from spotstack.runtime.drain.sequence import Drainer, DrainSettings
from spotstack.runtime.notices.event import InterruptionEvent, Kind

NOW = 1_000_000.0


def ev(kind: Kind = Kind.SPOT_INTERRUPTION, in_s: float = 120, id: str = "a") -> InterruptionEvent:
    return InterruptionEvent(kind, "aws", NOW + in_s, id, "test", NOW)


@pytest.mark.parametrize(
    ("event", "seen", "draining", "rebalance", "expected"),
    [
        (ev(), set(), False, False, Verdict.DRAIN),
        (ev(), {"a"}, False, False, Verdict.DUPLICATE),
        (ev(id="b"), {"a"}, True, False, Verdict.DUPLICATE),  # a second notice while draining
        (ev(Kind.REBALANCE), set(), False, False, Verdict.OBSERVE),
        (ev(Kind.REBALANCE), set(), False, True, Verdict.DRAIN),
        (ev(Kind.MAINTENANCE, in_s=86400), set(), False, False, Verdict.DEFER),
        (ev(Kind.MAINTENANCE, in_s=100), set(), False, False, Verdict.DRAIN),
        (ev(Kind.SCALE_IN), set(), False, False, Verdict.DRAIN),
        (ev(in_s=-30), set(), False, False, Verdict.DRAIN),  # a notice already past still drains
    ],
)
def test_verdict(event: InterruptionEvent, seen: set[str], draining: bool, rebalance: bool, expected: Verdict) -> None:
    got = verdict(event, NOW, seen=frozenset(seen), draining=draining, horizon_s=125, drain_on_rebalance=rebalance)
    assert got is expected


@pytest.mark.parametrize(
    ("deadline_in", "margin", "timeout", "finish_in", "inflight_in"),
    [
        (120, 5, 90, 115, 90),  # AWS: the drain timeout binds
        (30, 5, 90, 25, 22),  # GCP: the notice binds, keeping 3 s for signal + lifecycle
        (300, 5, 90, 295, 90),  # Alibaba
        (-10, 5, 90, 0, 0),  # past deadline: no waiting, but no error
        (4, 5, 90, 0, 0),
        (7, 1, 90, 6, 4.5),  # a short window keeps most of it for in-flight requests
    ],
)
def test_budget(deadline_in: float, margin: float, timeout: float, finish_in: float, inflight_in: float) -> None:
    b = budget(NOW + deadline_in, NOW, margin_s=margin, drain_timeout_s=timeout, signal_reserve_s=3)
    assert (b.finish_by - NOW, b.inflight_until - NOW) == (finish_in, inflight_in)


def test_horizon_covers_the_notice_window() -> None:
    assert horizon(90, 5, 120) == 120 and horizon(200, 5, 30) == 205


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []


class FakeRotation:
    def __init__(self, rec: Recorder, fail: bool = False) -> None:
        self.rec, self.fail, self.name = rec, fail, "fake_lb"

    async def leave(self) -> None:
        self.rec.calls.append("leave")
        if self.fail:
            raise ConnectionError("balancer unreachable")


class FakeInflight:
    name = "fake"

    def __init__(self, rec: Recorder, counts: list[int]) -> None:
        self.rec, self.counts = rec, counts

    async def count(self) -> int:
        self.rec.calls.append("count")
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]


class FakeWorkload:
    name = "fake"

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def stop(self) -> None:
        self.rec.calls.append("stop")


class FakeLifecycle:
    name = "fake"

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def heartbeat(self) -> None:
        self.rec.calls.append("heartbeat")

    async def complete(self) -> None:
        self.rec.calls.append("complete")


def drainer(rec: Recorder, counts: list[int], *, fail_lb: bool = False, **settings: float | bool) -> Drainer:
    return Drainer(
        readiness_off=lambda: rec.calls.append("readiness_off"),
        rotations=[FakeRotation(rec, fail_lb)],
        inflight=FakeInflight(rec, counts),
        workload=FakeWorkload(rec),
        lifecycle=FakeLifecycle(rec),
        settings=DrainSettings(inflight_poll_s=0.01, **settings),  # type: ignore[arg-type]
    )


def live_event(in_s: float) -> InterruptionEvent:
    return InterruptionEvent(Kind.SPOT_INTERRUPTION, "aws", time.time() + in_s, "x", "test", time.time())


async def test_sequence_runs_in_order_and_waits_for_inflight() -> None:
    rec = Recorder()
    report = await drainer(rec, [3, 2, 0]).run(live_event(30))
    assert [c for c in rec.calls if c != "count"] == ["readiness_off", "leave", "stop", "complete"]
    assert rec.calls.count("count") == 3
    assert report.ok and report.before_deadline and report.inflight_left == 0
    assert [s.name for s in report.steps] == [
        "readiness_off",
        "leave_fake_lb",
        "wait_inflight",
        "stop_workload_fake",
        "complete_lifecycle",
    ]


async def test_a_failing_step_does_not_stop_the_rest() -> None:
    rec = Recorder()
    report = await drainer(rec, [0], fail_lb=True).run(live_event(30))
    assert "stop" in rec.calls and "complete" in rec.calls
    assert not report.ok and "balancer unreachable" in report.steps[1].error


async def test_inflight_wait_is_bounded_by_the_deadline() -> None:
    rec = Recorder()
    started = time.monotonic()
    report = await drainer(rec, [5], margin_s=1.0, signal_reserve_s=0.5).run(live_event(2.0))
    assert time.monotonic() - started < 1.5
    assert report.inflight_left == 5 and report.before_deadline
    assert rec.calls[-2:] == ["stop", "complete"]


async def test_heartbeats_while_a_long_drain_runs() -> None:
    rec = Recorder()
    await drainer(rec, [1] * 30 + [0], heartbeat_interval_s=0.05).run(live_event(30))
    assert rec.calls.count("heartbeat") >= 2


async def test_dry_run_logs_instead_of_mutating(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    caplog.set_level("INFO", logger="spotstack.drain")
    report = await drainer(rec, [0], dry_run=True).run(live_event(30))
    assert set(rec.calls) <= {"count"}
    assert all(s.skipped for s in report.steps if s.name != "wait_inflight")
    assert "dry-run: would leave_fake_lb" in caplog.text


async def test_past_deadline_still_completes_quickly() -> None:
    rec = Recorder()
    started = time.monotonic()
    report = await drainer(rec, [4]).run(live_event(-5))
    assert time.monotonic() - started < 0.5
    assert rec.calls[0] == "readiness_off" and rec.calls[-1] == "complete" and report.inflight_left == 4
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev(in_s=120), Verdict.DEFER),  # AWS: 120 s ahead, the drain needs 35 s: serve on
        (ev(in_s=35), Verdict.DRAIN),  # due now
        (ev(in_s=300), Verdict.DEFER),  # Alibaba's 5 minutes
        (ev(in_s=30), Verdict.DRAIN),  # GCP's 30 s is shorter than the drain: at once, as before
        (ev(in_s=-5), Verdict.DRAIN),  # late notices as today
        (ev(Kind.SCALE_IN, in_s=120), Verdict.DRAIN),  # the group is removing it: no window
        (ev(Kind.MAINTENANCE, in_s=100), Verdict.DRAIN),
    ],
)
def test_serving_through_a_spot_notice_defers_only_spot_notices_until_the_drain_is_due(
    event: InterruptionEvent, expected: Verdict
) -> None:
    """The policy issue's notice window (drain timeout 25 + margin 5 + grace 0 + lead 5 = 35 s)."""
    from spotstack.runtime.drain.decide import spot_horizon

    got = verdict(event, NOW, seen=frozenset(), draining=False, horizon_s=125, spot_horizon_s=spot_horizon(25, 5, 0, 5))
    assert got is expected


@pytest.mark.slow
async def test_a_deferred_notice_from_a_long_poll_monitor_still_drains_when_due() -> None:
    """A long-poll monitor reports a notice once; the supervisor must come back to it itself."""
    from spotstack.runtime.agent.supervisor import Supervisor
    from tests.waits import wait_for

    class OnceThenBlock:
        name, long_poll = "once", True

        def __init__(self) -> None:
            self.sent = False

        async def poll(self) -> InterruptionEvent | None:
            if not self.sent:
                self.sent = True
                return InterruptionEvent(Kind.SPOT_INTERRUPTION, "aws", time.time() + 3, "n1", "spot", time.time())
            await asyncio.Event().wait()  # nothing changes again
            return None

    drained: list[InterruptionEvent] = []

    async def on_drain(e: InterruptionEvent) -> None:
        drained.append(e)

    sup = Supervisor([OnceThenBlock()], on_drain, poll_interval_s=0.05, horizon_s=125, spot_horizon_s=1.0)
    sup.start()
    try:
        await wait_for(lambda: sup.deferred == {"n1"}, what="the notice deferred")
        assert not drained
        await wait_for(lambda: bool(drained), 10, "the drain once the deadline is 1 s away")
        assert drained[0].deadline - time.time() <= 1.2
    finally:
        await sup.stop()
