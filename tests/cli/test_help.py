"""Every command and option explains itself in `--help`; flags show no value placeholder; `--version` works;
a missing extra is named instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import click
import typer.main

from spotstack.cli.main import app


def walk(cmd: click.Command, path: str = "spotstack") -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                out += walk(sub, f"{path} {name}")
    return out


def test_every_command_and_option_has_help() -> None:
    missing: list[str] = []
    for path, cmd in walk(typer.main.get_command(app)):
        if not (cmd.help or cmd.short_help):
            missing.append(path)
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not p.help:
                missing.append(f"{path} {p.opts[0]}")
    assert missing == []


def test_flags_take_no_value() -> None:
    for path, cmd in walk(typer.main.get_command(app)):
        for p in cmd.params:
            kind = getattr(getattr(p, "type", None), "name", "")
            if isinstance(p, click.Option) and kind == "boolean":
                assert p.is_flag, f"{path} {p.opts[0]} shows a <bool> value"


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "spotstack.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("spotstack ")


def test_a_missing_extra_is_named() -> None:
    # Hide aiohttp as an install without the `agent` extra would.
    script = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "sys.argv = ['spotstack', 'agent', 'run', '--config', '/nonexistent.json']\n"
        "from spotstack.cli.main import main; main()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and 'pip install "spotstack[agent]"' in out.stderr
