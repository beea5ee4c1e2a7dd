"""The controller's decisions as tables, a flapping-availability replay, and the AWS adaptor on moto."""

from __future__ import annotations

from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from spotstack.runtime.controller.adaptors.aws import AsgAdaptor
from spotstack.runtime.controller.decide import (
    Launch,
    Observed,
    Policy,
    PoolHistory,
    Replica,
    decide,
    track_obtainability,
)

P = Policy(
    spot_types=("g6", "g5"),
    on_demand_types=("g6", "g5"),
    min=1,
    max=6,
    base_on_demand=1,
    dynamic_fallback=True,
    stable_s=30,
    flap_cooldown_s=60,
    spread=False,  # the table pins the priority order; spread and scores have their own tests below
)
NOW = 1000.0


def r(
    id: str, role: str, type: str = "g6", state: str = "ready", launched: float = 0.0, ready_since: float | None = 0.0
) -> Replica:
    return Replica(id, role, type, state, launched, ready_since if state == "ready" else None)  # type: ignore[arg-type]


BOTH = {"g6": True, "g5": True}


@pytest.mark.parametrize(
    ("label", "replicas", "target", "obtainable", "last_bad", "launch", "terminate", "fallback"),
    [
        (
            "cold start: base + spot + fallback while spot is not ready",
            [],
            3,
            BOTH,
            {},
            [
                Launch("base", "g6"),
                Launch("spot", "g6"),
                Launch("spot", "g6"),
                Launch("fallback", "g6"),
                Launch("fallback", "g6"),
            ],
            [],
            2,
        ),
        ("steady: nothing to do", [r("b", "base"), r("s1", "spot"), r("s2", "spot")], 3, BOTH, {}, [], [], 0),
        (
            "priority order: first type unobtainable -> second",
            [r("b", "base")],
            2,
            {"g6": False, "g5": True},
            {},
            [Launch("spot", "g5"), Launch("fallback", "g6")],
            [],
            1,
        ),
        (
            "no spot anywhere: fallback covers every spot replica",
            [r("b", "base")],
            3,
            {"g6": False, "g5": False},
            {},
            [Launch("fallback", "g6"), Launch("fallback", "g6")],
            [],
            2,
        ),
        (
            "preempted spot: relaunch and cover with fallback",
            [r("b", "base"), r("s1", "spot"), r("s2", "spot", state="preempted")],
            3,
            BOTH,
            {},
            [Launch("spot", "g6"), Launch("fallback", "g6")],
            [],
            1,
        ),
        (
            "return to spot only once READY long enough (#3245): spot just ready -> keep fallback",
            [r("b", "base"), r("s1", "spot", ready_since=NOW - 5), r("f1", "fallback")],
            2,
            BOTH,
            {},
            [],
            [],
            1,
        ),
        (
            "return to spot: spot READY for stable_s -> fallback goes",
            [r("b", "base"), r("s1", "spot", ready_since=NOW - 31), r("f1", "fallback")],
            2,
            BOTH,
            {},
            [],
            ["f1"],
            0,
        ),
        (
            "spot still loading: fallback stays",
            [r("b", "base"), r("s1", "spot", state="loading"), r("f1", "fallback")],
            2,
            BOTH,
            {},
            [],
            [],
            1,
        ),
        (
            "flap guard: type unobtainable 20 s ago is skipped",
            [r("b", "base")],
            2,
            BOTH,
            {"g6": NOW - 20},
            [Launch("spot", "g5"), Launch("fallback", "g6")],
            [],
            1,
        ),
        (
            "flap guard expires after the cooldown",
            [r("b", "base")],
            2,
            BOTH,
            {"g6": NOW - 61},
            [Launch("spot", "g6"), Launch("fallback", "g6")],
            [],
            1,
        ),
        (
            "scale in: lowest-priority spot type goes first",
            [r("b", "base"), r("s1", "spot", "g6"), r("s2", "spot", "g5")],
            2,
            BOTH,
            {},
            [],
            ["s2"],
            0,
        ),
        (
            "target clamped to max",
            [],
            99,
            BOTH,
            {},
            [Launch("base", "g6")] + [Launch("spot", "g6")] * 5 + [Launch("fallback", "g6")] * 5,
            [],
            5,
        ),
        ("target clamped to min: base only", [r("b", "base"), r("s1", "spot")], 0, BOTH, {}, [], ["s1"], 0),
        (
            "draining replicas do not count",
            [r("b", "base", state="draining")],
            1,
            BOTH,
            {},
            [Launch("base", "g6")],
            [],
            0,
        ),
    ],
)
def test_decisions(
    label: str,
    replicas: list[Replica],
    target: int,
    obtainable: dict[str, bool],
    last_bad: dict[str, float],
    launch: list[Launch],
    terminate: list[str],
    fallback: int,
) -> None:
    d = decide(P, Observed(NOW, tuple(replicas), target, obtainable, last_bad))
    assert sorted(d.launch, key=repr) == sorted(launch, key=repr), d.reasons
    assert sorted(d.terminate) == sorted(terminate)
    assert d.wanted_fallback == fallback


def test_percentage_above_base_is_on_demand() -> None:
    p = Policy(
        spot_types=("g6",), on_demand_types=("g6",), min=0, max=10, base_on_demand=1, on_demand_above_base_percent=50
    )
    d = decide(p, Observed(NOW, (), 5, {"g6": True}))
    assert (d.wanted_spot, d.wanted_on_demand) == (2, 3)


