"""The agent's config contract and the boot document, tested as data and text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from spotstack.runtime.bootstrap import Workload, agent_unit, render_cloud_init, workload_unit
from spotstack.runtime.config import AgentConfig, env_overrides, load_agent_config


def test_env_overrides_nest_and_parse_json() -> None:
    env = {
        "SPOTSTACK_AGENT__DRAIN__TIMEOUT_S": "30",
        "SPOTSTACK_AGENT__DRY_RUN": "true",
        "OTHER": "x",
        "SPOTSTACK_AGENT__METADATA__BASE_URL": "http://127.0.0.1:9",
    }
    assert env_overrides(env) == {
        "drain": {"timeout_s": 30},
        "dry_run": True,
        "metadata": {"base_url": "http://127.0.0.1:9"},
    }


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"cloud": "gcp", "drain": {"timeout_s": 20, "safety_margin_s": 2}}))
    cfg = load_agent_config(path, {"SPOTSTACK_AGENT__DRAIN__TIMEOUT_S": "25"})
    assert (cfg.cloud, cfg.drain.timeout_s, cfg.drain.safety_margin_s) == ("gcp", 25, 2)
    assert cfg.metadata_url == "http://metadata.google.internal"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cloud": "gcp", "lifecycle": {"enabled": True, "hook_name": "h"}}, "and Alibaba ESS groups only"),
        ({"cloud": "aws", "lifecycle": {"enabled": True}}, "enabled needs hook_name"),
        ({"cloud": "aws", "load_balancer": {"kind": "elbv2"}}, "needs target_group_arn"),
        ({"cloud": "aws", "load_balancer": {"kind": "haproxy", "haproxy_socket": "/x"}}, "needs haproxy_socket"),
        ({"cloud": "alicloud", "load_balancer": {"kind": "elbv2", "target_group_arn": "a"}}, "AWS only"),
        ({"cloud": "aws", "drain": {"timeout_s": 0}}, "greater than 0"),
        ({"cloud": "aws", "bogus": 1}, "Extra inputs"),
    ],
)
def test_invalid_combinations_rejected_at_parse(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AgentConfig.model_validate(data)


def test_systemd_unit_runs_the_agent_and_outlasts_a_drain() -> None:
    unit = agent_unit()
    assert "ExecStart=/opt/spotstack/bin/spotstack agent run --config /etc/spotstack/agent.json" in unit
    assert "Restart=always" in unit
    assert "TimeoutStopSec=330" in unit  # longer than Alibaba's 5-minute notice


def test_workload_unit_logs_in_then_runs_the_image() -> None:
    unit = workload_unit(
        Workload(image="1.dkr.ecr.us-east-1.amazonaws.com/m:v1", port=8080, login=["aws ecr x | docker login"])
    )
    assert "ExecStartPre=/bin/sh -c 'aws ecr x | docker login'" in unit
    assert "-p 8080:8080" in unit and "1.dkr.ecr.us-east-1.amazonaws.com/m:v1" in unit


def test_cloud_init_writes_config_and_starts_both_units() -> None:
    cfg = AgentConfig(cloud="aws", dry_run=True)
    text = render_cloud_init(cfg, Workload(image="img:1", port=9000))
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/spotstack/agent.json"]["permissions"] == "0600"
    assert AgentConfig.model_validate_json(files["/etc/spotstack/agent.json"]["content"]) == cfg
    assert "/etc/systemd/system/spotstack-agent.service" in files
    assert doc["runcmd"][-1] == [
        "systemctl",
        "enable",
        "--now",
        "spotstack-agent.service",
        "spotstack-workload.service",
    ]
    from spotstack.runtime.bootstrap import AgentInstall, install_steps

    steps = install_steps(AgentInstall())
    assert doc["runcmd"][-len(steps) - 2 : -2] == steps  # installed, then units enabled
    assert "/opt/spotstack/bin/pip install --quiet 'spotstack[agent]'" in steps[-1][2]
    # Without a published wheel no fetcher is carried.
    assert "/etc/spotstack/objectget.py" not in files


@pytest.mark.slow
def test_a_secret_fetch_retries_until_the_permission_arrives(tmp_path: Path) -> None:
    """The boot's secret fetch, run as cloud-init runs it: it fails while the node lacks the permission,
    then lands the secret atomically (never a partial file) and boot was never held up."""
    import subprocess

    from spotstack.runtime.bootstrap import Secret, fetch_secret
    from tests.waits import wait_until

    calls, target = tmp_path / "calls", tmp_path / "cache-token"
    # Denied twice (as an IAM policy not yet in force), then the value.
    command = (
        f"echo x >> {calls}; [ $(wc -l < {calls}) -ge 3 ] || {{ echo AccessDenied >&2; exit 1; }}; echo s3cret-token"
    )
    subprocess.run(["sh", "-c", fetch_secret(Secret(str(target), command))], check=True, timeout=30)
    assert not target.exists()  # detached: boot went on while the fetch waits for its permission
    wait_until(lambda: target.exists(), what="the secret after two denials")
    assert target.read_text().strip() == "s3cret-token"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert len(calls.read_text().splitlines()) == 3


def test_the_venv_check_runs_and_installs_nothing_where_venv_exists() -> None:
    import subprocess

    from spotstack.runtime.bootstrap import ENSURE_VENV

    r = subprocess.run(["sh", "-c", ENSURE_VENV + " && echo ok"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "ok" and "apt" not in r.stderr


def _stubs(tmp_path: Path, present: list[str], recorded: list[str]) -> dict[str, str]:
    """A PATH where `present` commands exist (doing nothing) and `recorded` ones log their arguments."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for name in present:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for name in recorded:
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": os.environ.get("LANG", "C.UTF-8")}


