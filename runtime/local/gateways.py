"""A local fleet's gateways (`service.gateway`): `spotstack gateway run` processes reading the fleet's replica list
(`replicas.json`, rewritten every tick), behind a front HAProxy that clients call — the cloud load balancer in
front of a gateway group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spotstack.runtime.files import write_atomic
from spotstack.runtime.local.haproxy import HAProxy, Server
from spotstack.runtime.local.reaper import Ledger, die_with_parent
from spotstack.runtime.net import free_port


def write_replicas(workdir: Path, nodes: Iterable[Any]) -> None:
    """The gateways' replica list (`replicas.json`): every node running (they probe each one's readiness
    themselves), by its model server and its agent's /ready."""
    specs = [
        f"http://127.0.0.1:{n.ports['traffic']} ready=http://127.0.0.1:{n.ports['agent']}/ready"
        for n in nodes
        if n.state in ("provisioning", "loading", "ready", "draining")
    ]
    write_atomic(workdir / "replicas.json", json.dumps(specs))


class Gateways:
    def __init__(self, workdir: Path, spec: dict[str, Any], env: dict[str, str], ledger: Ledger) -> None:
        self.workdir, self.spec, self.env, self.ledger = workdir, spec, env, ledger
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.front: HAProxy | None = None
        self.front_port = 0
        self.keys_file: Path | None = None

    def api_key(self) -> str | None:
        """The first API key (for the fleet's own load), or None when the gateways take every request."""
        if self.keys_file is None:
            return None
        return next(ln.strip() for ln in self.keys_file.read_text().splitlines() if ln.strip() and ln[0] != "#")

    def _keys(self) -> Path | None:
        """`api_keys` names a file on a local fleet (relative to the fleet's folder); made, with one key, if absent."""
        name = self.spec.get("api_keys")
        if not name:
            return None
        path = Path(name) if Path(name).is_absolute() else self.workdir / name
        if not path.exists():
            write_atomic(path, f"# made by spotstack local\nsk-local-{secrets.token_urlsafe(24)}\n", mode=0o600)
        return path

    async def start(self) -> None:
        self.keys_file = self._keys()
        n = int(self.spec.get("replicas", 2))
        files = [self.workdir / f"gateway-{i}.port" for i in range(n)]
        for i, pf in enumerate(files):
            pf.unlink(missing_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "spotstack.cli.main",
                "gateway",
                "run",
                "--replicas-file",
                str(self.workdir / "replicas.json"),
                "--port",
                "0",
                "--port-file",
                str(pf),
                "--continue-as",
                str(self.spec.get("continue_as", "token_ids")),
                "--log-level",
                "warning",
            ]
            if self.keys_file is not None:
                cmd += ["--api-keys-file", str(self.keys_file)]
            if self.spec.get("rate_limit"):
                cmd += ["--rate-limit", str(self.spec["rate_limit"])]
            p = self._spawn(cmd, self.workdir / f"gateway-{i}.log")
            self.procs.append(p)
            self.ledger.record(p.pid, f"gateway {i}")
        end = time.monotonic() + 60
        for pf in files:
            while not pf.exists():
                if time.monotonic() > end or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"a gateway did not start (see {self.workdir}/gateway-*.log)")
                await asyncio.sleep(0.05)
            self.ports.append(int(pf.read_text()))
        self.front_port = free_port()
        servers = [Server(f"gw{i}", port, port) for i, port in enumerate(self.ports)]
        self.front = HAProxy(self.workdir / "front", self.front_port, servers)
        await self.front.start()
        if self.front.pid is not None:
            self.ledger.record(self.front.pid, "haproxy (gateways)")

    def _spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(cmd, env=self.env, stdout=out, stderr=out, preexec_fn=die_with_parent)

    async def stop(self) -> None:
        if self.front is not None:
            await self.front.stop()
        for p in self.procs:
            p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(p.wait, 10)
