"""What a local fleet is made of, from its stack file: its spec mapped onto the local fleet (components/local.py)
and the spot market it replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)


def check_trace(path: Path | None) -> Path | None:
    """Read the trace now: a bad one is a usage error here, not a line in the supervisor's log."""
    if path is not None:
        from spotstack.runtime.local.market import load_trace

        try:
            load_trace(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise typer.BadParameter(f"{path}: {exc}") from None
    return path


def fleet_plan(stack: str) -> tuple[Any, Path]:
    from spotstack.components.local import plan_of
    from spotstack.components.plan.stackfile import StackFileError, config_value, find_project, load_stack
    from spotstack.components.validate import SpecError, validate_fleets

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
    try:
        plan = plan_of(f)
    except ValueError as exc:
        err.print(f"[red]error:[/red] stack {stack!r}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    return plan, project / ".spotstack" / "local" / stack


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
