"""Checkpoints for any training script: `save(step, data)` and `latest()`, on an object store or a directory.

    from spotstack.runtime.jobs.checkpoint import Checkpoints
    ck = Checkpoints.from_env()            # the worker sets SPOTSTACK_CHECKPOINT_URL for the job
    found = ck.latest()                    # (step, bytes) of the newest complete checkpoint, or None
    ...
    ck.save(step, data)                    # every N steps, and when ck.stop_requested()

A checkpoint is complete once its marker is written, after its data: `<step>.ckpt`, then `<step>.done`
holding the data's size and BLAKE3. `latest()` skips any checkpoint whose data does not match its marker (a
write cut off by the node's end), so a resumed run never starts from half a checkpoint and never goes back past
the last complete one. On a spot notice the worker sends the job SIGTERM and writes the notice's deadline to
SPOTSTACK_CHECKPOINT_DEADLINE_FILE: `stop_requested()` and `budget_s()` read them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotstack.runtime.files import write_atomic
from spotstack.runtime.objects import protocols, read_small

if TYPE_CHECKING:  # a training script imports this module: it stays free of pydantic
    from spotstack.runtime.jobs.task import Task

ENV_URL = "SPOTSTACK_CHECKPOINT_URL"
ENV_DEADLINE_FILE = "SPOTSTACK_CHECKPOINT_DEADLINE_FILE"
KEEP = 2
"""Complete checkpoints kept; older ones are deleted after a newer one is complete."""


def _digest(data: bytes) -> str:
    import blake3

    return str(blake3.blake3(data).hexdigest())


class Checkpoints:
    def __init__(self, url: str) -> None:
        import fsspec

        if url.startswith("oss://"):
            from spotstack.runtime import ossfs_v4

            ossfs_v4.install()  # Signature V4: new buckets refuse V1

        self.url = url.rstrip("/")
        self.fs: Any
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = str(root).rstrip("/")
        self.local = "file" in protocols(self.fs)
        self._stop = False

    @classmethod
    def from_env(cls) -> Checkpoints:
        url = os.environ.get(ENV_URL)
        if not url:
            raise RuntimeError(f"{ENV_URL} is not set: run this as a spotstack training job, or set it")
        # The handler goes first: fsspec and its cloud backend take a second or more to import on a cold node, and a
        # notice then must ask the run to stop, not end it before its first checkpoint.
        early: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, _frame: early.append(signum))
        ck = cls(url)
        ck.watch_notice()
        ck._stop = ck._stop or bool(early)
        return ck

    # -- notice ---------------------------------------------------------------------------------------
    def watch_notice(self) -> None:
        """SIGTERM (the worker's notice) sets stop_requested() instead of ending the process."""
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))

    def stop_requested(self) -> bool:
        return self._stop

    def budget_s(self) -> float | None:
        """Seconds left until the node is reclaimed, once the worker has said (None before a notice)."""
        path = os.environ.get(ENV_DEADLINE_FILE)
        try:
            return float(Path(path).read_text()) - time.time() if path else None
        except (OSError, ValueError):
            return None

    # -- store ----------------------------------------------------------------------------------------
    def _write(self, name: str, data: bytes) -> None:
        path = f"{self.root}/{name}"
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, fsync=True)  # a failed write leaves no temporary file behind
        else:
            self.fs.pipe_file(path, data)

    def steps(self) -> list[int]:
        """Steps with a completion marker, oldest first."""
        self.fs.invalidate_cache(self.root)
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            base = str(n).rsplit("/", 1)[-1]
            if base.endswith(".done") and base[:-5].isdigit():
                out.append(int(base[:-5]))
        return sorted(out)

    def save(self, step: int, data: bytes) -> None:
        if step < 0:
            raise ValueError("step must be >= 0")
        self._write(f"{step:012d}.ckpt", data)
        self._write(
            f"{step:012d}.done", json.dumps({"step": step, "size": len(data), "blake3": _digest(data)}).encode()
        )
        for old in self.steps()[:-KEEP]:
            for suffix in (".done", ".ckpt"):  # marker first: a half-deleted checkpoint is never "complete"
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(f"{self.root}/{old:012d}{suffix}")

    def mark(self, step: int) -> None:
        """Optional: record how far the run has got (one small write), so a resumed run can say how many steps
        it redoes after a node ended without notice."""
        self._write("progress", str(step).encode())

    def reached(self) -> int:
        """The furthest step `mark` recorded (0 if none)."""
        try:
            return int(read_small(self.fs, f"{self.root}/progress"))
        except (FileNotFoundError, ValueError):
            return 0

    def latest(self) -> tuple[int, bytes] | None:
        """The newest checkpoint whose data matches its marker."""
        for step in reversed(self.steps()):
            try:
                marker = json.loads(read_small(self.fs, f"{self.root}/{step:012d}.done"))
                data = self.fs.cat_file(f"{self.root}/{step:012d}.ckpt")
            except (FileNotFoundError, ValueError):
                continue
            if len(data) == marker.get("size") and _digest(data) == marker.get("blake3"):
                return step, bytes(data)
        return None


def latest_step(checkpoint_url: str | None, task: Task) -> int | None:
    """The step a training task resumes from: its newest checkpoint under `<checkpoint_url>/<task id>` (blocking
    I/O: call it off the event loop). None for a task that is not training, or has none."""
    if not (task.training and checkpoint_url):
        return None
    steps = Checkpoints(f"{checkpoint_url.rstrip('/')}/{task.id}").steps()
    return steps[-1] if steps else None
