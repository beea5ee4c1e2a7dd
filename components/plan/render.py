"""Turn a recorded plan into a tree for people and a document for machines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from spotstack.components.plan.engine import Declared, PlanRun
from spotstack.components.plan.prereqs import Item
from spotstack.components.pricing import HOURS_PER_MONTH, CostRange


def _n(v: Any) -> Any:
    """The mock engine hands numbers back as floats; show 8, not 8.0."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return _n(d)


def _asg(i: dict[str, Any]) -> str:
    mip = i.get("mixedInstancesPolicy") or {}
    dist = mip.get("instancesDistribution") or {}
    types = [o.get("instanceType") for o in _dig(mip, "launchTemplate", "overrides") or []]
    hooks = [f"{h['name']} ({_dig(h, 'heartbeatTimeout')}s)" for h in i.get("initialLifecycleHooks") or []]
    price = dist.get("spotMaxPrice") or "on-demand price"
    return (
        f"size {_dig(i, 'minSize')}..{_dig(i, 'maxSize')} (desired {_dig(i, 'desiredCapacity')}); "
        f"types {' > '.join(types)}; on-demand base {_dig(dist, 'onDemandBaseCapacity') or 0}, "
        f"{_dig(dist, 'onDemandPercentageAboveBaseCapacity')}% above base; "
        f"spot {dist.get('spotAllocationStrategy')} capped at {price}; hook {', '.join(hooks) or 'none'}"
    )


# What a target-tracking policy's target value counts, by its predefined metric.
METRIC_UNITS = {
    "ALBRequestCountPerTarget": "requests per target per minute",
    "ASGAverageCPUUtilization": "% CPU",
    "ASGAverageNetworkIn": "bytes in per instance",
    "ASGAverageNetworkOut": "bytes out per instance",
}


def _policy(i: dict[str, Any]) -> str:
    ttc = i.get("targetTrackingConfiguration") or {}
    metric = _dig(ttc, "predefinedMetricSpecification", "predefinedMetricType")
    unit = METRIC_UNITS.get(str(metric), "messages per instance" if ttc.get("customizedMetricSpecification") else "")
    return f"{i.get('policyType')} target {_dig(ttc, 'targetValue')}{' ' + unit if unit else ''}"


SUMMARY: dict[str, Callable[[dict[str, Any]], str]] = {
    "aws:autoscaling/group:Group": _asg,
    "aws:ec2/launchTemplate:LaunchTemplate": lambda i: (
        f"image {i.get('imageId')}; IMDS tokens {_dig(i, 'metadataOptions', 'httpTokens')}"
    ),
    "aws:lb/targetGroup:TargetGroup": lambda i: (
        f"port {_dig(i, 'port')}; health {_dig(i, 'healthCheck', 'path')} on {_dig(i, 'healthCheck', 'port')}; "
        f"deregistration delay {_dig(i, 'deregistrationDelay')}s"
    ),
    "aws:autoscaling/policy:Policy": lambda i: _policy(i),
    "aws:autoscaling/schedule:Schedule": lambda i: (
        f"{i.get('recurrence')} ({i.get('timeZone')}) -> min {_dig(i, 'minSize')} max {_dig(i, 'maxSize')}"
    ),
}


def summary(r: Declared) -> str:
    fn = SUMMARY.get(r.type)
    if fn is not None:
        return str(fn(r.inputs))
    scalars = [
        f"{k}={_n(v)}"
        for k, v in sorted(r.inputs.items())
        if isinstance(v, (str, int, float, bool)) and k not in ("policy", "assumeRolePolicy") and len(str(v)) < 80
    ]
    return ", ".join(scalars[:4])


def tree(plan: PlanRun, title: str) -> Tree:
    root = Tree(f"[bold]{title}[/bold]")
    known = {r.urn for r in plan.resources}

    def add(node: Tree, r: Declared) -> None:
        label = f"[cyan]{r.type}[/cyan] [bold]{r.name}[/bold]"
        text = summary(r)
        branch = node.add(f"{label}  [dim]{text}[/dim]" if text else label)
        for c in sorted(plan.children_of(r.urn), key=lambda c: (c.type, c.name)):
            add(branch, c)

    for r in plan.resources:
        if r.parent not in known:
            add(root, r)
    return root


def cost_table(costs: list[CostRange]) -> Table:
    t = Table(title="Estimated cost at desired size (USD, catalog on-demand prices; spot at its cap)")
    for col in ("fleet", "replicas", "", "all spot", "expected mix", "all on-demand"):
        t.add_column(col, justify="left" if col in ("fleet", "") else "right")
    for c in costs:
        t.add_row(c.fleet, str(c.replicas), "/h", f"{c.all_spot:.2f}", f"{c.expected:.2f}", f"{c.all_on_demand:.2f}")
        t.add_row(
            "",
            "",
            "/month",
            f"{c.monthly(c.all_spot):,.0f}",
            f"{c.monthly(c.expected):,.0f}",
            f"{c.monthly(c.all_on_demand):,.0f}",
        )
        if c.warm_pool_idle:
            t.add_row("", "warm pool", "/month", "", f"+{c.monthly(c.warm_pool_idle):,.0f}", "")
    return t


def document(
    stack: str, plan: PlanRun, costs: list[CostRange], warnings: list[str], before_up: list[Item] | None = None
) -> dict[str, Any]:
    return {
        "stack": stack,
        "resources": [
            {"urn": r.urn, "type": r.type, "name": r.name, "parent": r.parent, "custom": r.custom, "inputs": r.inputs}
            for r in plan.resources
        ],
        "costs": [
            {
                "fleet": c.fleet,
                "replicas": c.replicas,
                "hourly": {
                    "all_spot": c.all_spot,
                    "expected": c.expected,
                    "all_on_demand": c.all_on_demand,
                    "warm_pool_idle": c.warm_pool_idle,
                },
                "monthly": {
                    "all_spot": c.monthly(c.all_spot),
                    "expected": c.monthly(c.expected),
                    "all_on_demand": c.monthly(c.all_on_demand),
                    "warm_pool_idle": c.monthly(c.warm_pool_idle),
                },
                "hours_per_month": HOURS_PER_MONTH,
            }
            for c in costs
        ],
        "warnings": warnings,
        "before_up": [{"fleet": i.fleet, "cloud": i.cloud, "kind": i.kind, "text": i.text} for i in before_up or []],
    }


def print_plan(
    console: Console,
    stack: str,
    plan: PlanRun,
    costs: list[CostRange],
    warnings: list[str],
    before_up: list[Item] | None = None,
) -> None:
    custom = sum(r.custom for r in plan.resources)
    n = len(plan.resources)
    title = f"stack {stack}: {n} resources ({custom} in the cloud, {n - custom} components)"
    console.print(tree(plan, title))
    console.print(cost_table(costs))
    for kind, title in (
        ("needs", "Before `pulumi up`, create or request"),
        ("billed", "Billed while idle"),
        ("rolls", "A new image, agent or setting reaches running nodes by"),
    ):
        items = [i for i in before_up or [] if i.kind == kind]
        if items:
            console.print(f"[bold]{title}:[/bold]")
            for i in items:
                console.print(f"  - {i.fleet} ({i.cloud}): {i.text}", highlight=False)
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
