"""A node booted from an image baked with `spotstack bake` installs nothing, so it boots without a package index
or the fleet's bucket (Build 8 of the components issue). The boot's install step is taken from a planned boot
document; the "image" is a scratch root that `spotstack bake`'s bake.sh steps ran in first (from the wheel the
command wrote); at boot pip points at a dead index and the metadata server is unreachable, so any fetch or install
attempt would fail the step."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from spotstack.components.agent_wheel import build
from spotstack.components.node import agent_install
from spotstack.components.spec import FleetSpec
from spotstack.runtime.bootstrap import INSTALLED, AgentInstall, install_steps
from spotstack.runtime.net import free_port
from tests.boot.scratch import BootDoc, ScratchNode
from tests.boot.test_boot_path import rendered_boot_document


def install_part(text: str) -> list[list[str]]:
    """The boot document's install steps, located by the venv step (they run in this order on every cloud)."""
    run = BootDoc.parse(text).runcmd
    at = run.index(["python3", "-m", "venv", "/opt/spotstack"])
    return run[at - 1 : at + 2]


def bake(out: Path) -> list[list[str]]:
    """`spotstack bake --cloud aws --no-gpu-setup`: its bake.sh's steps, with the wheel where the script expects
    the image builder to have uploaded the folder."""
    r = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "bake", "--out", str(out), "--no-gpu-setup"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    script = (out / "bake.sh").read_text().replace("/tmp/spotstack-bake", str(out))
    import shlex

    return [shlex.split(line) for line in script.splitlines()[3:]]


def read(p: str) -> str:
    return Path(p).read_text().strip()


@pytest.mark.slow
def test_a_baked_image_boots_without_an_index_or_the_bucket(tmp_path: Path, agent_wheel: tuple[Path, Path]) -> None:
    boot = install_part(rendered_boot_document("aws"))
    agent = agent_install("aws", _aws_fleet())
    assert boot == install_steps(agent) and agent.wheel_url  # the fleet's nodes fetch the published wheel
    baked = bake(tmp_path / "bake")
    assert baked[:2] == boot[:2]

    wheels, deps = agent_wheel
    node = ScratchNode(tmp_path / "image", wheels, deps, {})

    async def run(steps: list[list[str]]) -> None:
        for step in steps:
            await node.step(step)

    asyncio.run(run(baked))
    assert read(node.path(INSTALLED)) == agent.marker
    assert Path(node.path("/opt/spotstack/bin/spotstack")).exists()  # the agent unit runs it

    # First boot of an instance from the image: no index, no metadata server, no bucket.
    dead = f"http://127.0.0.1:{free_port()}"
    node.index, node.log = f"{dead}/simple", []
    node.env = {"SPOTSTACK_AGENT__METADATA__BASE_URL": dead, "AWS_ENDPOINT_URL": dead}
    asyncio.run(run(boot))
    assert any("is in the image" in line for line in node.log), node.log

    # A fleet deployed by another version is not served by this image: its boot installs that version from the
    # index (here a dead one, so the step fails) instead of running the image's agent.
    with pytest.raises(AssertionError, match="boot step failed"):
        asyncio.run(run(install_steps(AgentInstall("agent", "0.0.1"))[-1:]))
    assert read(node.path(INSTALLED)) == agent.marker


def _aws_fleet() -> FleetSpec:
    from spotstack.components.plan.stackfile import load_stack
    from spotstack.components.validate import validate_fleets
    from tests.conftest import ROOT

    sf = load_stack(ROOT, "dev")
    return validate_fleets(sf.config["spotstack:fleets"])[0][0]


@pytest.mark.slow
def test_the_published_wheel_holds_what_setuptools_builds(tmp_path: Path, agent_wheel: tuple[Path, Path]) -> None:
    """The wheel the components publish (made from the installed package) has the same files as the wheel
    setuptools builds from pyproject.toml, the same metadata, and is the same bytes each time."""
    import zipfile

    wheels, _ = agent_wheel
    (built,) = wheels.glob("spotstack-*.whl")
    ours = build()
    names = {n for n in zipfile.ZipFile(ours.path).namelist() if ".dist-info/" not in n}
    theirs = {n for n in zipfile.ZipFile(built).namelist() if ".dist-info/" not in n}
    assert names == theirs, names ^ theirs
    from spotstack.components.agent_wheel import wheel_bytes

    assert wheel_bytes()[0] == ours.path.read_bytes()


@pytest.mark.slow
def test_every_clouds_boot_document_fits_its_user_data_limit() -> None:
    from spotstack.runtime.clouds import CLOUDS

    for cloud in ("aws", "gcp", "alicloud"):
        text = rendered_boot_document(cloud)
        # Room left for a larger fleet's settings (jobs, schedules, a registry login).
        assert len(text.encode()) < CLOUDS[cloud].user_data_limit * 0.7, (cloud, len(text))


def test_the_packer_template_runs_what_spotstack_bake_writes() -> None:
    """No Packer here: the template is checked for the two things spotstack relies on, the folder it uploads to
    (where bake.sh expects the wheel) and the script it runs as root."""
    from spotstack.cli.main import BAKE_DIR
    from tests.conftest import ROOT

    hcl = (ROOT / "examples/bake/node.pkr.hcl").read_text()
    assert f'destination = "{BAKE_DIR}"' in hcl and f'inline = ["mkdir -p {BAKE_DIR}"]' in hcl
    assert 'script          = "${var.bake_dir}/bake.sh"' in hcl and "sudo sh -c" in hcl


def test_a_boot_document_over_the_clouds_limit_is_refused() -> None:
    from spotstack.components.node import cloud_init
    from spotstack.runtime.config import AgentConfig

    fleet = _aws_fleet()
    with pytest.raises(ValueError, match=r"fleet llm: the node's boot document is \d+ bytes; aws takes at most 16384"):
        cloud_init(AgentConfig(cloud="aws"), fleet, "img:1", ["echo " + "x" * 20_000])
