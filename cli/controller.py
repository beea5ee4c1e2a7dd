"""`spotstack controller`: the fleet controller's round from your machine (or your own VM / Kubernetes
Deployment): observe the fleet in the cloud, decide, act, and say why. The deployed controller (a Lambda function
on AWS) runs the same round every minute; this is for looking at it, and for users who prefer to run it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

controller_app = typer.Typer(
    help="The fleet controller: one round (once) or a loop (run), against the cloud.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)
STACK = typer.Option(..., "--stack", "-s", help="Stack file: stacks/Pulumi.<stack>.yaml.")
FLEET = typer.Option(None, "--fleet", help="Which fleet (default: the first with an on-demand fallback).")
ENDPOINT = typer.Option(None, "--endpoint-url", help="Another AWS endpoint (moto, LocalStack).", hidden=True)


def _setup(stack: str, fleet: str | None, endpoint_url: str | None) -> tuple[Any, Any, Any, Any]:
    from spotstack.components.aws.controller import config, names
    from spotstack.components.plan.stackfile import StackFileError, find_project, load_stack
    from spotstack.components.program import config_value
    from spotstack.components.validate import SpecError, validate_fleets
    from spotstack.runtime.controller.adaptors.aws import AwsFleet, DynamoStore
    from spotstack.runtime.controller.aws_lambda import policy_of

    try:
        sf = load_stack(find_project(Path.cwd()), stack)
        fleets, _ = validate_fleets(config_value(sf.config))
    except (SpecError, StackFileError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    chosen = [f for f in fleets if (fleet is None or f.name == fleet) and f.capacity.dynamic_on_demand_fallback]
    if not chosen:
        err.print(f"[red]error:[/red] stack {stack!r} has no fleet{f' {fleet!r}' if fleet else ''} with a fallback")
        raise typer.Exit(2)
    f = chosen[0]
    if f.cloud != "aws":
        err.print(
            f"[red]error:[/red] fleet {f.name!r} is on {f.cloud}: `spotstack controller` drives AWS fleets so far"
        )
        raise typer.Exit(2)
    n = names(f, sf.project, stack)
    import boto3

    asg = boto3.client("autoscaling", region_name=f.region, endpoint_url=endpoint_url)
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[n["main_group"]])["AutoScalingGroups"]
    if not found or not found[0].get("TargetGroupARNs"):
        err.print(f"[red]error:[/red] no group {n['main_group']} with a target group in {f.region}: deployed?")
        raise typer.Exit(1)
    cloud = AwsFleet(
        n["main_group"],
        n["fallback_group"],
        found[0]["TargetGroupARNs"][0],
        tuple(i.type for i in f.spot_instances),
        region=f.region,
        endpoint_url=endpoint_url,
    )
    store = DynamoStore(n["table"], f.name, region=f.region, endpoint_url=endpoint_url)
    # The same spec -> policy path as the deployed function's: its config document, read by its handler.
    policy = policy_of(config(f, n["main_group"], n["fallback_group"], n["table"], cloud.tg))
    return f, cloud, store, policy


def _round(cloud: Any, store: Any, policy: Any, dry_run: bool) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from spotstack.runtime.controller.round import run_round

    try:
        return run_round(cloud, store, policy, time.time(), dry_run=dry_run).as_dict()
    except (BotoCoreError, ClientError, LookupError) as exc:
        err.print(f"[red]error:[/red] the round observed nothing and changed nothing: {exc}", highlight=False)
        raise typer.Exit(1) from None


def _show(r: dict[str, Any]) -> None:
    t = Table("replica", "role", "pool", "state", title=f"target {r['target']}; sizes {r['sizes_before']}")
    for x in r["replicas"]:
        t.add_row(
            x["id"], x["role"], x["pool"], x["state"] + (f" (deadline {x['deadline']:.0f})" if x["deadline"] else "")
        )
    Console().print(t)
    print(f"wanted: {r['wanted']}; now {r['sizes_after'] or 'unchanged'}{'' if r['acted'] else ' (no action)'}")
    for reason in r["reasons"]:
        print(f"  - {reason}")


@controller_app.command("once")
def once(
    stack: str = STACK,
    fleet: str | None = FLEET,
    dry_run: bool = typer.Option(False, "--dry-run", help="Observe and decide; change nothing, save nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """One round against the cloud: what the controller sees, what it decides, and why."""
    _, cloud, store, policy = _setup(stack, fleet, endpoint_url)
    r = _round(cloud, store, policy, dry_run)
    if as_json:
        sys.stdout.write(json.dumps(r, default=str) + "\n")
    else:
        _show(r)


@controller_app.command("run")
def run(
    stack: str = STACK,
    fleet: str | None = FLEET,
    interval_s: float = typer.Option(60.0, "--interval-s", help="Seconds between rounds."),
    endpoint_url: str | None = ENDPOINT,
) -> None:
    """Rounds in a loop, one line each (for your own VM or a Kubernetes Deployment instead of the Lambda)."""
    _, cloud, store, policy = _setup(stack, fleet, endpoint_url)
    while True:
        try:
            r = _round(cloud, store, policy, False)
            print(json.dumps({"at": time.time(), **r}, default=str), flush=True)
        except typer.Exit:
            pass  # said on stderr; the next round tries again, nothing was changed
        time.sleep(interval_s)
