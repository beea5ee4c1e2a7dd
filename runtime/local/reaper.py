"""Nothing a local fleet starts outlives it: one supervisor per workdir, children that die with it, and a
ledger of every child so `spotstack local down` can reap what a crashed supervisor left behind.

- A lock (`flock`) on `<workdir>/supervisor.lock`, held for the supervisor's life: a second `up` or `demo`
  on the same stack is refused instead of sharing the workdir.
- Each child is started with the parent-death signal set (Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`), so a
  SIGKILL of the supervisor takes moto, HAProxy and every node with it.
- `<workdir>/children.jsonl` records each child's pid and kernel start time, and the directories the fleet made
  outside its workdir (its /dev/shm caches); `reap` kills the children still running (the start time guards
  against a recycled pid) and removes those directories, whatever happened to the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
LOCK_NAME = "supervisor.lock"
LEDGER_NAME = "children.jsonl"


def die_with_parent() -> None:
    """`preexec_fn` for a child: SIGKILL it when the process that started it dies (Linux; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class AlreadyRunning(RuntimeError):
    pass


class SupervisorLock:
    """An exclusive, non-blocking flock on the workdir; released when its holder exits, however it exits."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> SupervisorLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another local fleet supervisor holds {self.path}") from None
        self.fd = fd
        return self

    @classmethod
    def adopt(cls, workdir: Path, fd: int) -> SupervisorLock:
        """Keep a lock inherited from the `up` that started this supervisor (same open file, same lock)."""
        lock = cls(workdir)
        lock.fd = fd
        return lock

    def held_elsewhere(self) -> bool:
        try:
            self.acquire()
        except AlreadyRunning:
            return True
        self.release()
        return False

    def hand_over(self) -> None:
        """Close our descriptor without unlocking: a child that inherited it keeps the lock
        (LOCK_UN would release it for every holder of the same open file)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


def pid_alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's zombie lingers where nothing reaps it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): the signal test is all there is
    return state != "Z"


def _start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Child:
    pid: int
    start: int | None
    group: bool
    """Kill its whole process group (a node starts a session of its own)."""
    what: str


class Ledger:
    def __init__(self, workdir: Path) -> None:
        self.path = workdir / LEDGER_NAME

    def record(self, pid: int, what: str, group: bool = False) -> None:
        line = json.dumps({"pid": pid, "start": _start_time(pid), "group": group, "what": what})
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def record_dir(self, path: Path) -> None:
        """A directory the fleet made outside its workdir (its memory-backed caches under /dev/shm): `reap`
        removes it, so a killed supervisor does not leave RAM behind."""
        with open(self.path, "a") as f:
            f.write(json.dumps({"dir": str(path)}) + "\n")

    def dirs(self) -> list[Path]:
        out: list[Path] = []
        with contextlib.suppress(OSError):
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out.append(Path(json.loads(line)["dir"]))
        return out

    def children(self) -> list[Child]:
        out: list[Child] = []
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                d = json.loads(line)
                if "dir" in d:
                    continue
                out.append(Child(int(d["pid"]), d.get("start"), bool(d.get("group")), str(d.get("what", "?"))))
        return out

    def alive(self) -> list[Child]:
        return [
            c for c in self.children() if c.start is not None and _start_time(c.pid) == c.start and pid_alive(c.pid)
        ]

    def reap(self) -> list[Child]:
        """SIGKILL every recorded child still running; forget the ledger. Returns what was killed."""
        killed = self.alive()
        for c in killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if c.group:
                    os.killpg(c.pid, signal.SIGKILL)
                else:
                    os.kill(c.pid, signal.SIGKILL)
        for d in self.dirs():
            shutil.rmtree(d, ignore_errors=True)
        self.path.unlink(missing_ok=True)
        return killed
