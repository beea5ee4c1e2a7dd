"""What the local fleet's supervisor says to a node process, over loopback HTTP: its agent (status, readiness,
release) and its metadata emulator (the cloud's notice, the group's lifecycle). Each call is short and never
raises for a node that is gone: the next tick sees it. The emulator's calls say whether the node took them: a node
still starting has no emulator listening yet, and the supervisor says it again (the cloud's notice waits in the
metadata service for a node that boots late)."""

from __future__ import annotations

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


def _post(node: Node, path: str, body: dict[str, Any]) -> bool:
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.ports['emulator']}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def notice(node: Node, at: float) -> bool:
    """The cloud's spot notice, through the node's metadata emulator: the instance goes at `at` (epoch seconds)."""
    return _post(node, "/_emulator/notice", {"at": at})


def terminating(node: Node) -> bool:
    """A scale-in: the group's lifecycle goes to Terminated (the agent drains, as with an ASG hook)."""
    return _post(node, "/_emulator/lifecycle", {"state": "Terminated"})
