"""`spotstack controller`: the fleet controller's round from your machine (or your own VM / Kubernetes
Deployment): observe the fleet in the cloud, decide, act, and say why. The deployed controller (a Lambda function
on AWS, a Cloud Run function on GCP, a Function Compute function on Alibaba Cloud) runs the same round every
minute; this is for looking at it, and for users who prefer to run it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from spotstack.cli.params import number
from spotstack.runtime.errors import one_line

controller_app = typer.Typer(
    help="The fleet controller: one round (once) or a loop (run), against the cloud.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)
STACK = typer.Option(None, "--stack", "-s", help="Stack file: stacks/Pulumi.<stack>.yaml (AWS fleets).")
CONFIG = typer.Option(
    None,
    "--config",
    help="The deployed controller's configuration document, any cloud: a file, or - for stdin "
    "(`pulumi stack output <fleet>.controller_config`).",
)
FLEET = typer.Option(None, "--fleet", help="Which fleet (default: the first with an on-demand fallback).")
ENDPOINT = typer.Option(
    None, "--endpoint-url", help="Another API endpoint (moto, LocalStack, an emulator).", hidden=True
)


FUNCTION_MODULES = {"aws": "aws_lambda", "gcp": "gcp_function", "alicloud": "alicloud_function"}
"""Each cloud's controller function (runtime/controller/): `fleet_and_store` builds what its handler runs."""


def _from_config(source: str, endpoint_url: str | None) -> tuple[Any, Any, Any]:
    """Adaptor, store and policy from a controller's configuration document, as its function builds them.
    Credentials from each cloud's usual chain (AWS: boto3's; GCP: application default credentials; Alibaba:
    ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / _SECURITY_TOKEN)."""
    from spotstack.runtime.controller.invocation import policy_of

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        cfg = json.loads(text)
        cloud = cfg["cloud"]
        policy = policy_of(cfg)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        err.print(f"[red]error:[/red] --config {source}: not a controller configuration ({exc})", highlight=False)
        raise typer.Exit(2) from None
    if cloud not in FUNCTION_MODULES:
        err.print(f"[red]error:[/red] --config {source}: unknown cloud {cloud!r}", highlight=False)
        raise typer.Exit(2)
    import importlib

    module = importlib.import_module(f"spotstack.runtime.controller.{FUNCTION_MODULES[cloud]}")
    try:
        fleet, store = module.fleet_and_store(cfg, endpoint_url, inside=False)
    except PermissionError as exc:  # Alibaba's credentials come from the environment only
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyError as exc:
        err.print(f"[red]error:[/red] --config {source}: no {exc} (not a controller configuration)", highlight=False)
        raise typer.Exit(2) from None
    return fleet, store, policy


def _setup(
    stack: str | None, fleet: str | None, endpoint_url: str | None, config_file: str | None = None
) -> tuple[Any, Any, Any, Any]:
    if config_file is not None:
        return (None, *_from_config(config_file, endpoint_url))
    if stack is None:
        err.print("[red]error:[/red] give --stack NAME (AWS fleets) or --config FILE (any cloud)")
        raise typer.Exit(2)
    from spotstack.components.aws.controller import config, names, regions_config
    from spotstack.components.plan.stackfile import StackFileError, find_project, load_stack
    from spotstack.components.program import config_value
    from spotstack.components.validate import SpecError, validate_fleets
    from spotstack.runtime.controller.aws_lambda import fleet_and_store, policy_of

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

    from spotstack.components import regions

    tgs = []
    for region in [p.region for p in regions.parts(f)]:  # every region of a fleet across regions, home first
        try:
            asg = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)
            found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[n["main_group"]])["AutoScalingGroups"]
        except _cloud_errors() as exc:
            err.print(f"[red]error:[/red] cannot read the group {n['main_group']} in {region}: {exc}", highlight=False)
            raise typer.Exit(1) from None
        if not found or not found[0].get("TargetGroupARNs"):
            err.print(f"[red]error:[/red] no group {n['main_group']} with a target group in {region}: deployed?")
            raise typer.Exit(1)
        tgs.append(found[0]["TargetGroupARNs"][0])
    # The deployed function's configuration document, read the way its handler reads it.
    across = (
        regions_config(f, [(p.region, n["main_group"], n["fallback_group"]) for p in regions.parts(f)], tgs)
        if f.multi_region
        else ()
    )
    cfg = config(f, n["main_group"], n["fallback_group"], n["table"], tgs[0], across)
    cloud, store = fleet_and_store(cfg, endpoint_url)
    return f, cloud, store, policy_of(cfg)