def test_gpu_setup_installs_nothing_where_the_image_has_it_all(tmp_path: Path) -> None:
    """Deployability finding 17: the same step must be harmless on a GPU image (and on a reboot)."""
    import subprocess

    from spotstack.runtime.bootstrap import GPU_SETUP

    assert subprocess.run(["sh", "-n", "-c", GPU_SETUP], timeout=10).returncode == 0
    env = _stubs(tmp_path, ["docker", "nvidia-smi", "nvidia-ctk"], ["apt-get", "ubuntu-drivers", "modprobe", "curl"])
    r = subprocess.run(["sh", "-c", GPU_SETUP], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "calls").exists()


def test_gpu_setup_installs_the_driver_where_the_image_lacks_it(tmp_path: Path) -> None:
    import subprocess

    from spotstack.runtime.bootstrap import GPU_SETUP

    env = _stubs(tmp_path, ["docker", "nvidia-ctk"], ["apt-get", "ubuntu-drivers", "modprobe"])
    r = subprocess.run(["sh", "-c", GPU_SETUP], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [  # through apt_retry: the dpkg lock waited for, retried
        "apt-get -o DPkg::Lock::Timeout=300 -qq update",
        "apt-get -o DPkg::Lock::Timeout=300 -qq install -y ubuntu-drivers-common",
        "ubuntu-drivers install --gpgpu",
        "modprobe nvidia",
    ]


def test_alibabas_stock_image_gets_the_gpu_setup_and_a_baked_one_does_not() -> None:
    import base64

    from spotstack.components import program
    from spotstack.components.plan.engine import run_offline
    from spotstack.runtime.bootstrap import GPU_SETUP
    from tests.components.test_gcp_alicloud import as_cloud
    from tests.conftest import region_config

    def steps(raw: dict[str, object]) -> list[list[str]]:
        plan = run_offline(program.run, {"spotstack:fleets": [raw], **region_config(raw)}, stack="t")
        typ = "alicloud:ess/scalingConfiguration:ScalingConfiguration"
        ud = next(r.inputs["userData"] for r in plan.resources if r.type == typ)
        return list(yaml.safe_load(base64.b64decode(ud).decode())["runcmd"])

    stock = steps(as_cloud("alicloud"))
    assert ["sh", "-c", GPU_SETUP] in stock
    assert stock.index(["sh", "-c", GPU_SETUP]) < stock.index(["systemctl", "daemon-reload"])
    assert ["sh", "-c", GPU_SETUP] not in steps({**as_cloud("alicloud"), "machine_image": "m-gpu-image"})
