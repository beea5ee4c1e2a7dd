"""The controller's choice among spot pools: spread across pools, scores from history, the spare, the hold, and
a noticed replica's remaining service."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spotstack.runtime.controller.decide import Observed, PoolHistory, Replica, decide
from tests.runtime.controllerkit import NOW, P, r


def test_spread_caps_each_pool_at_its_share_best_pool_first() -> None:
    """The policy issue's weakness 1: every launch in a tick went to one pool, so one preemption took them all."""
    policy = replace(P, spot_types=("a", "b", "c"), base_on_demand=0, dynamic_fallback=False, spread=True)
    obs = Observed(NOW, (r("s1", "spot", "b"),), 5, {"a": True, "b": True, "c": False})
    d = decide(policy, obs)
    # 5 spot, at most ceil(5 * 0.5) = 3 in one pool: a (first in order) takes 3, b the rest; c is unobtainable.
    assert [x.type for x in d.launch] == ["a", "a", "a", "b"]
    assert [x.type for x in decide(replace(policy, spread=False), obs).launch] == ["a"] * 4
    # A tighter share spreads further; with one pool left, the cap gives way (availability first).
    # At the cap everywhere, the pool with the fewest takes the next (the best first among equals).
    assert [x.type for x in decide(replace(policy, pool_share=0.2), obs).launch] == ["a", "a", "b", "a"]
    only_a = Observed(NOW, (), 4, {"a": True, "b": False, "c": False})
    assert [x.type for x in decide(replace(policy, pool_share=0.25), only_a).launch] == ["a"] * 4


SPREAD = replace(P, spot_types=("a", "b", "c"), base_on_demand=0, spread=True)
ALL3 = {"a": True, "b": True, "c": True}


@pytest.mark.parametrize(
    ("label", "pools", "want"),
    [
        ("no history: the user's order", {}, ["a", "b"]),
        ("a preempted recently goes last", {"a": PoolHistory(preempted_at=(NOW - 600,))}, ["b", "c"]),
        (
            "a preemption older than history_s is forgotten",
            {"a": PoolHistory(preempted_at=(NOW - 4 * 86400,))},
            ["a", "b"],
        ),
        (
            "a refused launch weighs half a preemption",
            {"a": PoolHistory(failed_at=(NOW - 60,)), "b": PoolHistory(preempted_at=(NOW - 60,))},
            ["c", "a"],
        ),
        ("then the lowest known price", {"b": PoolHistory(price=0.9), "c": PoolHistory(price=0.5)}, ["c", "b"]),
        ("a pool the cloud says is full takes none", {"a": PoolHistory(capacity=0)}, ["b", "c"]),
        ("a pool with room for one takes one", {"a": PoolHistory(capacity=1)}, ["a", "b"]),
    ],
)
def test_pools_are_chosen_by_score(label: str, pools: dict[str, PoolHistory], want: list[str]) -> None:
    d = decide(replace(SPREAD, dynamic_fallback=False), Observed(NOW, (), 2, ALL3, pools=pools))
    assert [x.type for x in d.launch] == want, label


def test_spare_spot_is_launched_within_max_and_never_paid_for_by_fallback() -> None:
    policy = replace(SPREAD, spare_spot=1, max=3, spread=False)
    two_ready = (r("s1", "spot", "a"), r("s2", "spot", "a"))
    d = decide(policy, Observed(NOW, two_ready, 2, ALL3))
    assert [x.role for x in d.launch] == ["spot"] and d.wanted_fallback == 0  # the spare; no fallback for it
    # One of three preempted: the spare covers it, no fallback; a replacement spare is launched.
    d = decide(policy, Observed(NOW, (*two_ready, r("s3", "spot", "a", "draining")), 2, ALL3))
    assert d.wanted_fallback == 0 and [x.role for x in d.launch] == ["spot"]
    # Never above max: at max = target there is no room for a spare.
    assert decide(replace(policy, max=2), Observed(NOW, two_ready, 2, ALL3)).launch == ()
    # Scale-in keeps READY at the target: the spare is ended first, never below the target.
    d = decide(policy, Observed(NOW, (*two_ready, r("s3", "spot", "a")), 1, ALL3))
    assert len(d.terminate) == 1


def test_hold_grows_with_recent_preemptions() -> None:
    policy = replace(SPREAD, hold_per_preemption_s=300, hold_max_s=900)
    ready_for = 400.0  # the spot replica has served 400 s; the fallback stands in for it
    fleet = (r("s1", "spot", "a", ready_since=NOW - ready_for), r("f1", "fallback", "od"))
    calm = decide(policy, Observed(NOW, fleet, 1, ALL3))
    assert calm.terminate == ("f1",)  # 30 s hold: the fallback makes way
    one = {"b": PoolHistory(preempted_at=(NOW - 3600,))}
    assert decide(policy, Observed(NOW, fleet, 1, ALL3, pools=one)).terminate == ("f1",)  # 330 s < 400 s
    two = {"b": PoolHistory(preempted_at=(NOW - 3600, NOW - 60))}
    assert decide(policy, Observed(NOW, fleet, 1, ALL3, pools=two)).terminate == ()  # 630 s: held on-demand
    many = {"b": PoolHistory(preempted_at=tuple(NOW - i for i in range(9, -1, -1)))}  # oldest first
    stormy = decide(policy, Observed(NOW + 600, fleet, 1, ALL3, pools=many))
    assert stormy.terminate == ("f1",)  # capped at 30 + 900 s; served 1000 s


@pytest.mark.parametrize(
    ("label", "deadline", "fallback"),
    [
        ("AWS: leaves 80 s after the notice, the replacement is 200 s away: fallback", NOW + 120, 1),
        ("Alibaba: serves 260 s, the replacement is READY at 200 s: no fallback", NOW + 300, 0),
        ("no deadline known: fallback", None, 1),
    ],
)
def test_a_noticed_replica_that_serves_until_its_replacement_needs_no_fallback(
    label: str, deadline: float | None, fallback: int
) -> None:
    policy = replace(SPREAD, spot_ready_s=200.0, leave_before_s=40.0)
    noticed = Replica("s1", "spot", "a", "draining", 0.0, 0.0, deadline)
    replacement = r("s2", "spot", "b", "provisioning", launched=NOW)
    d = decide(policy, Observed(NOW, (noticed, replacement), 1, ALL3))
    assert d.wanted_fallback == fallback, label
    # Without a measured spot start time the controller cannot tell: it always stands in.
    assert (
        decide(replace(policy, spot_ready_s=None), Observed(NOW, (noticed, replacement), 1, ALL3)).wanted_fallback == 1
    )
