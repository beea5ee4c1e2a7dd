"""What a node runs at first boot: the cloud-init document that installs and starts the agent.

Components call `render_cloud_init` with a rendered `AgentConfig`; it is plain text, so it is
tested as text, and the same document works on all three clouds (each boots cloud-init).
"""

from __future__ import annotations

import base64
import gzip
import os
import shlex
from dataclasses import dataclass, field
from importlib import resources

import yaml

from spotstack.runtime.config import AgentConfig

AGENT_UNIT = "spotstack-agent.service"
WORKLOAD_UNIT = "spotstack-workload.service"
CONFIG_PATH = "/etc/spotstack/agent.json"
VENV = "/opt/spotstack"
INSTALLED = f"{VENV}/installed"
"""What the venv holds (`AgentInstall.marker`: `spotstack[agent]==1.4.0`, with ` sha256=<wheel digest>` when
installed from the fleet's wheel), written once the install succeeded. A boot that finds its own marker installs
and fetches nothing: an image baked with these steps (`spotstack bake`) boots without an index or the bucket."""


def agent_unit() -> str:
    """The systemd unit that runs the agent (shipped as package data)."""
    return resources.files("spotstack.runtime").joinpath(AGENT_UNIT).read_text()


@dataclass(frozen=True)
class Workload:
    """The model server container the node runs beside the agent."""

    image: str
    port: int
    model_dir: str = "/var/lib/spotstack/model"
    login: list[str] = field(default_factory=list)
    """Shell line that logs Docker in to the registry (cloud-specific), if any."""
    wait_for_model: bool = False
    """Start the container only once the agent has placed the whole model (its record of what it placed, written
    last and atomically): a model server started early restarted every 5 s until it could load, and could read a
    model half placed."""


PLACED_RECORD = ".spotstack-placed.json"
"""What the agent writes into the model folder once every file is in place (`runtime/cache/place.PLACED`)."""


