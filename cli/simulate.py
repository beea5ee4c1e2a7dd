"""`spotstack simulate`: replay spot traces through the fleet policy (and SkyServe's) before spending money."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from spotstack.cli.params import number

err = Console(stderr=True, soft_wrap=True)

POLICIES = ("spotstack", "spotstack-v1", "skyserve", "skyserve+1")
MAX_REPLICAS = 1000
DAY = 86400.0
MAX_TICKS = 20_000_000
"""Controller ticks a whole run may replay (every N and policy): the shared traces' 45 days at 20 s for 3 values
of N and 4 policies are 2.3 million; beyond this a mistyped --tick-s or gap_seconds would run for hours."""


def simulate(
    traces: Path = typer.Option(
        ...,
        "--traces",
        help="Folder of trace files (searched recursively; each file is one pool: a zone and instance type).",
    ),
    replicas: list[int] = typer.Option(
        None,
        "--replicas",
        "-n",
        help="N, the READY replicas wanted (1 to 1000); repeatable. Default: the stack's, else 2.",
        callback=number(1, MAX_REPLICAS),
    ),
    stack: str | None = typer.Option(
        None,
        "--stack",
        "-s",
        help="Take the fleet's policy from stacks/Pulumi.<stack>.yaml: base on-demand, warm pool, the cloud's "
        "notice, the drain timeout and the desired replicas (flags given here win).",
    ),
    fleet: str | None = typer.Option(None, "--fleet", help="With --stack: which fleet (default: the first)."),
    base_on_demand: int = typer.Option(
        None,
        "--base-on-demand",
        help="Replicas that are always on-demand. Default: the stack's, else 0.",
        callback=number(0, MAX_REPLICAS),
    ),
    provision_s: float = typer.Option(
        180.0, "--provision-s", help="Seconds from launch to a booted node.", callback=number(0, DAY)
    ),
    cold_load_s: float = typer.Option(
        120.0, "--cold-load-s", help="Seconds to load the model from the store.", callback=number(0, DAY)
    ),
    peer_load_s: float = typer.Option(
        20.0, "--peer-load-s", help="Seconds to load it from a READY peer.", callback=number(0, DAY)
    ),
    notice_s: float = typer.Option(
        None,
        "--notice-s",
        help="Preemption notice (AWS 120, GCP 30, Alibaba 300). Default: the stack's cloud's, else 120.",
        callback=number(0, 3600),
    ),
    drain_s: float = typer.Option(
        None,
        "--drain-s",
        help="The drain's timeout (a noticed node leaves this + 10 s early). Default: 30 (the stack's "
        "service.drain_timeout with --stack).",
        callback=number(0, DAY),
    ),
    warm_start_s: float = typer.Option(
        45.0,
        "--warm-start-s",
        help="The fallback's warm pool (capacity.warm_pool): a warm replica is READY this many seconds after "
        "its start (AWS ~45 s). 0: no warm pool.",
        callback=number(0, DAY),
    ),
    warm_pool_size: int = typer.Option(
        None,
        "--warm-pool-size",
        help="Instances in the warm pool (capacity.warm_pool.size); 0: N, one each. With --stack: the stack's "
        "(a stack without one: no warm pool).",
        callback=number(0, MAX_REPLICAS),
    ),
    warm_disk_ratio: float = typer.Option(
        0.01,
        "--warm-disk-ratio",
        help="A stopped instance's disk per hour over its on-demand hour (200 GB gp3 against the traces' "
        "p3.2xlarge: 0.007; against a g6.xlarge: 0.027).",
        callback=number(0, 10),
    ),
    tick_s: float = typer.Option(
        20.0, "--tick-s", help="Seconds between controller decisions (1 to 3600).", callback=number(1, 3600)
    ),
    spot_price_ratio: float = typer.Option(
        0.3, "--spot-price-ratio", help="Spot price over on-demand price.", callback=number(0, 10)
    ),
    retry_s: float = typer.Option(
        300.0, "--retry-s", help="Seconds a refused pool is avoided before a retry.", callback=number(0, DAY)
    ),
    spare_spot: int = typer.Option(
        0,
        "--spare-spot",
        help="Spot replicas above N (ours): cover a preemption at once.",
        callback=number(0, MAX_REPLICAS),
    ),
    pool_share: float = typer.Option(
        0.5,
        "--pool-share",
        help="The most of the spot replicas one pool holds while another can take them (ours).",
        callback=number(0, 1, above=0),
    ),
    hold_per_preemption_s: float = typer.Option(
        0.0,
        "--hold-per-preemption-s",
        help="Seconds added to the return-to-spot hold per preemption in the last 3 days (ours; capped at 1 h).",
        callback=number(0, 3600),
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a PNG: READY replicas, spot/on-demand mix and pools up over time (first N)."
    ),
    baseline: str = typer.Option(
        "skyserve", "--baseline", help="Also run SkyServe as its code behaves (skyserve), or none."
    ),
    regions: str | None = typer.Option(
        None,
        "--regions",
        help="Only the pools of these regions (comma-separated, e.g. us-east-1,us-west-2; a pool's region is its "
        "trace file's zone): what a fleet confined to them would get.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """How often N replicas are READY, and at what share of the on-demand cost, on real spot traces.

    Runs the same `decide()` the local fleet and the cloud controllers run (with the agent's notice window,
    and without it: spotstack-v1), and SkyServe's policy (over-provision 0 and 1) in the same run, on the
    same traces and timings. Availability counts the
    time after the first 15 minutes with at least N replicas READY.
    """
    from spotstack.runtime.controller.simulate import Timeline, Timings, controllers, load_traces
    from spotstack.runtime.controller.simulate import simulate as run
    from spotstack.runtime.controller.traces import in_regions, region_of

    fleet_policy = None
    if stack is not None:
        got = _from_stack(stack, fleet)
        replicas = replicas or got["replicas"]
        base_on_demand = got["base_on_demand"] if base_on_demand is None else base_on_demand
        notice_s = got["notice_s"] if notice_s is None else notice_s
        drain_s = got["drain_s"] if drain_s is None else drain_s
        if warm_pool_size is None and got["warm_pool_size"] is None:
            warm_start_s = 0.0
        warm_pool_size = got["warm_pool_size"] or 0 if warm_pool_size is None else warm_pool_size
        fleet_policy = got["policy"]
    replicas = replicas or [2]
    base_on_demand = base_on_demand or 0
    notice_s = 120.0 if notice_s is None else notice_s
    drain_s = 30.0 if drain_s is None else drain_s
    warm_pool_size = warm_pool_size or 0
    if baseline not in ("skyserve", "none"):
        err.print(f"[red]error:[/red] --baseline must be skyserve or none, not {baseline!r}")
        raise typer.Exit(2)
    if warm_pool_size < 0 or warm_disk_ratio < 0:
        err.print("[red]error:[/red] --warm-pool-size and --warm-disk-ratio must be ≥ 0")
        raise typer.Exit(2)
    if any(n < 1 for n in replicas) or base_on_demand < 0 or any(base_on_demand > n for n in replicas):
        err.print("[red]error:[/red] --replicas must be ≥ 1 and --base-on-demand between 0 and each N")
        raise typer.Exit(2)
    if spare_spot < 0 or not 0 < pool_share <= 1 or hold_per_preemption_s < 0:
        err.print("[red]error:[/red] --spare-spot ≥ 0, --pool-share in (0, 1] and --hold-per-preemption-s ≥ 0")
        raise typer.Exit(2)
    if plot is not None and not plot.parent.resolve().is_dir():
        err.print(f"[red]error:[/red] --plot: no folder {plot.parent}")
        raise typer.Exit(2)
    try:
        timings = Timings(
            provision_s,
            cold_load_s,
            peer_load_s,
            notice_s,
            tick_s,
            spot_price_ratio,
            retry_s,
            drain_s=drain_s,
            warm_start_s=warm_start_s or None,
            warm_pool_size=warm_pool_size,
            warm_disk_ratio=warm_disk_ratio,
        )
        pools = load_traces(traces)
        if regions is not None:
            pools = in_regions(pools, [r.strip() for r in regions.split(",") if r.strip()])
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    names = POLICIES if baseline == "skyserve" else POLICIES[:2]
    span = min(len(t.data) * t.gap_s for t in pools)
    ticks = int(span // tick_s + 1) * len(replicas) * len(names)
    if ticks > MAX_TICKS:
        err.print(
            f"[red]error:[/red] {span / 86400:.0f} days of traces at --tick-s {tick_s:g} for {len(replicas)} N and "
            f"{len(names)} policies is {ticks:,} controller ticks (at most {MAX_TICKS:,}): raise --tick-s, shorten "
            "the traces or give fewer --replicas",
            highlight=False,
        )
        raise typer.Exit(2)
    if not as_json or sys.stderr.isatty():
        err.print(f"replaying {span / 86400:.1f} days: {ticks:,} controller ticks over {len(names)} policies")
    results = []
    lines: dict[str, Timeline] = {}
    # With --stack, the fleet's own policy (what its controller runs); else the flags' drain plus the agent's lead.
    leave = fleet_policy.leave_before_s if fleet_policy is not None else drain_s + timings.drain_lead_s
    ours: dict[str, float] = {
        "spare_spot": spare_spot,
        "pool_share": pool_share,
        "hold_per_preemption_s": hold_per_preemption_s,
        "leave_before_s": leave,
    }
    with Progress(console=err, transient=True, disable=as_json and not sys.stderr.isatty()) as bar:
        for n in replicas:
            made = controllers(
                names,
                base_on_demand,
                spare_spot=spare_spot,
                pool_share=pool_share,
                hold_per_preemption_s=hold_per_preemption_s,
                leave_before_s=leave,
                on_demand_above_base_percent=fleet_policy.on_demand_above_base_percent if fleet_policy else 0,
                dynamic_fallback=fleet_policy.dynamic_fallback if fleet_policy else True,
            )
            for c in made:
                task = bar.add_task(f"N={n} {c.name}", total=1.0)
                tl = lines.setdefault(c.name, Timeline()) if plot is not None and n == replicas[0] else None
                results.append(run(pools, n, c, timings, functools.partial(_advance, bar, task), tl))
    if plot is not None:
        from spotstack.runtime.controller.plot import plot as draw

        try:
            draw(plot, replicas[0], lines, len(pools))
        except (OSError, ImportError) as exc:
            err.print(f"[red]error:[/red] --plot {plot}: {exc}", highlight=False)
            raise typer.Exit(1) from None
        err.print(f"plot: {plot}")
    if as_json:
        doc = {
            "traces": str(traces),
            "stack": stack,
            "policy": {"base_on_demand": base_on_demand, **ours},
            "pools": [p.name for p in pools],
            "regions": sorted({region_of(p) for p in pools}),
            "timings": timings.__dict__,
            "results": [r.as_dict() for r in results],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    hours = results[0].hours if results else 0
    where = ", ".join(sorted({region_of(p) for p in pools}))
    t = Table(title=f"{len(pools)} pools in {where} from {traces}, {hours:.0f} h replayed")
    for col in ("N", "policy", "N READY", "≥N/2 READY", "mean READY", "cost", "preempted", "launches", "refused"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        t.add_row(
            str(r.replicas),
            r.policy,
            f"{100 * r.availability:.2f}%",
            f"{100 * r.degraded:.2f}%",
            f"{r.mean_ready:.2f}",
            f"{r.cost_vs_on_demand:.3f}",
            str(r.preemptions),
            str(r.launches),
            str(r.launch_failures),
        )
    Console(width=None if sys.stdout.isatty() else 120).print(t)
    print("cost: spot and on-demand hours paid over N on-demand replicas; refused: launches the pool had no room for")


def _from_stack(stack: str, fleet: str | None) -> dict[str, Any]:
    """What a stack's fleet says of the policy: its base, warm pool, cloud notice, drain and desired replicas."""
    from spotstack.components.controller_policy import fleet_policy
    from spotstack.components.plan.stackfile import StackFileError, find_project, load_stack
    from spotstack.components.program import config_value
    from spotstack.components.validate import SpecError, validate_fleets
    from spotstack.runtime.clouds import PROFILES

    try:
        fleets, _ = validate_fleets(config_value(load_stack(find_project(Path.cwd()), stack).config))
    except (SpecError, StackFileError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    chosen = [f for f in fleets if fleet is None or f.name == fleet]
    if not chosen:
        err.print(f"[red]error:[/red] stack {stack!r} has no fleet {fleet!r}: {', '.join(f.name for f in fleets)}")
        raise typer.Exit(2)
    f = chosen[0]
    c = f.capacity
    return {
        "replicas": [max(1, c.desired_or_min)],
        "base_on_demand": min(c.base_on_demand, max(1, c.desired_or_min)),
        "notice_s": PROFILES[f.cloud].notice_s,
        "drain_s": float(f.service.drain_timeout),
        "warm_pool_size": c.warm_pool.size if c.warm_pool is not None else None,
        "policy": fleet_policy(f),
    }


def _advance(bar: Progress, task: TaskID, done: float) -> None:
    bar.update(task, completed=done)
