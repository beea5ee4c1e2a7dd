"""`spotstack agent ...` and `spotstack emulator ...`: the node side. Imports no Pulumi."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from spotstack.cli import params
from spotstack.runtime.errors import one_line

agent_app = typer.Typer(help="The node agent: preemption notices, drain, peer model cache.", no_args_is_help=True)
emulator_app = typer.Typer(help="Cloud metadata server emulators, for tests and local fleets.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what journald and log shippers parse without rules."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


LEVELS = ("debug", "info", "warning", "error")


def _level(value: str) -> str:
    if value.lower() not in LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LEVELS)}")
    return value.lower()


@agent_app.command("run")
def run(
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        envvar="SPOTSTACK_AGENT_CONFIG",
        help="Agent config (JSON or YAML) as the components render it. Any field can be overridden by "
        "an environment variable: SPOTSTACK_AGENT__DRAIN__TIMEOUT_S=60.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        envvar="SPOTSTACK_AGENT_DRY_RUN",
        help="Log every mutating step (readiness, deregister, signal, lifecycle) instead.",
    ),
    log_level: str = typer.Option(
        "info",
        "--log-level",
        envvar="SPOTSTACK_AGENT_LOG_LEVEL",
        help="debug, info, warning or error.",
        callback=_level,
    ),
) -> None:
    """Watch this node's preemption notices and drain it before it dies."""
    from pydantic import ValidationError

    from spotstack.runtime.agent.agent import Agent
    from spotstack.runtime.config import load_agent_config

    _logging(log_level)
    try:
        cfg = load_agent_config(config)
    except (OSError, ValueError, ValidationError) as exc:
        err.print(f"[red]error:[/red] agent config {config}: {one_line(exc)}", highlight=False)
        raise typer.Exit(2) from None
    if dry_run:
        cfg = cfg.model_copy(update={"dry_run": True})
    from spotstack.runtime.net import raise_fd_limit

    # systemd's default soft limit (1024) is what a connection flood or a many-file model runs into.
    logging.getLogger("spotstack.agent").info("open-file limit: %d", raise_fd_limit())
    asyncio.run(Agent(cfg).run_until_signalled())


def fetch_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=3) as r:
        return dict(json.loads(r.read()))


@agent_app.command("fetch-secret")
def fetch_secret(
    cloud: str = typer.Option(
        ..., "--cloud", help="aws (SSM parameter), gcp (Secret Manager) or alicloud (OOS secret parameter)."
    ),
    name: str = typer.Option(..., "--name", help="AWS: the parameter. GCP: projects/P/secrets/S. Alibaba: the name."),
    region: str = typer.Option("", "--region", help="Region of the parameter (AWS, Alibaba Cloud)."),
    metadata_url: str = typer.Option(
        "", "--metadata-url", envvar="SPOTSTACK_AGENT__METADATA__BASE_URL", help="Override the metadata server."
    ),
    api_url: str = typer.Option(
        "", "--api-url", envvar="SPOTSTACK_SECRETS_API_URL", help="Override the secret store's endpoint."
    ),
) -> None:
    """Print a secret read with this node's own identity (boot writes the cache token with it)."""
    from spotstack.runtime import secrets

    try:
        if cloud == "aws":
            if not region:
                err.print("[red]error:[/red] --region is required for aws")
                raise typer.Exit(2)
            value = secrets.aws_parameter(name, region, api_url or None)
        elif cloud == "gcp":
            value = secrets.gcp_secret(name, metadata_url or secrets.GCP_METADATA, api_url or secrets.GCP_SECRETS_API)
        elif cloud == "alicloud":
            if not region:
                err.print("[red]error:[/red] --region is required for alicloud")
                raise typer.Exit(2)
            meta = metadata_url or secrets.ALICLOUD_METADATA
            value = secrets.alicloud_oos_secret(name, region, meta, api_url or None)
        else:
            err.print(f"[red]error:[/red] --cloud must be aws, gcp or alicloud, not {cloud!r}")
            raise typer.Exit(2)
    except secrets.SecretError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    print(value)


