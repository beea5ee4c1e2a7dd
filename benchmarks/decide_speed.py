"""How long one `decide()` takes at N = 8 (the policy issue asks for <= 50 us a call), against a baseline of
building its input in the same run: a controller pays both every tick.

    .venv/bin/python benchmarks/decide_speed.py [--n 8] [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from spotstack.runtime.controller.decide import Observed, Policy, PoolHistory, Replica, decide


def fleet(n: int, now: float) -> Observed:
    states = ["ready", "ready", "ready", "provisioning", "loading", "draining"]
    replicas = [Replica("b0", "base", "od", "ready", 0.0, 10.0)]
    for i in range(n - 1):
        st = states[i % len(states)]
        deadline = now + 100 if st == "draining" else None
        replicas.append(
            Replica(f"s{i}", "spot", f"t{i % 3}", st, float(i), 50.0 if st != "provisioning" else None, deadline)  # type: ignore[arg-type]
        )
    replicas += [Replica(f"f{i}", "fallback", "od", "ready", 5.0, 60.0) for i in range(2)]
    # A day's history per pool, as the controller keeps it: a few preemptions and refused launches, a price.
    pools = {
        f"t{k}": PoolHistory(
            preempted_at=tuple(now - 3000.0 * j for j in (2, 1, 0)),
            failed_at=tuple(now - 700.0 * j for j in (4, 3, 2, 1, 0)),
            price=0.9,
        )
        for k in range(3)
    }
    return Observed(now, tuple(replicas), n, {"t0": True, "t1": False, "t2": True}, {"t1": now - 10}, pools)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    policy = Policy(
        ("t0", "t1", "t2"),
        ("od",),
        a.n,
        a.n + 1,
        base_on_demand=1,
        dynamic_fallback=True,
        spare_spot=1,
        hold_per_preemption_s=60.0,
        spot_ready_s=200.0,
    )
    obs = fleet(a.n, 1000.0)
    per_call, baseline = [], []
    for _ in range(a.rounds):
        t = time.perf_counter()
        for _ in range(a.calls):
            decide(policy, obs)
        per_call.append((time.perf_counter() - t) / a.calls * 1e6)
        t = time.perf_counter()
        for _ in range(a.calls):
            fleet(a.n, 1000.0)
        baseline.append((time.perf_counter() - t) / a.calls * 1e6)
    d, b = statistics.median(per_call), statistics.median(baseline)
    print(f"decide() at N={a.n} ({len(obs.replicas)} replicas): median {d:.1f} us a call over {a.rounds} rounds")
    print(f"building its input: median {b:.1f} us; decide / input = {d / b:.2f}x")


if __name__ == "__main__":
    main()
