"""What `spotstack local` shows a person: the replica table and the load report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

con = Console()


def status_table(snap: dict[str, Any]) -> Table:
    t = Table("replica", "market", "type", "state", "endpoint", "age", title=f"local fleet at {snap['lb']}")
    for n in snap["nodes"]:
        state = n["state"]
        if state == "LOADING":
            state = (
                f"LOADING {n['percent'] or 0:.0f}% (peers {n['from_peers'] / 1e6:.0f} MB / "
                f"origin {n['from_origin'] / 1e6:.0f} MB)"
            )
        t.add_row(n["name"], n["market"], n["type"], state, n["endpoint"], f"{n['age_s']:.0f}s")
    return t


COUNTERS = (
    "preemptions",
    "killed_without_notice",
    "fallbacks",
    "warm_starts",
    "bytes_from_peers",
    "bytes_from_origin",
    "bytes_on_disk",
    "below_target_s",
    "below_target_unnoticed_s",
)


def window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fleet's counters over a load window only (a fleet's snapshot counts since `up`)."""
    return after | {k: after[k] - before[k] for k in (*COUNTERS, "cost_usd", "cost_all_on_demand_usd")}


def report(load: Any, snap: dict[str, Any]) -> dict[str, Any]:
    saved = 1 - snap["cost_usd"] / snap["cost_all_on_demand_usd"] if snap["cost_all_on_demand_usd"] else 0.0
    return {
        "requests": load.sent,
        "ok": load.ok,
        "failed": load.failed,
        "errors": load.errors,
        "p50_ms": round(load.p50 * 1000, 1),
        "p99_ms": round(load.pct(99) * 1000, 1),
        "preemptions": snap["preemptions"],
        "killed_without_notice": snap["killed_without_notice"],
        "fallbacks": snap["fallbacks"],
        "warm_starts": snap["warm_starts"],
        "below_target_s": round(snap["below_target_s"], 1),
        "below_target_unnoticed_s": round(snap["below_target_unnoticed_s"], 1),
        "bytes_from_peers": snap["bytes_from_peers"],
        "bytes_from_origin": snap["bytes_from_origin"],
        "bytes_on_disk": snap["bytes_on_disk"],
        "cost_usd": snap["cost_usd"],
        "cost_all_on_demand_usd": snap["cost_all_on_demand_usd"],
        "cost_ratio": round(1 - saved, 3),
    }


