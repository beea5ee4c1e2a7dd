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
    Replica,
    decide,
    track_obtainability,
)
from tests.runtime.controllerkit import BOTH, NOW, P, r


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
