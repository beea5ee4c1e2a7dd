"""`spotstack simulate`: replay spot traces through the fleet policy (and SkyServe's) before spending money."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

err = Console(stderr=True, soft_wrap=True)

POLICIES = ("spotstack", "spotstack-v1", "skyserve", "skyserve+1")


def simulate(
    traces: Path = typer.Option(
        ...,
        "--traces",
        help="Folder of trace files (searched recursively; each file is one pool: a zone and instance type).",
    ),
    replicas: list[int] = typer.Option([2], "--replicas", "-n", help="N, the READY replicas wanted; repeatable."),
    base_on_demand: int = typer.Option(0, "--base-on-demand", help="Replicas that are always on-demand."),
    provision_s: float = typer.Option(180.0, "--provision-s", help="Seconds from launch to a booted node."),
    cold_load_s: float = typer.Option(120.0, "--cold-load-s", help="Seconds to load the model from the store."),
    peer_load_s: float = typer.Option(20.0, "--peer-load-s", help="Seconds to load it from a READY peer."),
    notice_s: float = typer.Option(120.0, "--notice-s", help="Preemption notice (AWS 120, GCP 30, Alibaba 300)."),
    drain_s: float = typer.Option(
        30.0, "--drain-s", help="The drain's timeout (a noticed node leaves this + 10 s early)."
    ),
    warm_start_s: float = typer.Option(
        45.0,
        "--warm-start-s",
        help="The fallback's warm pool (capacity.warm_pool): a warm replica is READY this many seconds after "
        "its start (AWS ~45 s). 0: no warm pool.",
    ),
    warm_pool_size: int = typer.Option(
        0, "--warm-pool-size", help="Stopped instances in the warm pool (capacity.warm_pool.size); 0: N, one each."
    ),
    warm_disk_ratio: float = typer.Option(
        0.01,
        "--warm-disk-ratio",
        help="A stopped instance's disk per hour over its on-demand hour (200 GB gp3 against the traces' "
        "p3.2xlarge: 0.007; against a g6.xlarge: 0.027).",
    ),
    tick_s: float = typer.Option(20.0, "--tick-s", help="Seconds between controller decisions."),
    spot_price_ratio: float = typer.Option(0.3, "--spot-price-ratio", help="Spot price over on-demand price."),
    retry_s: float = typer.Option(300.0, "--retry-s", help="Seconds a refused pool is avoided before a retry."),
    baseline: str = typer.Option(
        "skyserve", "--baseline", help="Also run SkyServe as its code behaves (skyserve), or none."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """How often N replicas are READY, and at what share of the on-demand cost, on real spot traces.

    Runs the same `decide()` the local fleet and the cloud controllers run (with the agent's notice window,
    and without it: spotstack-v1), and SkyServe's policy (over-provision 0 and 1) in the same run, on the
    same traces and timings. Availability counts the
    time after the first 15 minutes with at least N replicas READY.
    """
    from spotstack.runtime.controller.simulate import Timings, controllers, load_traces
    from spotstack.runtime.controller.simulate import simulate as run

    if baseline not in ("skyserve", "none"):
        err.print(f"[red]error:[/red] --baseline must be skyserve or none, not {baseline!r}")
        raise typer.Exit(2)
    if warm_pool_size < 0 or warm_disk_ratio < 0:
        err.print("[red]error:[/red] --warm-pool-size and --warm-disk-ratio must be ≥ 0")
        raise typer.Exit(2)
    if any(n < 1 for n in replicas) or base_on_demand < 0 or any(base_on_demand > n for n in replicas):
        err.print("[red]error:[/red] --replicas must be ≥ 1 and --base-on-demand between 0 and each N")
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
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    names = POLICIES if baseline == "skyserve" else POLICIES[:2]
    results = []
    with Progress(console=err, transient=True, disable=as_json and not sys.stderr.isatty()) as bar:
        for n in replicas:
            for c in controllers(names, base_on_demand):
                task = bar.add_task(f"N={n} {c.name}", total=1.0)
                results.append(run(pools, n, c, timings, progress=functools.partial(_advance, bar, task)))
    if as_json:
        doc = {
            "traces": str(traces),
            "pools": [p.name for p in pools],
            "timings": timings.__dict__,
            "results": [r.as_dict() for r in results],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    hours = results[0].hours if results else 0
    t = Table(title=f"{len(pools)} pools from {traces}, {hours:.0f} h replayed")
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


def _advance(bar: Progress, task: TaskID, done: float) -> None:
    bar.update(task, completed=done)
