"""A gateway instance boots from the document the plan renders (stacks/Pulumi.dev-llm.yaml, AWS) in a scratch
root, as nodes do in test_boot_path.py: its API keys fetched from SSM with the instance profile, the package
installed from the fleet's wheel in S3, and `spotstack gateway run` started from its unit — then it finds the
fleet's nodes in EC2 by tag, and asks for a key. moto stands in for SSM, S3 and EC2, an IMDSv2 emulator for the
instance's identity. Substituted besides what tests/boot/scratch.py lists: the gateway's port and host (a free
port on loopback instead of 8000 on every interface)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from spotstack.components.plan import plan_stack
from spotstack.runtime.cache.manifest import build_manifest
from spotstack.runtime.net import free_port
from tests.boot.clouds import TOKEN, Aws, secret_name
from tests.boot.scratch import BootDoc, ScratchNode
from tests.conftest import ROOT
from tests.waits import wait_for


def gateway_document() -> str:
    run = plan_stack(ROOT, "dev-llm").run
    lt = run.find("aws:ec2/launchTemplate:LaunchTemplate", "llm-gateway-lt")[0].inputs
    return base64.b64decode(lt["userData"]).decode()


def status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except OSError:
        return None


def models(port: int, key: str | None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


async def test_a_gateway_boots_finds_the_fleets_nodes_and_requires_its_key(
    tmp_path: Path, agent_wheel: tuple[Path, Path]
) -> None:
    text = gateway_document()
    port = free_port()
    text = text.replace("--host 0.0.0.0 --port 8000", f"--host 127.0.0.1 --port {port}")
    assert f"--port {port}" in text
    doc = BootDoc.parse(text)
    fetch = next(c[2] for c in doc.runcmd if "fetch-secret" in " ".join(c))
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    cloud = Aws({"config.json": b"{}"}, build_manifest(str(src)), "s3://acme-models-dev/llama/", secret_name(fetch), 0)
    wheels, deps = agent_wheel
    node = ScratchNode(tmp_path / "gateway", wheels, deps, {})
    try:
        node.env = await cloud.start()
        import boto3

        ec2 = boto3.client(
            "ec2", region_name="us-east-1", endpoint_url=cloud.url, aws_access_key_id="t", aws_secret_access_key="t"
        )
        ami = ec2.describe_images()["Images"][0]["ImageId"]
        ips = []
        for key, value in (("spotstack:fleet", "llm"), ("spotstack:fleet", "llm"), ("spotstack:gateway", "llm")):
            tags = [{"ResourceType": "instance", "Tags": [{"Key": key, "Value": value}]}]
            inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=tags)["Instances"][0]
            ips.append(inst["PrivateIpAddress"])
        await node.boot(text)
        keys = Path(node.path("/etc/spotstack/api-keys"))
        # The boot's fetch loop writes the keys once the package is installed; until then the gateway refuses all.
        await wait_for(lambda: asyncio.to_thread(keys.exists), 120, "the API keys fetched from SSM")
        assert (await asyncio.to_thread(keys.read_text)).strip() == TOKEN

        async def listed() -> bool:
            s = await asyncio.to_thread(status, port)
            return s is not None and len(s["replicas"]) == 2

        try:
            await wait_for(listed, 120, "the gateway to list the fleet's nodes")
        except AssertionError:
            raise AssertionError(node.unit_log("spotstack-gateway.service")[-3000:]) from None
        s = await asyncio.to_thread(status, port)
        assert s is not None
        assert sorted(r["url"] for r in s["replicas"]) == sorted(f"http://{ip}:8080" for ip in ips[:2])
        assert await asyncio.to_thread(models, port, None) == 401
        assert await asyncio.to_thread(models, port, TOKEN) == 200
    finally:
        await node.stop()
        await cloud.stop()
