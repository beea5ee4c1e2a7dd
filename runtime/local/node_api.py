"""What the local fleet's supervisor says to a node process, over loopback HTTP: its agent (status, readiness,
release) and its metadata emulator (the cloud's notice, the group's lifecycle). Each call is short and never
raises for a node that is gone: the next tick sees it."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from typing import Any

from spotstack.runtime.local.replica import Node


def status(node: Node) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.ports['agent']}/status", timeout=0.5) as r:
            return dict(json.loads(r.read()))
    except (OSError, ValueError):
        return None


def ready(node: Node) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.ports['agent']}/ready", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def release(node: Node, token: str) -> bool:
    """POST /release with the fleet token: True if the node had a notice waiting and now leaves rotation."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.ports['agent']}/release",
        data=b"",
        headers={"Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            return bool(r.status == 202)
    except OSError:
        return False


def _post(node: Node, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.ports['emulator']}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with contextlib.suppress(OSError):
        urllib.request.urlopen(req, timeout=1)


def notice(node: Node, in_s: float) -> None:
    """The cloud's spot notice, through the node's metadata emulator."""
    _post(node, "/_emulator/notice", {"in_s": in_s})


def terminating(node: Node) -> None:
    """A scale-in: the group's lifecycle goes to Terminated (the agent drains, as with an ASG hook)."""
    _post(node, "/_emulator/lifecycle", {"state": "Terminated"})
