"""The rolling replacement's pure steps (runtime/controller/rollout.py): the cases a scenario rarely reaches."""

from __future__ import annotations

from spotstack.runtime.controller.rollout import MIN_READY_S, SURGE_TIMEOUT_S, Member, Surge, step

T = 1_000_000.0


def stale(i: str, state: str = "ready") -> Member:
    return Member(i, False, state, T - 9000, T - 8000)  # type: ignore[arg-type]


def fresh(i: str, state: str = "ready", since: float = T - 4000) -> Member:
    return Member(i, True, state, since - 100, since if state == "ready" else None)  # type: ignore[arg-type]


def test_nothing_to_roll_when_every_instance_is_current() -> None:
    assert step([fresh("a"), fresh("b")], 2, 4, None, T) == (None, None)
    # A surge left over when the last stale instance went another way is forgotten.
    assert step([fresh("a"), fresh("b")], 3, 4, Surge(T - 60, 1), T) == (None, None)


def test_the_oldest_stale_instance_goes_after_the_surge_has_served() -> None:
    older = Member("old", False, "ready", T - 99_999, T - 99_000)
    s, mem = step([stale("x"), older, fresh("new", since=T - MIN_READY_S)], 3, 4, Surge(T - 600, 0), T)
    assert s is not None and s.remove == "old" and s.decrease and mem is None


def test_a_roll_pauses_while_an_instance_leaves_or_starts() -> None:
    surge = Surge(T - 60, 0)
    for members in ([stale("x"), stale("y", "draining")], [stale("x"), fresh("n", "loading")]):
        s, mem = step(members, 2, 4, surge, T)
        assert s is not None and not s.acts and mem == surge


def test_a_replacement_serves_the_settle_time_before_a_stale_one_goes() -> None:
    s, mem = step([stale("x"), fresh("n", since=T - MIN_READY_S + 1)], 2, 4, Surge(T - 600, 0), T)
    assert s is not None and not s.acts and "serves" in s.reason and mem is not None


def test_a_surge_that_never_launched_is_withdrawn_and_tried_again() -> None:
    surge = Surge(T - SURGE_TIMEOUT_S + 1, 0)
    s, mem = step([stale("x"), stale("y")], 3, 4, surge, T)
    assert s is not None and not s.acts and "launch" in s.reason and mem == surge
    s, mem = step([stale("x"), stale("y")], 3, 4, surge, T + 1)
    assert s is not None and s.surge == -1 and mem is None
    s, mem = step([stale("x"), stale("y")], 2, 4, None, T + 60)
    assert s is not None and s.surge == 1 and mem == Surge(T + 60, 0)