def test_flapping_availability_does_not_flap_the_fleet() -> None:
    """Spot availability toggling every 10 s: launches go to the steady type, fallback never churns."""
    replicas: dict[str, Replica] = {"b": r("b", "base")}
    last_bad: dict[str, float] = {}
    fallback_changes = 0
    prev_fallback = None
    counter = 0
    for step in range(60):
        now = step * 5.0
        g6_up = (step // 2) % 2 == 0  # g6 flaps: 10 s up, 10 s down
        obtainable = {"g6": g6_up, "g5": True}
        last_bad = track_obtainability(last_bad, now, obtainable)
        # Replicas become ready 10 s after launch; g6 spot replicas die whenever g6 is down.
        for k, rep in list(replicas.items()):
            if rep.role == "spot" and rep.type == "g6" and not g6_up and rep.alive:
                replicas[k] = Replica(rep.id, rep.role, rep.type, "preempted", rep.launched_at)
            elif rep.state == "provisioning" and now - rep.launched_at >= 10:
                replicas[k] = Replica(rep.id, rep.role, rep.type, "ready", rep.launched_at, now)
        d = decide(P, Observed(now, tuple(replicas.values()), 3, obtainable, last_bad))
        for k in d.terminate:
            replicas.pop(k)
        for launch in d.launch:
            counter += 1
            replicas[f"x{counter}"] = Replica(f"x{counter}", launch.role, launch.type, "provisioning", now)
        if prev_fallback is not None and d.wanted_fallback != prev_fallback:
            fallback_changes += 1
        prev_fallback = d.wanted_fallback
    spot_types = {rep.type for rep in replicas.values() if rep.role == "spot" and rep.alive}
    assert spot_types == {"g5"}  # the flapping type was avoided once it had flapped
    assert fallback_changes <= 3  # up at start, down once spot is stably ready: no oscillation
    assert sum(1 for rep in replicas.values() if rep.alive) == 3


@pytest.mark.slow
def test_aws_adaptor_sets_both_groups_on_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        ec2, asg = boto3.client("ec2"), boto3.client("autoscaling")
        lt = ec2.create_launch_template(
            LaunchTemplateName="llm-lt", LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "g6.xlarge"}
        )
        spec = {"LaunchTemplateId": lt["LaunchTemplate"]["LaunchTemplateId"], "Version": "$Latest"}
        for name in ("llm-asg", "llm-fallback-asg"):
            asg.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate=spec,
                MinSize=0,
                MaxSize=8,
                DesiredCapacity=0,
                AvailabilityZones=["us-east-1a"],
            )
        d = decide(P, Observed(NOW, (r("b", "base"),), 4, {"g6": False, "g5": False}))
        import asyncio

        sizes = asyncio.run(AsgAdaptor("llm-asg", "llm-fallback-asg", "us-east-1").apply(d))
        got = {
            g["AutoScalingGroupName"]: g["DesiredCapacity"]
            for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]
        }
        assert sizes == got == {"llm-asg": 4, "llm-fallback-asg": 3}


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


def test_the_local_fleet_runs_the_clouds_round_through_its_adaptor() -> None:
    """The local adaptor: a preempted node is remembered with its deadline, a launch the market refuses is
    remembered against its pool at the next round, and the same run_round() as the clouds' drives it."""
    from types import SimpleNamespace
    from typing import Any

    from spotstack.runtime.controller.adaptors.local import LocalCloud, MemoryStore
    from spotstack.runtime.controller.round import run_round

    launched: list[Launch] = []
    ended: list[str] = []
    market = SimpleNamespace(obtainable=lambda t, now: t == "g5")
    nodes = {
        "base-1": SimpleNamespace(
            name="base-1",
            role="base",
            type="g6",
            state="ready",
            launched_at=0.0,
            ready_since=5.0,
            kill_at=None,
            preempted=False,
            busy=False,
        ),
        "spot-2": SimpleNamespace(
            name="spot-2",
            role="spot",
            type="g6",
            state="ready",
            launched_at=0.0,
            ready_since=6.0,
            kill_at=NOW + 8,
            preempted=True,
            busy=False,
        ),
    }
    plan = SimpleNamespace(spot_types=("g6", "g5"), desired=3, regions=())
    fleet: Any = SimpleNamespace(
        nodes=nodes,
        plan=plan,
        market_live=True,
        market=market,
        last_unobtainable={},
        notice_s=10.0,
        scale_in=ended.append,
        launch=launched.append,
        free_slot=lambda region=None: True,
        region_for=lambda launch: "",
    )
    cloud, store = LocalCloud(fleet), MemoryStore()
    policy = replace(P, spread=True)
    r = run_round(cloud, store, policy, NOW)
    assert store.state.notices["spot-2"].deadline == NOW + 8 and store.state.preempted_at["g6"] == [NOW - 2]
    assert r.acted and {x.type for x in launched if x.role == "spot"} == {"g5"}  # g6 is unobtainable
    # A decision for g6 (say the market turned between observing and acting) is refused and remembered.
    cloud.act(replace(r.decision, launch=(Launch("spot", "g6"),)), r.seen, 8)
    run_round(cloud, store, policy, NOW + 1)
    assert store.state.failed_at["g6"]


def test_a_scale_in_ends_idle_replicas_before_busy_ones() -> None:
    """Queue workers: of equal replicas, the busy one (running tasks, AWS: protected) is ended last."""
    from spotstack.runtime.controller.decide import Observed, Policy, Replica, decide

    policy = Policy(("g6",), ("g6e",), 1, 4, 0, 0, False)
    spot = [
        Replica("busy-new", "spot", "g6", "ready", 30.0, 40.0, busy=True),
        Replica("idle-old", "spot", "g6", "ready", 10.0, 20.0),
        Replica("idle-mid", "spot", "g6", "ready", 20.0, 30.0),
    ]
    d = decide(policy, Observed(100.0, tuple(spot), 1, {"g6": True}))
    assert sorted(d.terminate) == ["idle-mid", "idle-old"]
