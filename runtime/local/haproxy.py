"""Run a real HAProxy (Debian's package) as a local fleet's load balancer.

Each replica is a server whose health check probes the agent's readiness port, so a draining
node fails its check; the agent also drains it at once through the runtime API socket.
Retries with redispatch cover a replica that dies without notice (idempotent requests only).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from spotstack.runtime.drain.haproxy import runtime_command
from spotstack.runtime.local.reaper import die_with_parent

BACKEND = "replicas"


class HAProxyMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "haproxy is not installed; a local fleet needs it as its load balancer. "
            "Install it with `sudo apt-get install haproxy` (Debian/Ubuntu) or `brew install haproxy` (macOS)."
        )


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    """Where traffic goes (the agent's proxy, or the workload)."""
    check_port: int
    """The agent's readiness port."""
    ready_path: str = "/ready"
    disabled: bool = False
    """A spare slot: filled through the runtime API when a node starts."""


def render_config(
    listen_port: int,
    socket: Path,
    servers: list[Server],
    *,
    check_ms: int = 200,
    retries: int = 3,
    timeout_server_s: int = 60,
    hold_port: int | None = None,
    monitor_path: str | None = None,
) -> str:
    """An HAProxy config: one frontend, one backend of replicas, an admin runtime socket. Pure. `monitor_path`: the
    frontend answers it 200 while a replica is in rotation, 503 while none is (a front load balancer's check)."""
    lines = [
        "global",
        f"    stats socket {socket} mode 600 level admin",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        # Without it a check's whole budget is `inter` (200 ms): on a busy machine every replica's /ready
        # answered late at once, all were marked down, and a request met "503 no server available".
        # Planned drains do not wait for checks (the agent drains through the runtime API).
        "    timeout check 2s",
        "    timeout client 60s",
        f"    timeout server {timeout_server_s}s",
        f"    retries {retries}",
        "    option redispatch 1",
        # Send each piece of a response as it comes: by default HAProxy holds small writes while it expects more
        # (MSG_MORE), which bunches a token stream into ~200 ms bursts.
        "    option http-no-delay",
        # Retry idempotent requests on another replica when one dies mid-connection.
        "    retry-on conn-failure empty-response response-timeout 502 503",
        "frontend fleet",
        f"    bind 127.0.0.1:{listen_port}",
        *(
            [f"    monitor-uri {monitor_path}", f"    monitor fail if {{ nbsrv({BACKEND}) lt 1 }}"]
            if monitor_path
            else []
        ),
        f"    default_backend {BACKEND}",
        f"backend {BACKEND}",
        "    balance leastconn",
        f"    option httpchk GET {servers[0].ready_path if servers else '/ready'}",
        "    http-check expect status 200",
        f"    default-server inter {check_ms}ms fastinter {check_ms}ms fall 3 rise 2",
    ]
    lines += [
        f"    server {s.name} 127.0.0.1:{s.port} check port {s.check_port}{' disabled' if s.disabled else ''}"
        for s in servers
    ]
    if hold_port is not None:
        # Used only while no replica is in rotation: it holds requests for the next one READY (hold.py).
        lines.append(f"    server hold 127.0.0.1:{hold_port} backup")
    return "\n".join(lines) + "\n"


MAX_SOCKET_PATH = 90
"""HAProxy refuses a runtime socket path longer than 97 bytes (sun_path); deep project folders exceed it."""


def _socket_path(workdir: Path) -> Path:
    path = workdir / "haproxy.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"spotstack-{digest}" / "haproxy.sock"


class HAProxy:
    def __init__(
        self,
        workdir: Path,
        listen_port: int,
        servers: list[Server],
        hold_port: int | None = None,
        monitor_path: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.listen_port = listen_port
        self.servers = servers
        self.hold_port = hold_port
        self.monitor_path = monitor_path
        self.socket = _socket_path(workdir)
        self.config_path = workdir / "haproxy.cfg"
        self._proc: asyncio.subprocess.Process | None = None

    @staticmethod
    def binary() -> str:
        path = shutil.which("haproxy") or next(
            (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
        )
        if path is None:
            raise HAProxyMissing()
        return path

    async def start(self) -> None:
        binary = self.binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                self.listen_port, self.socket, self.servers, hold_port=self.hold_port, monitor_path=self.monitor_path
            )
        )
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        check = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            "-f",
            str(self.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, check_err = await check.communicate()
        if check.returncode != 0:
            alerts = [ln for ln in check_err.decode().splitlines() if "ALERT" in ln]
            raise RuntimeError(f"haproxy rejected {self.config_path}: {' / '.join(alerts) or 'no reason given'}")
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "-db",
            "-f",
            str(self.config_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        for _ in range(100):
            if self.socket.exists():
                try:
                    await runtime_command(str(self.socket), "show info")
                    return
                except OSError:
                    pass
            if self._proc.returncode is not None:
                err = await self._proc.stderr.read() if self._proc.stderr else b""
                raise RuntimeError(f"haproxy exited: {err.decode().strip()}")
            await asyncio.sleep(0.05)
        raise RuntimeError("haproxy did not open its runtime socket within 5 s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def server_states(self) -> dict[str, str]:
        """Server name -> operational/admin state, from `show servers state`."""
        out = await runtime_command(str(self.socket), f"show servers state {BACKEND}")
        states: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) > 6 and not line.startswith("#") and parts[1] == BACKEND:
                # columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
                states[parts[3]] = f"op={parts[5]} admin={parts[6]}"
        return states

    async def wait_healthy(self, names: list[str], timeout_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            states = await self.server_states()
            if all(states.get(n, "").startswith("op=2") for n in names):  # 2 = running
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"servers not healthy in {timeout_s}s: {await self.server_states()}")

    async def fill(self, slot: str, port: int, check_port: int) -> None:
        """Point a spare slot at a new node and put it in service (health checks decide when it gets traffic)."""
        for cmd in (
            f"set server {BACKEND}/{slot} addr 127.0.0.1 port {port}",
            f"set server {BACKEND}/{slot} check-port {check_port}",
            f"set server {BACKEND}/{slot} state ready",
        ):
            await runtime_command(str(self.socket), cmd)

    async def empty(self, slot: str) -> None:
        await runtime_command(str(self.socket), f"set server {BACKEND}/{slot} state maint")

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None
        if self.socket.parent != self.workdir:  # the short path in the temp folder: ours alone
            shutil.rmtree(self.socket.parent, ignore_errors=True)
