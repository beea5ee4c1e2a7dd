"""A node boots from the document the plan renders and reaches READY, on each cloud (deployability).

For each dev stack in `stacks/`, the boot document is taken from the planned launch template (AWS), instance
template (GCP) or scaling configuration (Alibaba) exactly as the plan renders it, and run in a scratch root
(tests/boot/scratch.py, which lists what it substitutes and why). The node must reach READY: the cache token
fetched with the node's own identity, the model pulled from the cloud's object store into the model folder,
and `/ready` answering 200, though the node's permission to read the token arrives late (IAM propagation, or a
policy created after the group): the boot's retry loop must still get it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from spotstack.runtime.cache.manifest import build_manifest
from spotstack.runtime.net import free_port, serve
from tests.boot.clouds import CLOUDS, TOKEN, Alicloud, model_files, secret_name
from tests.boot.scratch import BootDoc, ScratchNode
from tests.conftest import ROOT
from tests.waits import wait_for, wait_until

STACKS = {"aws": "dev", "gcp": "dev-gcp", "alicloud": "dev-alicloud"}
BOOT_RESOURCES = {
    "aws": ("aws:ec2/launchTemplate:LaunchTemplate", "userData"),
    "gcp": ("gcp:compute/instanceTemplate:InstanceTemplate", "metadata"),
    "alicloud": ("alicloud:ess/scalingConfiguration:ScalingConfiguration", "userData"),
}
PERMISSION_DELAY_S = 5.0
"""The node's permission reaches the cloud this long after its first read of the token was refused
(`clouds.LatePermission`): however late a busy machine gets the node there, it is refused and must retry."""


SECOND_REGION = {
    "aws": ("dev-multiregion", "us-west-2"),
    "gcp": ("dev-gcp-multiregion", "us-east4"),
    "alicloud": ("dev-alicloud-multiregion", "ap-southeast-1"),
}
"""A fleet across regions: a node of its second region (its own region's secrets and peers, the home region's store)."""


def rendered_boot_document(cloud: str, stack: str | None = None, region: str | None = None) -> str:
    """The first node boot document in the stack's plan (of `region`'s, when given), decoded as the cloud hands it to
    cloud-init."""
    from spotstack.components import program
    from spotstack.components.plan.engine import run_offline
    from spotstack.components.plan.stackfile import load_stack

    sf = load_stack(ROOT, stack or STACKS[cloud])
    plan = run_offline(program.run, sf.config, project=sf.project, stack=sf.stack)
    typ, key = BOOT_RESOURCES[cloud]
    value: Any = next(
        r.inputs[key]
        for r in plan.resources
        # Alibaba's resources take their region from a provider: a region's part is named `<fleet>-<region>-...`.
        if r.type == typ and (region in (None, r.inputs.get("region")) or f"-{region}-" in r.name)
    )
    if cloud == "gcp":
        value = value["user-data"]  # GCE passes the `user-data` metadata key to cloud-init
    value = value.get("value", value) if isinstance(value, dict) else value
    text = str(value)
    return text if text.startswith("#cloud-config") else base64.b64decode(text).decode()


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    return {cloud: rendered_boot_document(cloud) for cloud in STACKS}


def make_model(root: Path) -> Path:
    """A small model: weights in two files (one in a folder) and a config."""
    d = root / "model-src"
    (d / "weights").mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 384}')
    (d / "weights" / "part-0.safetensors").write_bytes(os.urandom(3 << 20) + b"tail")
    (d / "tokenizer.json").write_bytes(os.urandom(200_000))
    return d


class StandInWorkload:
    """Where the model server container runs on a node: ready once the model's files are all in place."""

    def __init__(self, dest: Path, files: dict[str, bytes]) -> None:
        self.dest, self.sizes = dest, {k: len(v) for k, v in files.items()}

    async def ready(self, request: web.Request) -> web.Response:
        have = all((self.dest / k).is_file() and (self.dest / k).stat().st_size == n for k, n in self.sizes.items())
        return web.Response(status=200 if have else 503)

    async def start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/ready", self.ready)
        return await serve(app, "127.0.0.1", 0)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.asynccontextmanager
