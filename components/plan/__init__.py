"""`spotstack plan`: what `pulumi up` would create, and what it would cost, computed offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.plan.prereqs import Item, prerequisites
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.pricing import CostRange, cost_range
from spotstack.components.validate import validate_fleets


@dataclass
class Plan:
    stack: str
    run: PlanRun
    costs: list[CostRange]
    warnings: list[str]
    before_up: list[Item]
    """What must exist outside the stack, and what it bills while idle, per fleet."""


def plan_stack(project_dir: Path, stack: str) -> Plan:
    """Validate the stack's fleets, run the program offline, price it. Raises SpecError / StackFileError."""
    from spotstack.components import program

    sf = load_stack(project_dir, stack)
    fleets, spec_warnings = validate_fleets(program.config_value(sf.config), prefix="fleets")
    run = run_offline(program.run, sf.config, project=sf.project, stack=stack)
    warnings = [str(w) for w in spec_warnings]
    warnings += [w for w in run.warnings if w not in warnings]
    costs = [cost_range(f) for f in fleets if f.cloud != "local"]
    return Plan(stack, run, costs, warnings, prerequisites(fleets, run))
