"""One controller policy at every seam (the seams issue, item 1): the policy a cloud's function reads from the
configuration document the components write, the one the local fleet runs and the one `simulate --stack`
replays are the same, field for field, for every stack in stacks/ - but for what the replay and the local fleet
set themselves by design (the traces' pools and N; the local fleet's time scale), listed where they are set."""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from spotstack.components.component import controller_base
from spotstack.components.controller_policy import fleet_policy
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.program import config_value
from spotstack.components.validate import validate_fleets
from spotstack.runtime.controller.decide import Policy
from spotstack.runtime.controller.invocation import policy_document, policy_of
from spotstack.runtime.controller.sim_policies import SIMULATED, controllers
from spotstack.runtime.local.fleet import LocalFleet
from spotstack.runtime.local.market import Market, synthetic
from spotstack.runtime.local.plan import TIME_SCALED
from tests.conftest import ROOT

STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


def without(p: Policy, names: tuple[str, ...]) -> dict[str, object]:
    return {k: v for k, v in asdict(p).items() if k not in names}


@pytest.mark.parametrize("stack", STACKS)
def test_the_clouds_the_local_fleet_and_simulate_run_one_policy(
    stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spotstack.cli.local_plan import fleet_plan as _plan
    from spotstack.cli.simulate import _from_stack

    monkeypatch.chdir(ROOT)
    fleets, _ = validate_fleets(config_value(load_stack(ROOT, stack).config))
    f = fleets[0]
    spec_policy = fleet_policy(f)
    # What the function runs: the document the components write, read back as the function reads it.
    function = policy_of(controller_base(f, f.cloud))
    assert function == spec_policy
    # What `simulate --stack` replays.
    got = _from_stack(stack, None)
    (ours,) = controllers(
        ["spotstack"],
        got["base_on_demand"],
        leave_before_s=got["policy"].leave_before_s,
        on_demand_above_base_percent=got["policy"].on_demand_above_base_percent,
        dynamic_fallback=got["policy"].dynamic_fallback,
    )
    replayed = ours.policy(("us-east-1a_v100_1",), got["replicas"][0])  # type: ignore[attr-defined]
    assert without(replayed, SIMULATED) == without(spec_policy, SIMULATED)
    if f.cloud == "local":
        plan, _ = _plan(stack)
        local = LocalFleet(plan, tmp_path, Market({t: synthetic() for t in plan.spot_types})).policy()
        assert without(local, TIME_SCALED) == without(spec_policy, TIME_SCALED)


def test_a_noticed_replica_is_credited_with_when_its_agent_really_leaves() -> None:
    """The dev stack drains 90 s (its agent's default margin and lead: 5 s each): its agent leaves rotation 100 s
    before the deadline, and the function's policy says so (it ran `Policy`'s default 40 s before)."""
    fleets, _ = validate_fleets(config_value(load_stack(ROOT, "dev").config))
    doc = controller_base(fleets[0], "aws")
    assert policy_of(doc).leave_before_s == fleets[0].service.drain_timeout + 10
    assert set(doc["policy"]) == {fld.name for fld in fields(Policy)}  # every field, none left to defaults
    gcp, _ = validate_fleets(config_value(load_stack(ROOT, "dev-gcp").config))
    assert policy_of(controller_base(gcp[0], "gcp")).leave_before_s == 30.0  # drains at GCP's notice


def test_a_policy_document_round_trips_and_refuses_unknown_fields() -> None:
    p = Policy(("a", "b"), ("c",), 1, 3, spare_spot=1, pool_share=0.3, leave_before_s=77.0)
    assert policy_of({"policy": policy_document(p)}) == p
    with pytest.raises(ValueError, match="unknown field"):
        policy_of({"policy": {**policy_document(p), "surprise": 1}})
    old = {"spot_types": ["a"], "on_demand_types": ["c"], "min": 1, "max": 2}  # a document from before
    assert policy_of({"policy": old}).leave_before_s == Policy.leave_before_s


def test_stacks_are_found() -> None:
    assert {"dev", "dev-gcp", "dev-alicloud", "local"} <= set(STACKS), os.listdir(ROOT / "stacks")
