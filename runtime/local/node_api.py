"""What the local fleet's supervisor says to a node process, over loopback HTTP: its agent (status, readiness,
release) and its metadata emulator (the cloud's notice, the group's lifecycle). Each call is short and never
raises for a node that is gone: the next tick sees it. The emulator's calls say whether the node took them: a node
still starting has no emulator listening yet, and the supervisor says it again (the cloud's notice waits in the
metadata service for a node that boots late)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from spotstack.runtime.local.replica import Node


async def observe(node: Node, now: float, events: list[str]) -> None:
    """A node's record brought up to date from its process and its agent (one tick's look); READY is an event."""
    if node.proc.exited():
        node.state = "preempted" if node.preempted else "failed"
        return
    st = await asyncio.to_thread(status, node)
    if st is None:
        return
    node.model = st.get("model") or {}
    node.tasks = list((st.get("jobs") or {}).get("running") or [])
    node.busy = bool(node.tasks)
    node.seen_notice = bool(st.get("notices"))
    if st["state"] in ("draining", "drained"):
        node.state = "draining"
    elif node.model.get("state") != "ready":
        node.state = "loading"
    elif await asyncio.to_thread(ready, node) and node.state != "ready":
        node.state, node.ready_since = "ready", now
        events.append(
            f"{time.strftime('%H:%M:%S')} {node.name} READY "
            f"({node.model.get('from_peers', 0) / 1e6:.0f} MB from peers, "
            f"{node.model.get('from_origin', 0) / 1e6:.0f} MB from origin, "
            f"{node.model.get('on_disk', 0) / 1e6:.0f} MB already on disk)"
        )


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
