"""The `spotstack` command. Each subcommand imports its half lazily, so a node with only the
agent installed never imports Pulumi, and `spotstack plan` never imports the agent."""

from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    name="spotstack",
    help="Serve models on spot GPU fleets without losing requests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)


# Which extra brings which import: a node installs `spotstack[agent]` alone, a deployer `spotstack[aws]`.
EXTRAS = {
    "aiohttp": "agent",
    "prometheus_client": "agent",
    "xxhash": "agent",
    "blake3": "agent",
    "fsspec": "agent",
    "s3fs": "agent",
    "boto3": "agent",
    "botocore": "agent",
    "pulumi": "aws",
    "pulumi_random": "aws",
    "pulumi_aws": "aws",
    "pulumi_gcp": "gcp",
    "pulumi_alicloud": "alicloud",
    "numpy": "local",
    "tokenizers": "local",
    "safetensors": "local",
    "moto": "dev",
}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"spotstack {version('spotstack')}")
        except PackageNotFoundError:
            print("spotstack (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Deploy spot GPU fleets (plan), and run the node agent and peer model cache on each node."""
    from spotstack.runtime.loopwatch import from_env

    from_env()  # SPOTSTACK_LOOP_WATCH=<seconds>: log callbacks that hold an event loop


@app.command()
def plan(
    stack: str = typer.Option(
        "dev", "--stack", "-s", help="Stack name: reads Pulumi.<stack>.yaml (in the project's stackConfigDir)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of the tree."),
    project: Path = typer.Option(
        None, "--project", help="Pulumi project folder (default: the nearest one holding Pulumi.yaml)."
    ),
) -> None:
    """Show what `pulumi up` would create for a stack, and its cost range, offline.

    Runs the project's own program (its `__main__.py`, or Pulumi.yaml's `main:`) with the stack's config
    under Pulumi's mock engine: no Pulumi CLI, no cloud credentials, no network. The built-in program
    reads `spotstack:fleets`; a program of yours that imports the components plans the same way.
    Exits 2 with every problem and its config path if the spec is invalid, the property path for a bad
    component input, or the traceback if the program fails.
    """
    from spotstack.components.plan import ProgramError, plan_stack
    from spotstack.components.plan.engine import release_event_loop
    from spotstack.components.plan.render import document, print_plan
    from spotstack.components.plan.stackfile import StackFileError, find_project

    try:
        project_dir = project or find_project(Path.cwd(), "run from the project, or pass --project")
        result = plan_stack(project_dir, stack)
    except (ProgramError, StackFileError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        # At exit, not now: a later plan in the same process (tests) still needs the loop.
        atexit.unregister(release_event_loop)
        atexit.register(release_event_loop)
    if as_json:
        doc = document(stack, result.run, result.costs, result.warnings, result.before_up)
        sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    else:
        # Piped: no wrapping at 80 columns (a resource name split mid-word is no use to grep).
        console = Console(soft_wrap=not sys.stdout.isatty())
        print_plan(console, stack, result.run, result.costs, result.warnings, result.before_up)


@app.command()
def schema(
    out: Path = typer.Option(None, "--out", "-o", help="Write the schema here (atomically) instead of stdout."),
) -> None:
    """Print the Pulumi package schema of spotstack's multi-language components (what `pulumi package add
    <path>/plugin` reads), inferred from the component classes, offline."""
    from spotstack.components.provider import schema as package_schema

    text = json.dumps(package_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


BAKE_DIR = "/tmp/spotstack-bake"


@app.command()
def bake(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write bake.sh and the agent's wheel into."),
    cloud: str = typer.Option("aws", "--cloud", help="aws, gcp or alicloud: the agent's extras for that cloud."),
    gpu_setup: bool = typer.Option(
        True, "--gpu-setup/--no-gpu-setup", help="Install the NVIDIA driver, Docker and the container toolkit."
    ),
) -> None:
    """Write what an image builder needs to bake a node image: the agent's wheel (this spotstack, as fleets
    publish it) and bake.sh, which installs the GPU setup a stock Ubuntu image lacks and the agent with the steps
    a node's first boot runs. Upload the folder to /tmp/spotstack-bake and run bake.sh as root (Packer:
    examples/bake/node.pkr.hcl); set `machine_image` to the image. Its nodes then install nothing at boot."""
    from spotstack.components.agent_wheel import build
    from spotstack.runtime.bootstrap import AgentInstall, bake_script
    from spotstack.runtime.clouds import CLOUDS

    if cloud not in CLOUDS:
        raise typer.BadParameter(f"must be one of {', '.join(CLOUDS)}", param_hint="--cloud")
    w = build()
    agent = AgentInstall(CLOUDS[cloud].agent_extra, w.version, sha256=w.sha256, wheel_file=f"{BAKE_DIR}/{w.filename}")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in ((w.filename, w.path.read_bytes()), ("bake.sh", bake_script(agent, gpu_setup).encode())):
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)
    (out / "bake.sh").chmod(0o755)
    sys.stderr.write(f"wrote {out / 'bake.sh'} and {out / w.filename} (sha256 {w.sha256[:16]}...)\n")


def _register_node_commands() -> None:
    # Typer needs the sub-apps at import; they import their heavy halves only when a command runs.
    from spotstack.cli.agent import agent_app, emulator_app
    from spotstack.cli.cache import cache_app
    from spotstack.cli.controller import controller_app
    from spotstack.cli.gateway import gateway_app, llm_app
    from spotstack.cli.job import job_app
    from spotstack.cli.local import local_app
    from spotstack.cli.simulate import simulate

    app.add_typer(agent_app, name="agent")
    app.add_typer(cache_app, name="cache")
    app.add_typer(controller_app, name="controller")
    app.add_typer(job_app, name="job")
    app.add_typer(local_app, name="local")
    app.add_typer(emulator_app, name="emulator")
    app.add_typer(gateway_app, name="gateway")
    app.add_typer(llm_app, name="llm")
    app.command("simulate")(simulate)


_register_node_commands()


DEBUG_ENV = "SPOTSTACK_DEBUG"


def main() -> None:
    """The console script: `app`, with one line instead of a traceback for whatever a command did not foresee
    (a missing extra says which to install). SPOTSTACK_DEBUG=1 shows the traceback."""
    import os

    try:
        app()
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        if extra is None or os.environ.get(DEBUG_ENV):
            _unforeseen(exc)
        err.print(
            f'error: this command needs {top}, which comes with the `{extra}` extra: pip install "spotstack[{extra}]"',
            highlight=False,
            markup=False,
        )
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        _unforeseen(exc)


def _unforeseen(exc: BaseException) -> None:
    import os

    if os.environ.get(DEBUG_ENV):
        raise exc
    from spotstack.runtime.errors import one_line

    err.print(
        f"error: {exc.__class__.__name__}: {one_line(exc)} (unforeseen: {DEBUG_ENV}=1 shows where; please report it)",
        highlight=False,
        markup=False,
    )
    raise SystemExit(1) from None


if __name__ == "__main__":
    main()
