"""The fleet policy's availability against its cost as its knobs move, on every shared trace set, in one run: the
return-to-spot hold (seconds per recent preemption), spare spot replicas, and the warm pool (none, 45 s, 60 s,
90 s starts), with SkyServe (over-provision 0) as the baseline measured alongside. Not a gate: the policy issue
asks for the curve, and the defaults are the first row.

    .venv/bin/python benchmarks/policy_curve.py [--traces ../shared/traces] [-n 2 -n 4 -n 8]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from spotstack.runtime.controller.sim_policies import Ours, SkyServe
from spotstack.runtime.controller.simulate import Timings, load_traces, simulate

DEFAULT = Timings(warm_start_s=45.0)
ROWS: list[tuple[str, Ours, Timings]] = [
    ("defaults (warm 45 s x N, hold 0, spare 0)", Ours(), DEFAULT),
    ("hold +60 s / preemption", Ours(hold_per_preemption_s=60.0), DEFAULT),
    ("hold +300 s / preemption", Ours(hold_per_preemption_s=300.0), DEFAULT),
    ("spare 1", Ours(spare_spot=1), DEFAULT),
    ("no warm pool", Ours(), Timings()),
    ("no warm pool, hold +300 s", Ours(hold_per_preemption_s=300.0), Timings()),
    ("no warm pool, spare 1", Ours(spare_spot=1), Timings()),
    ("warm start 60 s", Ours(), Timings(warm_start_s=60.0)),
    ("warm start 90 s", Ours(), Timings(warm_start_s=90.0)),
    ("warm pool of 1", Ours(), Timings(warm_start_s=45.0, warm_pool_size=1)),
    ("no spread (v1 placement)", Ours(spread=False), DEFAULT),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, default=Path("../shared/traces"))
    ap.add_argument("-n", type=int, action="append", dest="ns")
    a = ap.parse_args()
    sets = sorted({p.parent for p in a.traces.rglob("*.json")})  # one set per folder of trace files
    print(f"{'set':14} {'N':>2} {'policy':44} {'N READY':>8} {'cost':>6} {'vs SkyServe':>18}")
    for folder in sets:
        traces = load_traces(folder)
        for n in a.ns or [2, 4, 8]:
            sky = simulate(traces, n, SkyServe(), DEFAULT)
            print(
                f"{folder.name:14} {n:>2} {'skyserve (baseline)':44} {100 * sky.availability:7.2f}% "
                f"{sky.cost_vs_on_demand:6.3f}"
            )
            for label, proto, tm in ROWS:
                t = time.perf_counter()
                r = simulate(traces, n, replace(proto, _ready_after=[]), tm)  # a fresh controller each run
                gain = 100 * (r.availability - sky.availability)
                extra = r.cost_vs_on_demand - sky.cost_vs_on_demand
                print(
                    f"{folder.name:14} {n:>2} {label:44} {100 * r.availability:7.2f}% {r.cost_vs_on_demand:6.3f} "
                    f"{gain:+6.2f} pt {extra:+.3f}  ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
