"""`spotstack plan`: the offline run of a stack and its figures (what `pulumi up` would create and cost)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spotstack.components.component import DECLARED
from spotstack.components.plan.engine import PlanRun
from spotstack.components.plan.prereqs import Item, prerequisites
from spotstack.components.plan.project import ProgramError, entry_point, run_program
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.pricing import CostRange, cost_range

__all__ = ["Plan", "ProgramError", "plan_stack"]


@dataclass
class Plan:
    stack: str
    run: PlanRun
    costs: list[CostRange]
    warnings: list[str]
    before_up: list[Item]
    """What must exist outside the stack, and what it bills while idle, per fleet."""


def plan_stack(project_dir: Path, stack: str) -> Plan:
    """Run the project's own program offline with the stack's config and price the fleets it declared.

    Any Python program: spotstack's built-in one (fleets from `spotstack:fleets`) or a user's that imports the
    components. Raises StackFileError (project or stack file), ProgramError (the program failed: a bad spec with
    its config paths, a bad Input with its property path, or a traceback)."""
    sf = load_stack(project_dir, stack)
    main = entry_point(project_dir)
    DECLARED.clear()
    run = run_program(main, sf.config, sf.project, stack)
    fleets = list(DECLARED)
    DECLARED.clear()
    warnings: list[str] = []
    warnings += [w for w in run.warnings if w not in warnings]
    costs = [cost_range(f) for f in fleets]
    return Plan(stack, run, costs, warnings, prerequisites(fleets, run))
