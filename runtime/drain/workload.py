"""Tell the workload to stop (so it can checkpoint): a configured command, or a signal to its pid."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path


class CommandWorkload:
    name = "command"

    def __init__(self, argv: list[str], timeout_s: float = 30.0) -> None:
        self.argv, self.timeout_s = argv, timeout_s

    async def stop(self) -> None:
        proc = await asyncio.create_subprocess_exec(*self.argv)
        try:
            code = await asyncio.wait_for(proc.wait(), self.timeout_s)
        except asyncio.TimeoutError:
            proc.kill()
            raise
        if code != 0:
            raise RuntimeError(f"{self.argv[0]} exited {code}")


class SignalWorkload:
    name = "signal"

    def __init__(self, pid_file: str, signame: str = "SIGTERM") -> None:
        self.pid_file, self.signal = pid_file, signal.Signals[signame]

    async def stop(self) -> None:
        pid = int((await asyncio.to_thread(Path(self.pid_file).read_text)).strip())
        os.kill(pid, self.signal)


class NoWorkload:
    """Nothing configured: the workload is stopped by the node going down."""

    name = "none"

    async def stop(self) -> None:
        return None
