"""What a node runs at first boot: the cloud-init document that installs and starts the agent.

Components call `render_cloud_init` with a rendered `AgentConfig`; it is plain text, so it is
tested as text, and the same document works on all three clouds (each boots cloud-init).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from importlib import resources

import yaml

from spotstack.runtime.config import AgentConfig

AGENT_UNIT = "spotstack-agent.service"
WORKLOAD_UNIT = "spotstack-workload.service"
CONFIG_PATH = "/etc/spotstack/agent.json"
VENV = "/opt/spotstack"


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
    pre = "".join(f"ExecStartPre=/bin/sh -c {shlex.quote(line)}\n" for line in w.login)
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


ENSURE_VENV = (
    "python3 -c 'import venv, ensurepip' 2>/dev/null || "
    "(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv)"
)

GPU_SETUP = """set -e
export DEBIAN_FRONTEND=noninteractive
command -v docker >/dev/null || { apt-get update -qq; apt-get install -y -qq docker.io; }
if ! command -v nvidia-smi >/dev/null; then
  apt-get update -qq; apt-get install -y -qq ubuntu-drivers-common
  ubuntu-drivers install --gpgpu
  modprobe nvidia
fi
if ! command -v nvidia-ctk >/dev/null; then
  k=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o $k
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed "s#deb https://#deb [signed-by=$k] https://#g" > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update -qq; apt-get install -y -qq nvidia-container-toolkit
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


def render_cloud_init(
    config: AgentConfig,
    workload: Workload,
    package: str = "spotstack[agent]",
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
        ],
        "runcmd": [
            ["mkdir", "-p", "/var/lib/spotstack", "/etc/spotstack"],
            *(["sh", "-c", fetch_secret(s)] for s in secrets),
            # Stock Debian/Ubuntu images may lack the venv module (python3-venv).
            ["sh", "-c", ENSURE_VENV],
            ["python3", "-m", "venv", VENV],
            [f"{VENV}/bin/pip", "install", "--quiet", package],
            *([["sh", "-c", GPU_SETUP]] if gpu_setup else []),
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", AGENT_UNIT, WORKLOAD_UNIT],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