@agent_app.command("registry-login")
def registry_login(
    registry: str = typer.Option(..., "--registry", help="The registry host Docker pulls from."),
    cloud: str = typer.Option("alicloud", "--cloud", help="aws (ECR), gcp (Artifact Registry) or alicloud (ACR EE)."),
    region: str = typer.Option("", "--region", help="The registry's region (AWS, Alibaba Cloud)."),
    instance_id: str = typer.Option(
        "", "--instance-id", help="Alibaba: the ACR Enterprise Edition instance (cri-...)."
    ),
    metadata_url: str = typer.Option(
        "", "--metadata-url", envvar="SPOTSTACK_AGENT__METADATA__BASE_URL", help="Override the metadata server."
    ),
    api_url: str = typer.Option(
        "", "--api-url", envvar="SPOTSTACK_REGISTRY_API_URL", help="Override the API endpoint."
    ),
    docker: str = typer.Option("docker", "--docker", help="The Docker CLI to log in with."),
) -> None:
    """Log Docker in to the fleet's registry with this node's own identity (a temporary token): ECR with the instance
    profile, Artifact Registry with the service account's token, ACR EE with the RAM role.

    The workload unit runs this before each start, so a restarted container never meets an expired login, and no
    cloud CLI is needed on the image.
    """
    import subprocess

    from spotstack.runtime import secrets

    try:
        if cloud == "aws":
            if not region:
                raise typer.BadParameter("needed with --cloud aws", param_hint="--region")
            user, password = secrets.aws_registry_login(region, api_url or None)
        elif cloud == "gcp":
            user, password = secrets.gcp_registry_login(metadata_url or secrets.GCP_METADATA)
        elif cloud == "alicloud":
            if not (instance_id and region):
                raise typer.BadParameter("--instance-id and --region are needed with --cloud alicloud")
            user, password = secrets.alicloud_registry_login(
                instance_id, region, metadata_url or secrets.ALICLOUD_METADATA, api_url or None
            )
        else:
            raise typer.BadParameter(f"{cloud!r} is not aws, gcp or alicloud", param_hint="--cloud")
    except secrets.SecretError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    r = subprocess.run(
        [docker, "login", "--username", user, "--password-stdin", registry],
        input=password,
        text=True,
        capture_output=True,
        timeout=120,
    )
    if r.returncode != 0:
        err.print(f"[red]error:[/red] docker login {registry} failed: {r.stderr.strip()[-500:]}", highlight=False)
        raise typer.Exit(1)
    print(f"logged in to {registry}")


@agent_app.command("status")
def status(
    url: str = typer.Option(
        "http://127.0.0.1:8471", "--url", envvar="SPOTSTACK_AGENT_URL", help="The agent's readiness/status server."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the raw status document."),
) -> None:
    """Print the agent's state: serving or draining, notices seen, the last drain's steps."""
    try:
        doc = fetch_status(url)
    except (urllib.error.URLError, OSError) as exc:
        err.print(f"[red]error:[/red] no agent at {url}: {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    con = Console()
    con.print(
        f"[bold]{doc['node']}[/bold] ({doc['cloud']}): [bold]{doc['state']}[/bold]"
        f"{' (dry run)' if doc.get('dry_run') else ''}, up {time.time() - doc['started_at']:.0f}s, "
        f"{doc.get('inflight', 0)} in flight"
    )
    if doc.get("notices"):
        t = Table("kind", "monitor", "verdict", "deadline in", title="notices")
        for n in doc["notices"]:
            t.add_row(n["kind"], n["monitor"], n["verdict"], f"{n['deadline'] - time.time():.0f}s")
        con.print(t)
    drain = doc.get("drain")
    if drain:
        t = Table("step", "ok", "seconds", "error", title="drain")
        for s in drain["steps"]:
            t.add_row(
                s["name"],
                "skipped" if s["skipped"] else ("yes" if s["ok"] else "NO"),
                f"{s['seconds']:.3f}",
                s["error"],
            )
        con.print(t)


def _serve(emulator: Any, port_file: Path | None) -> None:
    async def main() -> None:
        url = await emulator.start()
        if port_file is not None:
            tmp = port_file.with_suffix(".tmp")
            tmp.write_text(url)
            tmp.replace(port_file)
        print(url, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emulator.stop()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot listen: {exc.strerror or exc}", highlight=False)
        raise typer.Exit(1) from None


HOST = typer.Option("127.0.0.1", "--host")
PORT = typer.Option(0, "--port", help="0 picks a free port; the URL is printed.", callback=params.PORT)
URL_FILE = typer.Option(None, "--url-file", help="Also write the URL here (atomically).")


@emulator_app.command("aws")
def emulate_aws(
    host: str = HOST,
    port: int = PORT,
    url_file: Path = URL_FILE,
    group: str = typer.Option("", "--group", help="aws:autoscaling:groupName tag."),
    instance_id: str = typer.Option("i-0123456789abcdef0", "--instance-id"),
) -> None:
    """AWS IMDSv2: token flow, spot instance-action, rebalance, lifecycle state, scheduled events."""
    from spotstack.runtime.emulators.aws import AwsImdsEmulator

    tags = {"aws:autoscaling:groupName": group} if group else {}
    _serve(AwsImdsEmulator(host, port, instance_id=instance_id, tags=tags), url_file)


@emulator_app.command("gcp")
def emulate_gcp(host: str = HOST, port: int = PORT, url_file: Path = URL_FILE) -> None:
    """GCP metadata: Metadata-Flavor, preempted and maintenance-event with wait_for_change long-polls."""
    from spotstack.runtime.emulators.gcp import GcpMetadataEmulator

    _serve(GcpMetadataEmulator(host, port), url_file)


@emulator_app.command("alicloud")
def emulate_alicloud(
    host: str = HOST,
    port: int = PORT,
    url_file: Path = URL_FILE,
    tokens_required: bool = typer.Option(False, "--tokens-required"),
) -> None:
    """Alibaba Cloud ECS metadata: spot termination-time, optional hardened (token) mode."""
    from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator

    _serve(AlicloudMetadataEmulator(host, port, tokens_required=tokens_required), url_file)
