"""The adaptor contracts the drain sequence talks to. Implementations live beside this file."""

from __future__ import annotations

from typing import Protocol


class Rotation(Protocol):
    """Something that routes traffic to this node and can be told to stop."""

    name: str

    async def leave(self) -> None: ...


class Inflight(Protocol):
    """How many requests the workload is serving right now."""

    name: str

    async def count(self) -> int: ...


class Workload(Protocol):
    name: str

    async def stop(self) -> None: ...


class Lifecycle(Protocol):
    """The cloud's termination hook, which waits for us (AWS ASG)."""

    name: str

    async def heartbeat(self) -> None: ...

    async def complete(self) -> None: ...