def workload_unit(w: Workload) -> str:
    run = shlex.join(
        [
            "/usr/bin/docker",
            "run",
            "--rm",
            "--name",
            "spotstack-workload",
            "--gpus",
            "all",
            "-p",
            f"{w.port}:{w.port}",
            "-v",
            f"{w.model_dir}:/model:ro",
            "-e",
            "MODEL_DIR=/model",
            w.image,
        ]
    )
    wait = [f"until [ -s {w.model_dir}/{PLACED_RECORD} ]; do sleep 2; done"] if w.wait_for_model else []
    pre = "".join(f"ExecStartPre=/bin/sh -c {shlex.quote(line)}\n" for line in [*wait, *w.login])
    return (
        "[Unit]\nDescription=spotstack workload (model server)\n"
        f"After=docker.service {AGENT_UNIT}\nRequires=docker.service\n\n"
        "[Service]\n"
        f"{pre}ExecStart={run}\n"
        "ExecStop=/usr/bin/docker stop --time 30 spotstack-workload\n"
        "Restart=always\nRestartSec=5\nTimeoutStartSec=900\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


@dataclass(frozen=True)
class Secret:
    """A file the node fetches at boot (never written into user data, which anyone who can describe
    the instance may read)."""

    path: str
    command: str
    """Shell command printing the secret on stdout, e.g. reading a cloud secret store."""


APT = (
    "apt_retry() { i=0; while [ $i -lt 5 ]; do i=$((i+1)); "
    'DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq "$@" && return 0; '
    "sleep $((i * ${SPOTSTACK_APT_PAUSE_S:-10})); done; return 1; }"
)
"""`apt_retry ARGS`: apt-get that waits up to 5 minutes for the dpkg lock (unattended-upgrades holds it on a fresh
Ubuntu VM's first minutes) and tries 5 times with growing pauses (a mirror that fails once)."""

ENSURE_VENV = (
    f"python3 -c 'import venv, ensurepip' 2>/dev/null || ({APT}; apt_retry update && apt_retry install -y python3-venv)"
)

GPU_SETUP = f"""set -e
{APT}
command -v docker >/dev/null || {{ apt_retry update; apt_retry install -y docker.io; }}
if ! command -v nvidia-smi >/dev/null; then
  apt_retry update; apt_retry install -y ubuntu-drivers-common
  ubuntu-drivers install --gpgpu
  modprobe nvidia
fi
if ! command -v nvidia-ctk >/dev/null; then
  k=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o $k
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed "s#deb https://#deb [signed-by=$k] https://#g" > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt_retry update; apt_retry install -y nvidia-container-toolkit
  nvidia-ctk runtime configure --runtime=docker
  systemctl restart docker
fi
"""
"""First boot on a stock Ubuntu image (no NVIDIA driver, no container runtime): Docker from Ubuntu, the
datacenter driver through `ubuntu-drivers --gpgpu` (Ubuntu's signed prebuilt modules, no reboot), and NVIDIA's
container toolkit from NVIDIA's repository, as NVIDIA documents. Each part is skipped where the image has it."""

SECRET_TRIES = 60
"""A secret fetch is retried with growing pauses (up to 10 s) for about 8 minutes: the node's permission
may reach the cloud's IAM after the node boots (eventual consistency, or a policy created after the group)."""


def fetch_secret(s: Secret) -> str:
    """Shell that fetches a secret into its file atomically, retrying in the background.

    It runs detached so boot goes on; the agent waits for the file and stays unready until it is there.
    Each failed try's error goes to `<path>.log`, where an operator looks when a node stays unready.
    """
    path = shlex.quote(s.path)
    loop = (
        f"i=0; while [ $i -lt {SECRET_TRIES} ]; do i=$((i+1)); "
        f"if ({s.command}) > {path}.tmp && [ -s {path}.tmp ]; then mv {path}.tmp {path}; exit 0; fi; "
        f'sleep $(( i < 10 ? i : 10 )); done; echo "spotstack: could not fetch {s.path}" >&2; exit 1'
    )
    return f"umask 077; nohup sh -c {shlex.quote(loop)} >{shlex.quote(s.path + '.log')} 2>&1 &"


OBJECTGET = "/etc/spotstack/objectget.py"
WHEEL_DIR = "/var/lib/spotstack/agent"


@dataclass(frozen=True)
class AgentInstall:
    """Where a node gets the agent: the wheel the components published to the fleet's bucket (`wheel_url`, checked
    against `sha256`), a wheel already on disk (`wheel_file`: an image being baked), or else the package index."""

    extra: str = "agent"
    version: str | None = None
    sha256: str | None = None
    wheel_url: str | None = None
    wheel_file: str | None = None
    region: str | None = None

    @property
    def marker(self) -> str:
        """What INSTALLED says once this is installed: the pinned requirement, and the wheel's digest if any."""
        pin = f"=={self.version}" if self.version else ""
        return f"spotstack[{self.extra}]{pin}" + (f" sha256={self.sha256}" if self.sha256 else "")

    def commands(self) -> str:
        """Shell: fetch the wheel (if published), install it or the pinned requirement, record the marker."""
        if self.wheel_url:
            assert self.sha256 and self.wheel_file, "a published wheel needs its digest and a file name"
            fetch = [
                "python3", OBJECTGET, self.wheel_url, self.sha256, self.wheel_file,
                *(["--region", self.region] if self.region else []),
            ]  # fmt: skip
            prefix = f"mkdir -p {shlex.quote(os.path.dirname(self.wheel_file))} && {shlex.join(fetch)} && "
        else:
            prefix = ""
        req = f"{self.wheel_file}[{self.extra}]" if self.wheel_file else self.marker
        marker = shlex.quote(self.marker)
        return (
            f'if [ "$(cat {INSTALLED} 2>/dev/null)" = {marker} ]; then echo "spotstack: "{marker}" is in the image"; '
            f"else {prefix}{VENV}/bin/pip install --quiet {shlex.quote(req)} "
            f"&& echo {marker} > {INSTALLED}.tmp && mv {INSTALLED}.tmp {INSTALLED}; fi"
        )


def install_steps(agent: AgentInstall) -> list[list[str]]:
    """The agent's install, the same at first boot and when baking an image (`spotstack bake`): a venv, then the
    agent unless the venv already holds exactly it."""
    # Stock Debian/Ubuntu images may lack the venv module (python3-venv); a baked venv is kept as it is.
    return [["sh", "-c", ENSURE_VENV], ["python3", "-m", "venv", VENV], ["sh", "-c", agent.commands()]]


def bake_script(agent: AgentInstall, gpu_setup: bool = True) -> str:
    """A shell script for an image builder (Packer's shell provisioner, EC2 Image Builder, a GCE or ECS image
    job), run as root: the GPU setup a stock image lacks, and the agent's install steps as the boot runs them,
    so nodes booted from the image install nothing (see INSTALLED)."""
    lines = ["#!/bin/sh", "# spotstack node image: run as root on a stock Ubuntu image.", "set -e"]
    if gpu_setup:
        lines.append(GPU_SETUP.rstrip())
    lines += [shlex.join(step) for step in install_steps(agent)]
    return "\n".join(lines) + "\n"


def _gz_b64(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def objectget_source() -> str:
    """The boot's object fetcher (runtime/objectget.py), carried in the boot document."""
    return resources.files("spotstack.runtime").joinpath("objectget.py").read_text()


def render_cloud_init(
    config: AgentConfig,
    workload: Workload,
    agent: AgentInstall | None = None,
    secrets: tuple[Secret, ...] = (),
    gpu_setup: bool = False,
) -> str:
    """A `#cloud-config` document: write the config and units, fetch secrets, install the agent, start both.

    `gpu_setup` installs what a GPU workload needs where the machine image lacks it (see GPU_SETUP)."""
    doc = {
        "write_files": [
            {"path": CONFIG_PATH, "permissions": "0600", "owner": "root:root", "content": config.to_json()},
            {"path": f"/etc/systemd/system/{AGENT_UNIT}", "content": agent_unit()},
            {"path": f"/etc/systemd/system/{WORKLOAD_UNIT}", "content": workload_unit(workload)},
            *(
                # Compressed: EC2 takes at most 16 KB of user data.
                [
                    {
                        "path": OBJECTGET,
                        "permissions": "0644",
                        "encoding": "gz+b64",
                        "content": _gz_b64(objectget_source()),
                    }
                ]
                if agent is not None and agent.wheel_url
                else []
            ),
        ],
        "runcmd": [
            ["mkdir", "-p", "/var/lib/spotstack", "/etc/spotstack"],
            *(["sh", "-c", fetch_secret(s)] for s in secrets),
            *install_steps(agent or AgentInstall()),
            *([["sh", "-c", GPU_SETUP]] if gpu_setup else []),
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", AGENT_UNIT, WORKLOAD_UNIT],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)


GATEWAY_UNIT = "spotstack-gateway.service"
GATEWAY_KEYS_PATH = "/etc/spotstack/api-keys"


def gateway_unit(command: list[str], drain_s: int) -> str:
    """The systemd unit of a gateway instance: `spotstack gateway run`, given the time to finish its streams."""
    return "\n".join(
        [
            "[Unit]",
            "Description=spotstack fleet gateway (routing, streams continued across preemptions)",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={shlex.join(command)}",
            "Restart=always",
            "RestartSec=2",
            # SIGTERM drains: streams in flight finish (up to the longest request) before it exits.
            f"TimeoutStopSec={drain_s + 30}",
            "KillSignal=SIGTERM",
            "NoNewPrivileges=true",
            "ProtectSystem=full",
            "ProtectHome=true",
            "PrivateTmp=true",
            "LimitNOFILE=65536",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def render_gateway_cloud_init(
    command: list[str], drain_s: int, agent: AgentInstall, secrets: tuple[Secret, ...] = ()
) -> str:
    """A gateway instance's `#cloud-config`: fetch its API keys with the instance's identity, install the package
    (the agent's wheel carries the gateway), start the unit."""
    doc = {
        "write_files": [
            {"path": f"/etc/systemd/system/{GATEWAY_UNIT}", "content": gateway_unit(command, drain_s)},
            *(
                [
                    {
                        "path": OBJECTGET,
                        "permissions": "0644",
                        "encoding": "gz+b64",
                        "content": _gz_b64(objectget_source()),
                    }
                ]
                if agent.wheel_url
                else []
            ),
        ],
        "runcmd": [
            ["mkdir", "-p", "/var/lib/spotstack", "/etc/spotstack"],
            *(["sh", "-c", fetch_secret(s)] for s in secrets),
            *install_steps(agent),
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", GATEWAY_UNIT],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
