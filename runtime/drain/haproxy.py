"""Leave an HAProxy backend through its runtime API (local fleets; also any self-run HAProxy).

`set server B/S state drain` stops new requests to the server while the ones it has finish;
HAProxy's own health checks would take `fall x inter` to notice, this is immediate.
"""

from __future__ import annotations

import asyncio


class HAProxyError(Exception):
    pass


async def runtime_command(address: str, command: str, timeout_s: float = 2.0) -> str:
    """Send one command to the runtime API (unix socket path, or host:port) and read the answer."""
    if address.startswith("/"):
        opened = asyncio.open_unix_connection(address)
    else:
        host, _, port = address.rpartition(":")
        opened = asyncio.open_connection(host or "127.0.0.1", int(port))
    reader, writer = await asyncio.wait_for(opened, timeout_s)
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    return answer.decode().strip()


class HAProxyRotation:
    name = "haproxy"

    def __init__(self, address: str, backend: str, server: str) -> None:
        self.address, self.backend, self.server = address, backend, server

    async def set_state(self, state: str) -> None:
        answer = await runtime_command(self.address, f"set server {self.backend}/{self.server} state {state}")
        if answer:  # success is an empty answer; anything else is HAProxy explaining a failure
            raise HAProxyError(f"set server {self.backend}/{self.server} state {state}: {answer}")

    async def leave(self) -> None:
        await self.set_state("drain")
