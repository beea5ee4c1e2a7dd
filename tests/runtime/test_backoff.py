"""One retry schedule for the node's loops (the seams issue, item 8): exponential, capped, full jitter."""

from __future__ import annotations

from spotstack.runtime.backoff import Backoff


def test_pauses_grow_to_the_cap_and_are_jittered_from_zero() -> None:
    ceilings: list[float] = []
    b = Backoff(0.5, 4.0, uniform=lambda lo, hi: ceilings.append(hi) or hi)  # type: ignore[func-returns-value]
    pauses = [b.next() for _ in range(6)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0] and pauses == ceilings
    b.reset()
    assert b.next() == 0.5


def test_real_pauses_stay_within_zero_and_the_ceiling() -> None:
    b = Backoff(1.0, 8.0)
    for n in range(200):
        pause = b.next()
        assert 0.0 <= pause <= min(8.0, 2.0**n)
    assert len({round(Backoff(1.0, 8.0).next(), 6) for _ in range(50)}) > 10  # jittered, not lockstep
