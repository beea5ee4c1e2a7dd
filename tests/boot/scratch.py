"""Run a node's rendered boot document on this machine, in a scratch root instead of `/`.

The document is the `#cloud-config` the plan puts in the launch template / instance template / scaling
configuration, taken as is. Its `write_files` are written and its `runcmd` steps run in order, with every
spotstack path moved under the scratch root. What cannot run here is replaced, and listed in `SUBSTITUTED`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spotstack.runtime.bootstrap import GPU_SETUP
from tests.conftest import ROOT

# Every absolute path the boot document and the agent's defaults use, moved under the scratch root.
NODE_PATHS = ("/etc/spotstack", "/opt/spotstack", "/var/lib/spotstack", "/dev/shm/spotstack", "/run/spotstack")

SUBSTITUTED = {
    "systemctl daemon-reload / enable --now": "no systemd in a test: the harness starts each unit's ExecStart "
    "itself (the agent unit's command line as written); sandboxing directives are not applied",
    "the workload unit (docker run --gpus all <image>)": "no Docker or GPU here: a stand-in model server, "
    "ready once the model's files are in the model folder, runs on a free port; the unit's command is checked",
    "registry logins (ExecStartPre)": "the agent's own login (`spotstack agent registry-login`) runs against the "
    "loopback ECR (moto), the GCP metadata emulator's token and the ACR emulator, with a stand-in docker CLI",
    "pip install spotstack[...]==<version> from an index": "no index in tests: the wheel built from this "
    "checkout (PIP_NO_INDEX, PIP_FIND_LINKS), its dependencies seen through a .pth into this test environment "
    "written once the venv step has run",
    "ports 8080 (workload), 8471 (agent), 8470 (peers)": "moved to free ports through the agent's documented "
    "SPOTSTACK_AGENT__* environment overrides (a test machine may use them)",
    "cloud endpoints": "metadata, secret store and object store point at loopback emulators through the "
    "agent's overrides and each SDK's own endpoint variable (AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST)",
    "python3 -m venv <venv>": "run with --without-pip: ensurepip (pip installing its bundled wheel into each "
    "venv, ~5 CPU-s a boot) is replaced by this environment's pip, seen through the same .pth, and a bin/pip that "
    "runs it with the venv's interpreter (so it installs into the venv, as the venv's own pip would)",
    "apt-get install python3-venv": "runs only where venv is missing; this machine has it",
    "the GPU setup step (Alibaba's stock image: driver, Docker, NVIDIA toolkit; GCP's accelerator image: Docker "
    "and the toolkit)": "needs a GPU, root and the "
    "internet; skipped here, its shell is checked in tests/runtime/test_config_and_bootstrap.py",
}


@dataclass
class BootDoc:
    files: list[dict[str, Any]]
    runcmd: list[list[str]]

    @classmethod
    def parse(cls, text: str) -> BootDoc:
        assert text.startswith("#cloud-config\n"), "cloud-init reads only documents that start with #cloud-config"
        doc = yaml.safe_load(text)
        return cls(list(doc["write_files"]), [list(map(str, c)) for c in doc["runcmd"]])


def build_wheel(out: Path) -> Path:
    """The agent's wheel from this checkout, built in a copy (a build in place leaves build/ and egg-info)."""
    src = _mkdir(out / "src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    for pkg in ("components", "runtime", "cli"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = out / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=src,
        check=True,
        timeout=300,
    )
    return wheels


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def dependency_view(out: Path) -> Path:
    """A folder of links to this environment's installed packages, without spotstack itself or pip's own
    tooling, so the node's venv resolves the agent's dependencies without an index."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = _mkdir(out / "deps")
    skip = ("spotstack", "__editable__", "_distutils_hack", "pip", "setuptools", "wheel")
    tools = _mkdir(pip_view(view))
    for entry in site.iterdir():
        if entry.name.endswith(".pth"):
            continue
        if entry.name == "pip" or (entry.name.startswith("pip-") and entry.name.endswith(".dist-info")):
            (tools / entry.name).symlink_to(entry)  # the node venv's pip (see SUBSTITUTED)
        elif not entry.name.lower().startswith(skip):
            (view / entry.name).symlink_to(entry)
    return view


def pip_view(deps: Path) -> Path:
    """Beside the dependency view: this environment's pip alone, for the node's venv (see SUBSTITUTED)."""
    return deps.parent / "pip"


@dataclass
class ScratchNode:
    root: Path
    wheels: Path
    deps: Path
    env: dict[str, str]
    """The node's environment: endpoints and overrides (the harness adds PATH and HOME)."""
    log: list[str] = field(default_factory=list)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    workload_unit: str = ""
    workload_pre: list[str] = field(default_factory=list)
    """The workload unit's ExecStartPre commands (registry logins), for a test to run with a stand-in Docker."""
    index: str | None = None
    """A package index URL for pip instead of the checkout's wheel (a dead one proves nothing is installed)."""

    def path(self, p: str) -> str:
        for prefix in NODE_PATHS:
            if p == prefix or p.startswith(prefix + "/"):
                return str(self.root) + p
        return p

    def remap(self, text: str) -> str:
        for prefix in NODE_PATHS:
            text = text.replace(prefix, str(self.root) + prefix)
        return text

    def node_env(self) -> dict[str, str]:
        shim = _mkdir(self.root / "shim")
        # `python3` on a node is the image's interpreter; here, the one this environment's packages match.
        link = shim / "python3"
        if not link.exists():
            link.symlink_to(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
        home = _mkdir(self.root / "root")
        return {
            "PATH": f"{shim}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "AWS_CONFIG_FILE": str(home / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **(
                {"PIP_INDEX_URL": self.index, "PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}
                if self.index
                else {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(self.wheels)}
            ),
            **self.env,
        }

    async def boot(self, text: str) -> None:
        doc = BootDoc.parse(text)
        for f in doc.files:
            target = Path(self.path(str(f["path"])))
            if target.parts[:4] == ("/", "etc", "systemd", "system"):
                target = self.root / str(f["path"]).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            content = str(f["content"])
            if f.get("encoding") == "gz+b64":  # as cloud-init decodes it
                content = gzip.decompress(base64.b64decode(content)).decode()
            target.write_text(self.remap(content))
            if "permissions" in f:
                target.chmod(int(str(f["permissions"]), 8))
        for cmd in doc.runcmd:
            await self.step(cmd)

    async def step(self, cmd: list[str]) -> None:
        if cmd[0] == "systemctl":
            self.log.append(f"substituted: {shlex.join(cmd)}")
            if cmd[1:3] == ["enable", "--now"]:
                for unit in cmd[3:]:
                    await self.start_unit(unit)
            return
        if cmd == ["sh", "-c", GPU_SETUP]:
            self.log.append("substituted: GPU setup")
            return
        args = [self.remap(a) for a in cmd]
        self.log.append(f"run: {shlex.join(cmd)}")
        if args[:3] == ["python3", "-m", "venv"] and len(args) == 4:
            self.log.append("substituted: the venv's pip (see SUBSTITUTED)")
            args = [*args[:3], "--without-pip", args[3]]
        proc = await asyncio.create_subprocess_exec(
            *args,
            env=self.node_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its background children (the secret fetch loop) share this group
        )
        self.procs.append(proc)
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        assert proc.returncode == 0, f"boot step failed ({proc.returncode}): {shlex.join(cmd)}\n{out.decode()}"
        self.log += [f"out: {line}" for line in out.decode(errors="replace").splitlines()]
        if args[:3] == ["python3", "-m", "venv"]:
            self.link_deps(args[-1])

    def link_deps(self, venv: str) -> None:
        """The agent's dependencies, seen by the node's new venv through a .pth (see SUBSTITUTED)."""
        site = next(Path(venv).glob("lib/python3*/site-packages"))
        (site / "spotstack-test-deps.pth").write_text(f"{self.deps}\n{pip_view(self.deps)}\n")
        pip = Path(venv) / "bin" / "pip"
        if not pip.exists():
            pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
            pip.chmod(0o755)

    async def start_unit(self, unit: str) -> None:
        text = (self.root / "etc/systemd/system" / unit).read_text()
        exec_start = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart="))
        if unit == "spotstack-workload.service":
            self.workload_unit = text
            pre = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStartPre=")]
            self.workload_pre = [shlex.split(p)[-1] for p in pre]  # /bin/sh -c <line>, written remapped
            return  # the stand-in model server is the test's (see SUBSTITUTED)
        out = open(self.root / f"{unit}.log", "wb")  # noqa: SIM115, ASYNC230 - a local file, written until stopped
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(exec_start), env=self.node_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.procs.append(proc)

    def unit_log(self, unit: str = "spotstack-agent.service") -> str:
        """What a unit wrote (or, for `cache-token.log`, the boot's token fetch loop)."""
        p = self.root / f"{unit}.log"
        if unit == "cache-token.log":
            p = Path(self.path("/etc/spotstack/cache-token.log"))
        return p.read_text(errors="replace") if p.exists() else ""

    async def stop(self) -> None:
        """Stop everything the boot started: the agent, and each step's leftover background children."""
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what outlived its leader, or ignored SIGTERM
            if proc.returncode is None:
                await proc.wait()