async def booted_node(
    cloud: str, delay: float, tmp_path: Path, agent_wheel: tuple[Path, Path], text: str, region: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    doc = BootDoc.parse(text)
    cfg_text = next(str(f["content"]) for f in doc.files if f["path"] == "/etc/spotstack/agent.json")
    import json

    cfg = json.loads(cfg_text)
    fetch = next(c[2] for c in doc.runcmd if "fetch-secret" in " ".join(c))
    src = make_model(tmp_path)
    files = model_files(src)
    assert region in (None, cfg["region"]), cfg["region"]  # the node is told its own region
    setup = CLOUDS[cloud](
        files, build_manifest(str(src)), cfg["cache"]["model_url"], secret_name(fetch), delay, region=region
    )
    root = tmp_path / "node"
    wheels, deps = agent_wheel
    node = ScratchNode(root, wheels, deps, {})
    dest = Path(node.path("/var/lib/spotstack/model"))
    runner, wport = await StandInWorkload(dest, files).start()
    try:
        env = await setup.start()
        rport = free_port()
        node.env = {
            **env,
            "SPOTSTACK_AGENT__READINESS__HOST": "127.0.0.1",
            "SPOTSTACK_AGENT__READINESS__PORT": str(rport),
            "SPOTSTACK_AGENT__READINESS__WORKLOAD_HEALTH_URL": f"http://127.0.0.1:{wport}/ready",
            "SPOTSTACK_AGENT__CACHE__PEER_PORT": str(free_port()),
            "SPOTSTACK_AGENT__CACHE__DEST": str(dest),
            "SPOTSTACK_AGENT__CACHE__STORE_DIR": node.path("/dev/shm/spotstack"),
        }
        started = time.time()
        await node.boot(text)
        yield {
            "node": node,
            "cloud": setup,
            "files": files,
            "dest": dest,
            "ready_url": f"http://127.0.0.1:{rport}/ready",
            "started": started,
        }
    finally:
        await node.stop()
        await setup.stop()
        await runner.cleanup()


async def reach_ready(b: dict[str, Any], timeout: float) -> float:
    node: ScratchNode = b["node"]
    try:
        await wait_for(lambda: asyncio.to_thread(ready, b["ready_url"]), timeout, "the node's /ready to answer 200")
    except AssertionError:
        name = b["cloud"].__class__.__name__
        fetch, agent = node.unit_log("cache-token.log")[-2000:], node.unit_log()[-3000:]
        raise AssertionError(f"{name} node not READY; token fetch log:\n{fetch}\nagent:\n{agent}") from None
    return time.time()


def check_node(b: dict[str, Any]) -> None:
    node: ScratchNode = b["node"]
    for rel, data in b["files"].items():
        got = (b["dest"] / rel).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), rel
    assert Path(node.path("/etc/spotstack/cache-token")).read_text().strip() == TOKEN
    assert oct(Path(node.path("/etc/spotstack/cache-token")).stat().st_mode & 0o777) == "0o600"
    assert "cache disabled" not in node.unit_log()
    if isinstance(b["cloud"], Alicloud):
        assert b["cloud"].oss.reads > 0  # the model came through OSS with the RAM role's signed requests
        # The agent watches ESS for its own scale-in: its first call may come after READY (busy run: it had not yet).
        wait_until(lambda: b["cloud"].ess.calls > 0, timeout=60, what="the agent's first ESS call", every=0.1)
        registry_login(node, "cr_temp_user", b["cloud"].acr.password)
    elif len(node.workload_pre) > 1:
        # AWS (ECR, the instance profile through moto) and GCP (Artifact Registry, the metadata token): the agent's
        # own login, no cloud CLI on the image.
        registry_login(node, "AWS" if "--cloud aws" in node.workload_pre[1] else "oauth2accesstoken", None)
    unit = node.workload_unit
    assert "/usr/bin/docker run" in unit and "--gpus all" in unit and "/var/lib/spotstack/model:/model:ro" in unit
    # The container starts only once the whole model is placed: the unit's first step waits for the agent's record
    # of it, which this READY node has written (run as systemd would, with the node's paths).
    import subprocess

    assert "spotstack-placed.json" in node.workload_pre[0]
    r = subprocess.run(["/bin/sh", "-c", node.workload_pre[0]], env=node.node_env(), timeout=30)
    assert r.returncode == 0


def registry_login(node: ScratchNode, user: str, password: str | None) -> None:
    """Run the workload unit's login as systemd would before starting the container (a stand-in docker CLI)."""
    import subprocess

    assert len(node.workload_pre) == 2  # the wait for the model, then the login
    bin_dir = node.root / "docker-bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$*" > {bin_dir}/args\ncat > {bin_dir}/stdin\n')
    (bin_dir / "docker").chmod(0o755)
    env = node.node_env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    r = subprocess.run(["/bin/sh", "-c", node.workload_pre[1]], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (bin_dir / "args").read_text().split()[:4] == ["login", "--username", user, "--password-stdin"]
    got = (bin_dir / "stdin").read_text()
    assert got == password if password is not None else len(got) > 8


@pytest.mark.slow
async def test_a_node_boots_to_ready_on_each_cloud_though_its_permission_arrives_late(
    tmp_path: Path, agent_wheel: tuple[Path, Path], documents: dict[str, str]
) -> None:
    """All three clouds at once; each refuses its node's first reads of the token, then lets them through. A node
    that reads it at once takes the same path less the refusals, so this is the boot test of each cloud too (one
    boot per cloud, not two: each boot installs the agent and pulls the model)."""

    async def one(cloud: str) -> None:
        async with booted_node(cloud, PERMISSION_DELAY_S, tmp_path / cloud, agent_wheel, documents[cloud]) as b:
            at = await reach_ready(b, PERMISSION_DELAY_S + 300)
            assert at >= b["cloud"].permission.allowed_from, cloud  # not ready before it could read the token
            assert b["cloud"].denied() > 0, cloud  # it did try, and was refused, before that
            await asyncio.to_thread(check_node, b)  # its login's servers run on this loop

    await asyncio.gather(*(one(c) for c in STACKS))


@pytest.mark.slow
@pytest.mark.parametrize("cloud", list(SECOND_REGION))
async def test_a_node_in_the_second_region_boots_to_ready(
    cloud: str, tmp_path: Path, agent_wheel: tuple[Path, Path]
) -> None:
    """A fleet across regions: the second region's boot document, as planned. The node reads its cache token from
    its own region's secret store (AWS: the home region's SSM holds a different token under the same name), pulls
    the agent's wheel and the model from the home region's bucket, lists peers in its own region, and is READY."""
    stack, region = SECOND_REGION[cloud]
    text = await asyncio.to_thread(rendered_boot_document, cloud, stack, region)
    async with booted_node(cloud, 0.0, tmp_path, agent_wheel, text, region) as b:
        await reach_ready(b, 300)
        await asyncio.to_thread(check_node, b)
