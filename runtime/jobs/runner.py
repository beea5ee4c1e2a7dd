"""Running one task: an HTTP call to the workload, or a command. Each run is cancellable at any point (a
preempted task is given back and its run abandoned), and a training command can be told to checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from spotstack.runtime.jobs.checkpoint import ENV_DEADLINE_FILE, ENV_URL
from spotstack.runtime.jobs.task import LOG_TAIL_BYTES, Task, tail


@dataclass
class Outcome:
    ok: bool
    output: Any = None
    error: str = ""
    log_tail: str = ""
    unavailable: bool = False
    """The workload could not take it (HTTP 503, e.g. still loading): given back, not counted as a failure."""


class HttpRun:
    """POST the task's body to the workload; a 2xx answer is the result (JSON if it is JSON)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, task: Task, timeout_s: float) -> None:
        self.session, self.url, self.task, self.timeout_s = session, url, task, timeout_s

    def checkpoint(self, deadline: float) -> bool:
        return False  # a request has nothing to checkpoint: it is given back and runs again elsewhere

    async def run(self) -> Outcome:
        try:
            async with self.session.post(
                self.url,
                json=self.task.body,
                headers={"X-Spotstack-Task": self.task.id},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as r:
                text = await r.text()
                if r.status == 503:
                    return Outcome(False, error="HTTP 503", log_tail=tail(text), unavailable=True)
                if not 200 <= r.status < 300:
                    return Outcome(False, error=f"HTTP {r.status}", log_tail=tail(text))
                try:
                    return Outcome(True, json.loads(text) if text else None)
                except ValueError:
                    return Outcome(True, text)
        except asyncio.TimeoutError:
            return Outcome(False, error=f"no answer in {self.timeout_s:g}s")
        except aiohttp.ClientError as exc:
            return Outcome(False, error=f"workload unreachable: {exc}")


class CommandRun:
    """Run a command: the task's body as JSON on stdin, stdout as the output, the last of stdout and stderr as
    the log tail. A training run gets its checkpoint location; on a notice it is sent SIGTERM with the deadline
    written where it can read it (`checkpoint.Checkpoints.budget_s`)."""

    def __init__(
        self,
        argv: list[str],
        task: Task,
        timeout_s: float,
        workdir: Path,
        env: dict[str, str] | None = None,
        checkpoint_url: str | None = None,
    ) -> None:
        self.argv, self.task, self.timeout_s = argv, task, timeout_s
        self.workdir = workdir
        self.env = dict(os.environ if env is None else env)
        self.env["SPOTSTACK_TASK_ID"] = task.id
        self.deadline_file = workdir / f"{task.id}.deadline"
        if checkpoint_url:
            self.env[ENV_URL] = checkpoint_url
            self.env[ENV_DEADLINE_FILE] = str(self.deadline_file)

        self.proc: asyncio.subprocess.Process | None = None

    def checkpoint(self, deadline: float) -> bool:
        """Tell a training run to checkpoint now: True if told (it then ends on its own)."""
        if self.proc is None or self.proc.returncode is not None or not self.task.training:
            return False
        self.deadline_file.write_text(f"{deadline:.3f}")
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return True

    async def run(self) -> Outcome:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.env.get(ENV_URL, "").startswith("oss://"):
            from spotstack.runtime.cache.origin_auth import fsspec_env

            # The run saves checkpoints with the node's identity too (set by the worker's store by now).
            self.env.update(fsspec_env())
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # a task's children end with it
        )
        body = b"" if self.task.body is None else json.dumps(self.task.body).encode()
        try:
            out, errs = await asyncio.wait_for(self.proc.communicate(body), self.timeout_s)
        except asyncio.TimeoutError:
            self._kill()
            await self.proc.wait()
            return Outcome(False, error=f"ran past its timeout ({self.timeout_s:g}s)")
        except asyncio.CancelledError:
            self._kill()
            raise
        finally:
            self.deadline_file.unlink(missing_ok=True)
        text, log_text = out.decode(errors="replace"), errs.decode(errors="replace")
        log_tail = tail(text[-LOG_TAIL_BYTES:] + log_text)
        if self.proc.returncode != 0:
            return Outcome(False, error=f"{self.argv[0]} exited {self.proc.returncode}", log_tail=log_tail)
        try:
            output: Any = json.loads(text) if text.strip() else None
        except ValueError:
            output = text
        return Outcome(True, output, log_tail=log_tail)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