def _setup_or_exit(
    stack: str | None, fleet: str | None, endpoint_url: str | None, config_file: str | None
) -> tuple[Any, Any, Any, Any]:
    """`_setup`, with a cloud that cannot be reached (no credentials, no region, no route) said in one line."""
    try:
        return _setup(stack, fleet, endpoint_url, config_file)
    except _cloud_errors() as exc:
        err.print(f"[red]error:[/red] cannot reach the fleet's cloud: {one_line(exc)}", highlight=False)
        raise typer.Exit(1) from None


def _cloud_errors() -> tuple[type[BaseException], ...]:
    """What a cloud's API raises when it refuses or fails (each SDK where installed)."""
    from spotstack.runtime.controller.adaptors.oss import OssError
    from spotstack.runtime.secrets import SecretError

    found: list[type[BaseException]] = [LookupError, SecretError, OssError, OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        found += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError

        found += [GoogleAPIError, GoogleAuthError]
    except ImportError:
        pass
    return tuple(found)


def _round(cloud: Any, store: Any, policy: Any, dry_run: bool) -> dict[str, Any]:
    from spotstack.runtime.controller.round import ActFailed, run_round

    try:
        r = run_round(cloud, store, policy, time.time(), dry_run=dry_run).as_dict()
    except ActFailed as exc:
        err.print(f"[red]error:[/red] {one_line(exc)}", highlight=False)
        raise typer.Exit(1) from None
    except _cloud_errors() as exc:
        err.print(f"[red]error:[/red] the round observed nothing and changed nothing: {one_line(exc)}", highlight=False)
        raise typer.Exit(1) from None
    if r.get("state_problem"):
        err.print(f"[yellow]warning:[/yellow] {r['state_problem']}", highlight=False)
    return r


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
    config: str | None = CONFIG,
) -> None:
    """One round against the cloud: what the controller sees, what it decides, and why."""
    _, cloud, store, policy = _setup_or_exit(stack, fleet, endpoint_url, config)
    r = _round(cloud, store, policy, dry_run)
    if as_json:
        sys.stdout.write(json.dumps(r, default=str) + "\n")
    else:
        _show(r)


@controller_app.command("run")
def run(
    stack: str = STACK,
    fleet: str | None = FLEET,
    interval_s: float = typer.Option(
        60.0,
        "--interval-s",
        help="Seconds between rounds (5 to 3600: each round reads every group through the cloud's API).",
        callback=number(5, 3600),
    ),
    endpoint_url: str | None = ENDPOINT,
    config: str | None = CONFIG,
) -> None:
    """Rounds in a loop, one line each (for your own VM or a Kubernetes Deployment instead of the function).
    A round that fails is said on stderr and counted (`failed_rounds` in the next line); the loop goes on: a
    controller that exits grows nothing in an outage."""
    _, cloud, store, policy = _setup_or_exit(stack, fleet, endpoint_url, config)
    failed = 0
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            try:
                r = _round(cloud, store, policy, False)
                print(json.dumps({"at": time.time(), **r, "failed_rounds": failed}, default=str), flush=True)
            except typer.Exit:
                failed += 1  # said on stderr; the next round tries again
            except Exception as exc:  # anything else: said in one line, never the end of the loop
                failed += 1
                err.print(f"[red]error:[/red] round failed ({failed} so far): {one_line(exc)}", highlight=False)
            time.sleep(interval_s)