def print_report(r: dict[str, Any]) -> None:
    t = Table("figure", "value", title="load report")
    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(r["errors"].items()))
    t.add_row("requests", f"{r['requests']} ({r['ok']} ok, {r['failed']} failed{': ' + errors if errors else ''})")
    t.add_row("latency", f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    t.add_row("preemptions", f"{r['preemptions']} ({r['killed_without_notice']} without notice)")
    noticed = r["below_target_s"] - r["below_target_unnoticed_s"]
    t.add_row(
        "below target",
        f"{noticed:.1f} s through notices, {r['below_target_unnoticed_s']:.1f} s after kills without notice",
    )
    t.add_row("on-demand fallbacks", f"{r['fallbacks']} ({r['warm_starts']} from the warm pool)")
    t.add_row(
        "model bytes",
        f"{r['bytes_from_peers'] / 1e6:.0f} MB from peers, {r['bytes_from_origin'] / 1e6:.0f} MB from the object "
        f"store, {r['bytes_on_disk'] / 1e6:.0f} MB already on disk",
    )
    t.add_row(
        "cost so far",
        f"${r['cost_usd']:.4f} vs ${r['cost_all_on_demand_usd']:.4f} all on-demand ({r['cost_ratio']:.2f}x)",
    )
    con.print(t)


def print_jobs_report(r: dict[str, Any]) -> None:
    """`local demo --jobs`: every task answered for, the training run's resumes."""
    con = Console()
    t = Table(title="jobs through preemptions", show_header=False)
    t.add_row("tasks", f"{r['tasks']} submitted, {r['results']} with a result ({r['duplicate_results']} duplicates)")
    t.add_row("missing", ", ".join(r["missing"]) or "none")
    t.add_row("dead-letter queue", f"{', '.join(r['dead_letter']) or 'empty'} (poison: {', '.join(r['poison'])})")
    left = r["left_in_queue"]
    t.add_row(
        "left in the input queue",
        f"{left['visible']} waiting, {left['in_flight']} in flight, {left['delayed']} delayed",
    )
    t.add_row("results of given-back tasks", str(r["given_back_results"]))
    if r.get("deadline_reached"):
        t.add_row("ended", "[red]at the deadline, before every task was answered[/red]")
    tr = r["training"]
    same = "same as" if tr["loss"] == tr["baseline_loss"] else "DIFFERENT from"
    t.add_row("training", f"{tr['status']}: loss {tr['loss']} ({same} the uninterrupted run's {tr['baseline_loss']})")
    for res in tr["resumes"]:
        t.add_row(
            "  resumed",
            f"from step {res['from']} (the run before reached {res['previous_reached']}: {res['redone']} steps redone)",
        )
    t.add_row(
        "preemptions",
        f"{r['preemptions']} ({r['busy_notices']} busy replicas with notice, "
        f"{r['killed_without_notice']} without notice)",
    )
    t.add_row("wall time", f"{r['wall_s']} s")
    con.print(t)


def print_llm_report(r: dict[str, Any]) -> None:
    """`local demo --llm`: every stream against its uninterrupted reference, continuations, latencies."""
    con = Console()
    t = Table(title="LLM streams through preemptions", show_header=False)
    t.add_row("streams", f"{r['streams']}: {r['completed']} completed, {r['failed']} failed")
    t.add_row("byte-identical to the reference", f"{r['byte_identical']} ({r['tokens']} tokens)")
    t.add_row("duplicated / missing tokens", f"{r['duplicated_tokens']} / {r['missing_tokens']}")
    by = ", ".join(f"{k} {v}" for k, v in sorted(r["continued_by"].items()))
    t.add_row("continued on another replica", f"{r['continued']} ({by or 'none'})")
    p = r["preemptions"]
    t.add_row(
        "preemptions", f"{p['total']}: {p['notice']} with notice, {p['gcp-30s']} with 30 s notice, {p['kill']} without"
    )

    def ms(d: dict[str, float]) -> str:
        return f"p50 {d['p50'] * 1000:.0f} ms, p99 {d['p99'] * 1000:.0f} ms"

    t.add_row("time to first token (client)", ms(r["ttft_s"]))
    t.add_row("inter-token (client)", ms(r["inter_token_s"]))
    t.add_row("continuation gap", ms(r["continuation_gap_s"]))
    t.add_row("replica TTFT (gateway)", f"{ms(r['replica_ttft_s'])}; gap p99 / TTFT p99 = {r['gap_p99_over_ttft_p99']}")
    if r["errors"]:
        t.add_row("errors", ", ".join(f"{k} x{v}" for k, v in r["errors"].items()))
    t.add_row("wall time", f"{r['wall_s']} s")
    con.print(t)


async def http_scenario(
    fleet: Any, rps: float, scenario_s: float, kill_without_notice: bool, show: Callable[[Any], None]
) -> dict[str, Any]:
    """The default scenario: steady requests while the market plays, its status every 5 s, and a node killed
    without notice near the end."""
    import asyncio
    import time

    from spotstack.runtime.local.load import run_load

    t0 = time.time()
    load = asyncio.create_task(run_load(f"http://127.0.0.1:{fleet.lb_port}", rps, scenario_s))
    shown = 0.0
    while not load.done():
        await asyncio.sleep(0.5)
        if time.time() - shown > 5:
            shown = time.time()
            show(status_table(fleet.snapshot()))
        if kill_without_notice and time.time() - t0 > scenario_s - 8 and fleet.killed_without_notice == 0:
            victim = next(
                (n.name for n in fleet.nodes.values() if n.state == "ready" and n.kill_at is None and n.role != "base"),
                None,
            )
            if victim:
                fleet.preempt(victim, notice=False)
    result = await load
    snap = fleet.snapshot()
    for e in fleet.events:  # the whole log: the snapshot keeps only the latest
        show(f"  {e}")
    return report(result, snap)
