"""The controller distrusts its memory, never the fleet's safety (hardening round 3, items 4, 5 and 14): a lost,
emptied or corrupt state is reported and the round still runs, no fallback is removed on a memory that cannot
tell how long spot has served, and a round that saved and then failed to act says so. On moto, as the cloud
controller's own tests (`test_cloud_controller_aws.py` says where moto falls short)."""

from __future__ import annotations

from typing import Any

import pytest

from spotstack.runtime.controller.aws_lambda import handle, policy_of
from spotstack.runtime.controller.round import ActFailed, run_round
from spotstack.runtime.controller.state import ControllerState
from tests.runtime.test_cloud_controller_aws import CFG, T0, Cloud, warning
from tests.runtime.test_cloud_controller_aws import cloud as cloud


def put_state(cloud: Cloud, text: str | None, version: dict[str, str] | None = None) -> None:
    item: dict[str, Any] = {"fleet": {"S": "llm"}, "version": version or {"N": "7"}}
    if text is not None:
        item["state"] = {"S": text}
    cloud.ddb.put_item(TableName="llm-controller", Item=item)


def stockout_then_replaced(cloud: Cloud) -> list[str]:
    """Both spot replicas noticed (the fallback grows to 2), then replaced by spot that serves from T0 + 200."""
    handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0)
    doomed = cloud.spot()
    for k, i in enumerate(doomed):
        handle(warning(i, T0 + 60 + k), CFG, cloud.fleet, cloud.store, now=T0 + 60 + k)
    assert cloud.desired("llm-fallback-asg") == 2
    for i in doomed:
        cloud.asg.terminate_instance_in_auto_scaling_group(InstanceId=i, ShouldDecrementDesiredCapacity=False)
    fallback = cloud.members("llm-fallback-asg")
    run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 200)  # the replacements seen READY
    return fallback


@pytest.mark.parametrize("lost", ["deleted", "{}", ""])
def test_a_lost_state_keeps_the_fallback_for_the_whole_hold(cloud: Cloud, lost: str) -> None:
    fallback = stockout_then_replaced(cloud)
    if lost == "deleted":
        cloud.ddb.delete_item(TableName="llm-controller", Key={"fleet": {"S": "llm"}})
    else:
        put_state(cloud, lost)
    # 5 s after the replacements served, with a memory that cannot say since when: nothing is removed.
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 205)
    assert r.decision.terminate == () and cloud.desired("llm-fallback-asg") == 2, r.as_dict()["reasons"]
    if lost != "deleted":
        assert r.state_problem and "llm-controller" in r.state_problem and "fleet=llm" in r.state_problem
    # The hold counts from when this memory first saw them serve: still there within it, gone after it.
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 230)
    assert cloud.desired("llm-fallback-asg") == 2
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 240)
    assert sorted(r.decision.terminate) == fallback and cloud.desired("llm-fallback-asg") == 0
    assert r.state_problem is None  # the round's save repaired the memory


CORRUPT = [
    '{"preempted_at": {"g6.xlarge": [1, 2',  # truncated
    "[1, 2]",
    "null",
    '"text"',
    '{"preempted_at": {"g6.xlarge": ["NaN"]}}',
    '{"preempted_at": {"g6.xlarge": 5}}',
    '{"notices": {"i-1": {"pool": "g6.xlarge"}}}',
    '{"notices": {"i-1": 3}}',
    '{"ready_since": {"i-1": null}}',
    '{"ready_since": []}',
    '{"spot_ready_after": {"a": 1}}',
    '{"spot_ready_after": [true]}',
    '{"last": [1]}',
    '{"failed_at": {"g6.xlarge": [Infinity]}}',
    "\x00\x01\x02",
]


@pytest.mark.slow
@pytest.mark.parametrize("text", CORRUPT)
def test_a_corrupt_state_is_reported_and_the_round_still_runs(cloud: Cloud, text: str) -> None:
    handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0)
    put_state(cloud, text)
    r = handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0 + 60)
    assert r["acted"] and r["saved"]
    problem = r["state_problem"]
    assert problem and "DynamoDB table llm-controller, item fleet=llm" in problem and "delete it" in problem
    assert "\n" not in problem
    assert cloud.store.load().problem is None  # overwritten with a good document


def test_a_state_without_a_version_is_reset_not_a_crash_loop(cloud: Cloud) -> None:
    put_state(cloud, "{}", version={"S": "seven"})  # not a number: no conditional write could ever match
    r = handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0)
    assert r["acted"] and "'version'" in r["state_problem"]
    r = handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0 + 60)
    assert r["acted"] and r["state_problem"] is None


def test_a_round_that_saved_and_then_failed_to_act_says_so(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0)
    doomed = cloud.spot()[0]

    def refuse(*args: object, **kwargs: object) -> object:
        raise RuntimeError("Throttling: Rate exceeded")

    monkeypatch.setattr(cloud.fleet, "act", refuse)
    with pytest.raises(ActFailed, match="saved the round's decision, then failed to act on it: Throttling"):
        handle(warning(doomed, T0 + 60), CFG, cloud.fleet, cloud.store, now=T0 + 60)


def test_state_from_json_never_raises() -> None:
    for text in CORRUPT:
        s = ControllerState.from_json(text, 2, "somewhere")
        assert s.problem and "somewhere" in s.problem and s.version == 2
    assert ControllerState.from_json(None, 0).problem is None
