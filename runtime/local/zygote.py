"""Local nodes start as forks of one process that has already imported what a node runs.

A node is a fresh Python process: the agent, aiohttp, pydantic, boto3, s3fs, numpy and the model server cost it
~0.5 CPU-seconds of imports on a quiet machine and over a second on a busy one — at every boot, and a local fleet
boots a node at every preemption. On a cloud a new machine boots on its own CPUs; here it takes them from the
replicas serving the preempted node's traffic. The zygote imports all of it once; each node is an `os.fork()` of
it (copy-on-write: the modules' memory is shared until written) running `runtime/local/node.py`'s `main`.

Protocol, one JSON line each way on the zygote's stdin/stdout: `{"config": path}` -> `{"pid": n}` (the node has
called `setsid()` by then: its process group can be signalled at once), or `{"error": "..."}`. The zygote dies with
the supervisor (parent-death signal) and each node with the zygote, as nodes died with the supervisor before.
Nodes are the zygote's children: it reaps them (SIGCHLD ignored) and the supervisor follows each through a pidfd.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from spotstack.runtime.local.priority import node_preexec
from spotstack.runtime.local.reaper import die_with_parent

PRELOAD = (
    "spotstack.runtime.local.node",
    "spotstack.runtime.local.minilm",
    "spotstack.runtime.jobs.wiring",
    "spotstack.runtime.cache.pull",
    "boto3",
    "botocore.session",
    "s3fs",
    "safetensors.numpy",
    "tokenizers",
)
"""What a node imports, at boot or later (the origin's s3fs, the queue worker's boto3, the model's loaders)."""


class NodeProcess:
    """A node process the supervisor did not fork itself (so cannot wait for): followed through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = None  # gone already

    def exited(self, timeout_s: float | None = 0.0) -> bool:
        """True once the process has ended (waits up to `timeout_s` for it; None waits as long as it takes)."""
        if self._fd is None:
            return True
        if not select.select([self._fd], [], [], timeout_s)[0]:
            return False
        os.close(self._fd)
        self._fd = None
        return True

    def wait(self) -> None:
        self.exited(None)


class Zygote:
    """The supervisor's side: start the zygote (blocking: it imports; run it in a thread), then fork nodes."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> int:
        """Start it and wait until it has imported everything; its pid."""
        with open(self.log, "ab") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from spotstack.runtime.local.zygote import serve; serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
                preexec_fn=die_with_parent,
            )
        ready = self._read()
        if ready.get("ready") is not True:
            raise RuntimeError(f"the node zygote did not start: {ready.get('error', ready)} (see {self.log})")
        return self._proc.pid

    def _read(self) -> dict[str, object]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the node zygote exited (see {self.log})")
        answer: dict[str, object] = json.loads(line)
        return answer

    def fork(self, config: Path) -> NodeProcess:
        """A node running `config`: a fork of the zygote, in a session of its own, booting at `BOOT_NICE`."""
        with self._lock:
            assert self._proc is not None and self._proc.stdin is not None, "start() first"
            self._proc.stdin.write(json.dumps({"config": str(config)}).encode() + b"\n")
            self._proc.stdin.flush()
            answer = self._read()
        if not isinstance(answer.get("pid"), int):
            raise RuntimeError(f"the node zygote could not fork a node: {answer.get('error', answer)}")
        return NodeProcess(int(answer["pid"]))  # type: ignore[call-overload]

    def stop(self) -> None:
        """End the zygote (its nodes are the caller's to end first: a node dies with it)."""
        if self._proc is None:
            return
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # EOF: it exits
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# -- the zygote's side ----------------------------------------------------------------------------------------
def serve(stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> None:
    """Import what a node runs, then fork a node per request until stdin ends."""
    die_with_parent()
    # It shares the supervisor's process group: a Ctrl-C meant for the supervisor must not end it (the supervisor
    # stops the fleet, then closes the zygote's stdin). Nodes run in sessions of their own and get Python's default.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = stdin or sys.stdin.buffer, stdout or sys.stdout.buffer
    try:
        for name in PRELOAD:
            __import__(name)
    except Exception as exc:  # a node would fail the same way: say so, the supervisor stops
        _say(out, {"error": f"importing {name}: {exc!r}"})
        return
    _share_botocore_data()
    # A fork copies only the calling thread: a thread started by an import would be missing in every node.
    if threading.active_count() != 1:
        _say(out, {"error": f"{threading.active_count()} threads after the imports; a fork needs one"})
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # nodes are reaped as they end; the supervisor has pidfds
    _say(out, {"ready": True})
    for line in inp:
        try:
            config = str(json.loads(line)["config"])
            _say(out, {"pid": _fork(config)})
        except Exception as exc:
            _say(out, {"error": repr(exc)})


WARM_SERVICES = ("s3", "sqs", "autoscaling")
"""The botocore clients a local node builds: s3fs's for the origin and the results, boto3's for the queues and
scale-in protection."""


def _share_botocore_data() -> None:
    """Parse botocore's service models and endpoint rules once, for every node.

    Each botocore (and aiobotocore, s3fs) session makes its own data loader and parses the same JSON again: in a
    node, ~0.12 of the 0.26 CPU-s its S3 and SQS clients cost to build. Loaders are read-only caches, which
    botocore lets sessions share (`Session.register_component("data_loader", ...)`); here the sessions are made
    inside s3fs and boto3, so the loader every default session creates is this one, already filled. Only
    the zygote (a local fleet's process factory) does this; a node on a cloud builds its clients once.
    """
    import botocore.loaders
    import botocore.session

    loader = botocore.loaders.create_loader()
    create = botocore.session.create_loader

    def shared(search_path_string: str | None = None) -> botocore.loaders.Loader:
        return loader if search_path_string is None else create(search_path_string)

    botocore.session.create_loader = shared
    session = botocore.session.get_session()
    for service in WARM_SERVICES:  # parses the model, the endpoint rules, partitions and defaults into `loader`
        session.create_client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def _say(out: IO[bytes], doc: dict[str, object]) -> None:
    out.write(json.dumps(doc).encode() + b"\n")
    out.flush()


def _fork(config: str) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the node
        code = 1
        try:
            os.close(r)
            os.setsid()
            os.close(w)  # tells the zygote: in a session of its own now
            _become_node(config)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    os.read(r, 1)  # EOF once the node has called setsid() (or died)
    os.close(r)
    return pid


def _become_node(config: str) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the node waits for its own children (a job's command)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    node_preexec()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    from spotstack.runtime.local.node import main

    try:
        main(config)
    finally:
        import logging

        logging.shutdown()
