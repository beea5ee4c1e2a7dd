"""Invariants of `decide()` over generated fleets (hypothesis): whatever the replicas, the target and the market,
the decision stays within `max`, keeps the on-demand base, ends no READY replica while READY would fall below the
target, names only replicas that exist, and is the same for the same input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotstack.runtime.controller.decide import ALIVE, Decision, Observed, Policy, PoolHistory, Replica, decide

NOW = 10_000.0
TYPES = ("a", "b", "c")


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    spot = tuple(draw(st.lists(st.sampled_from(TYPES), unique=True, max_size=3)))
    lo = draw(st.integers(0, 6))
    hi = draw(st.integers(max(1, lo), 12))
    return Policy(
        spot_types=spot,
        on_demand_types=("od",),
        min=lo,
        max=hi,
        base_on_demand=draw(st.integers(0, hi)),
        on_demand_above_base_percent=draw(st.sampled_from([0, 0, 25, 50, 100])),
        dynamic_fallback=draw(st.booleans()),
        stable_s=draw(st.sampled_from([0.0, 30.0, 600.0])),
        spread=draw(st.booleans()),
        pool_share=draw(st.sampled_from([0.1, 0.5, 1.0])),
        spare_spot=draw(st.integers(0, 2)),
        hold_per_preemption_s=draw(st.sampled_from([0.0, 120.0])),
        spot_ready_s=draw(st.sampled_from([None, 60.0, 200.0])),
    )


@st.composite
def replicas(draw: st.DrawFn) -> tuple[Replica, ...]:
    out = []
    for i in range(draw(st.integers(0, 14))):
        role = draw(st.sampled_from(["base", "spot", "fallback"]))
        state = draw(st.sampled_from(["provisioning", "loading", "ready", "ready", "draining", "preempted", "failed"]))
        launched = draw(st.floats(0, NOW, allow_nan=False))
        ready_since = draw(st.floats(launched, NOW, allow_nan=False)) if state in ("ready", "draining") else None
        deadline = draw(st.one_of(st.none(), st.floats(NOW, NOW + 400))) if state == "draining" else None
        out.append(
            Replica(f"r{i}", role, draw(st.sampled_from((*TYPES, "od"))), state, launched, ready_since, deadline)
        )
    return tuple(out)


@st.composite
def observations(draw: st.DrawFn) -> Observed:
    return Observed(
        now=NOW,
        replicas=draw(replicas()),
        target=draw(st.integers(0, 16)),
        spot_obtainable={t: draw(st.booleans()) for t in TYPES},
        last_unobtainable={t: draw(st.floats(0, NOW)) for t in TYPES if draw(st.booleans())},
        pools={
            t: PoolHistory(
                preempted_at=tuple(sorted(draw(st.lists(st.floats(0, NOW), max_size=3)))),
                failed_at=tuple(sorted(draw(st.lists(st.floats(0, NOW), max_size=3)))),
                price=draw(st.one_of(st.none(), st.floats(0.1, 3.0))),
                capacity=draw(st.one_of(st.none(), st.integers(0, 4))),
            )
            for t in TYPES
            if draw(st.booleans())
        },
    )


def after(obs: Observed, d: Decision) -> list[Replica | str]:
    """Replicas alive (not draining) once the decision is carried out; launches as their role."""
    ended = set(d.terminate)
    kept: list[Replica | str] = [r for r in obs.replicas if r.state in ALIVE and r.id not in ended]
    return kept + [x.role for x in d.launch]


@pytest.mark.slow
@settings(max_examples=600, deadline=None)
@given(policies(), observations())
def test_decide_invariants(policy: Policy, obs: Observed) -> None:
    d = decide(policy, obs)
    n = max(policy.min, min(policy.max, obs.target))
    alive = [r for r in obs.replicas if r.state in ALIVE]
    ids = {r.id for r in alive}

    # It names only live replicas, each once.
    assert set(d.terminate) <= ids and len(d.terminate) == len(set(d.terminate))

    # Never above max: a tick that launches leaves at most `max` base and spot replicas alive, besides READY
    # replicas held only until their replacement serves (the surge that keeps READY at the target); fallback
    # replicas stand in for spot replicas not READY, never more than the spot share.
    assert set(d.held).isdisjoint(d.terminate) and set(d.held) <= {r.id for r in alive if r.state == "ready"}
    roles = [x.role if isinstance(x, Replica) else x for x in after(obs, d)]
    if d.launch:
        assert sum(r != "fallback" for r in roles) - len(d.held) <= policy.max, d.reasons
    if any(x.role == "fallback" for x in d.launch):
        assert roles.count("fallback") <= d.wanted_spot, d.reasons

    # Never below the on-demand base (of what the target allows).
    base_after = [x for x in after(obs, d) if (x.role if isinstance(x, Replica) else x) == "base"]
    assert len(base_after) >= min(policy.base_on_demand, n)

    # Never a READY replica ended while READY would fall below the target.
    ready = {r.id for r in alive if r.state == "ready"}
    ended_ready = ready & set(d.terminate)
    if ended_ready:
        assert len(ready) - len(ended_ready) >= n, d.reasons

    # Fallback only for what spot lacks: never more wanted than the spot share.
    assert d.wanted_fallback <= d.wanted_spot

    # A pool gets no more launches than the cloud says it has room for.
    for t, h in obs.pools.items():
        if h.capacity is not None:
            assert sum(1 for x in d.launch if x.role == "spot" and x.type == t) <= h.capacity

    # Pure: the same input, the same output.
    assert decide(policy, obs) == d
