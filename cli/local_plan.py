"""What a local fleet is made of, from its stack file: the spec mapped onto the local fleet (its plan), the node
workload its image names, and the spot market it replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)

LOCAL_IMAGES = {"minilm-server": "minilm", "llm-server": "llm"}
"""The local fleet's registry: what a node runs for the spec's image."""


def fleet_plan(stack: str) -> tuple[Any, Path]:
    from spotstack.components.controller_policy import fleet_policy
    from spotstack.components.plan.stackfile import StackFileError, find_project, load_stack
    from spotstack.components.pricing import on_demand_price, spot_cap
    from spotstack.components.program import config_value
    from spotstack.components.validate import SpecError, validate_fleets
    from spotstack.runtime.local.plan import FleetPlan

    try:
        project = find_project(Path.cwd())
        fleets, _ = validate_fleets(config_value(load_stack(project, stack).config))
    except (SpecError, StackFileError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    local = [f for f in fleets if f.cloud == "local"]
    if not local:
        err.print(f"[red]error:[/red] stack {stack!r} has no fleet with cloud: local")
        raise typer.Exit(2)
    f = local[0]
    if f.image.repository not in LOCAL_IMAGES:
        err.print(
            f"[red]error:[/red] stack {stack!r}: image.repository: a local fleet runs "
            f"{' or '.join(LOCAL_IMAGES)}, not {f.image.repository!r}"
        )
        raise typer.Exit(2)
    # Validation guarantees a price for every type (catalog or on_demand_price), as on any cloud.
    prices = {i.type: (on_demand_price(f, i), spot_cap(f, i)) for i in f.instances}
    c = f.capacity
    plan = FleetPlan(
        f.name,
        tuple(i.type for i in f.spot_instances),
        tuple(i.type for i in f.instances),
        c.min,
        c.max,
        c.desired_or_min,
        c.base_on_demand,
        c.on_demand_above_base_percent,
        c.dynamic_on_demand_fallback,
        float(f.service.drain_timeout),
        prices,
        c.warm_pool.size if c.warm_pool is not None else 0,
        jobs=None if f.jobs is None else agent_jobs(f.jobs),
        workload=LOCAL_IMAGES[f.image.repository],
        gateway=None if f.service.gateway is None else f.service.gateway.model_dump(),
        policy=fleet_policy(f),
    )
    return plan, project / ".spotstack" / "local" / stack


def agent_jobs(j: Any) -> dict[str, Any]:
    """The spec's jobs section as the agent's jobs config takes it (queue URLs are the fleet's to add)."""
    return {
        "http_path": j.http_path,
        "command": j.command,
        "task_commands": j.task_commands,
        "concurrency": j.concurrency,
        "lease_s": j.lease,
        "task_timeout_s": j.task_timeout,
        "max_attempts": j.max_attempts,
        "resume_command": j.training.resume_command if j.training else None,
    }


def market(plan: Any, trace: Path | None, speed: float, scripted: bool = False) -> Any:
    from spotstack.runtime.local.market import Market, load_trace, synthetic

    if scripted:  # the scenario preempts by script: no trace plays beside it
        return Market({}, speed=speed)
    # Each spot type is its own pool: the built-in market shifts their outages apart; a trace file is
    # replayed for every pool with the same shift (a tick per type), as different zones would differ.
    if trace:
        base = load_trace(trace)
        traces = {t: type(base)(base.gap_s, base.data[i:] + base.data[:i]) for i, t in enumerate(plan.spot_types)}
    else:
        traces = {t: synthetic(phase=2 * i) for i, t in enumerate(plan.spot_types)}
    return Market(traces, speed=speed)
