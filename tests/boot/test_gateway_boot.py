"""A gateway instance boots from the document the plan renders (stacks/Pulumi.dev-llm.yaml and its GCP and Alibaba
twins) in a scratch root, as nodes do in test_boot_path.py: its API keys fetched from the cloud's secret store with
the instance's identity, the package installed from the fleet's wheel in the object store, and `spotstack gateway
run` started from its unit — then it finds the fleet's nodes through the compute API by tag or label, and asks for a
key. moto (AWS) and tests/clouds' fakes (GCP Compute and Secret Manager, Alibaba ECS and OOS) stand in for the
clouds, each metadata emulator for the instance's identity. Substituted besides what tests/boot/scratch.py lists:
the gateway's port and host (a free port on loopback instead of 8000 on every interface)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from spotstack.components.plan import plan_stack
from spotstack.runtime.cache.manifest import build_manifest
from spotstack.runtime.net import free_port
from tests.boot.clouds import CLOUDS, TOKEN, Alicloud, Aws, Cloud, Gcp, secret_name
from tests.boot.scratch import BootDoc, ScratchNode
from tests.conftest import ROOT
from tests.waits import wait_for

STACKS = {"aws": "dev-llm", "gcp": "dev-gcp-llm", "alicloud": "dev-alicloud-llm"}
MODEL_URLS = {
    "aws": "s3://acme-models-dev/llama/",
    "gcp": "gs://acme-models-dev-gcp/llama/",
    "alicloud": "oss://acme-models-dev-ali/llama/",
}


def gateway_document(cloud: str) -> str:
    """The gateway's boot document as the cloud hands it to cloud-init."""
    run = plan_stack(ROOT, STACKS[cloud]).run
    if cloud == "aws":
        text = run.find("aws:ec2/launchTemplate:LaunchTemplate", "llm-gateway-lt")[0].inputs["userData"]
    elif cloud == "gcp":
        tpl = run.find("gcp:compute/instanceTemplate:InstanceTemplate", "llm-gateway-template")[0].inputs
        text = tpl["metadata"]["user-data"]  # GCE hands the `user-data` key to cloud-init as is
    else:
        cfg = run.find("alicloud:ess/scalingConfiguration:ScalingConfiguration", "llm-gateway-config")[0].inputs
        text = cfg["userData"]
    return text if text.startswith("#cloud-config") else base64.b64decode(text).decode()


def fleet_nodes(cloud: str, setup: Cloud, fleet: str) -> list[str]:
    """Two running nodes of the fleet (and, on AWS, a gateway that must not be listed); their private IPs."""
    if isinstance(setup, Aws):
        import boto3

        ec2 = boto3.client(
            "ec2", region_name="us-east-1", endpoint_url=setup.url, aws_access_key_id="t", aws_secret_access_key="t"
        )
        ami = ec2.describe_images()["Images"][0]["ImageId"]
        ips = []
        for key, value in (("spotstack:fleet", fleet), ("spotstack:fleet", fleet), ("spotstack:gateway", fleet)):
            tags = [{"ResourceType": "instance", "Tags": [{"Key": key, "Value": value}]}]
            inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=tags)["Instances"][0]
            ips.append(inst["PrivateIpAddress"])
        return ips[:2]
    if isinstance(setup, Gcp):
        setup.compute.label = fleet
        setup.compute.add_group("llm-spot", ["g2-standard-8"], True, 2)
        return [vm.ip for vm in setup.compute.migs["llm-spot"].vms.values()]
    assert isinstance(setup, Alicloud)
    setup.ecs.add_group("asg-llm-spot", ["ecs.gn7i-c8g1.2xlarge"], True, 2)
    return [f"172.16.0.{int(i[2:], 16)}" for i in setup.ecs.running("asg-llm-spot")]


def fleet_of(text: str) -> str:
    m = re.search(r"--fleet (\S+)", text)
    assert m, "no --fleet in the gateway's unit"
    return m.group(1)


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


@pytest.mark.slow
@pytest.mark.parametrize("cloud", list(STACKS))
async def test_a_gateway_boots_finds_the_fleets_nodes_and_requires_its_key(
    cloud: str, tmp_path: Path, agent_wheel: tuple[Path, Path]
) -> None:
    text = gateway_document(cloud)
    port = free_port()
    text = text.replace("--host 0.0.0.0 --port 8000", f"--host 127.0.0.1 --port {port}")
    assert f"--port {port}" in text
    doc = BootDoc.parse(text)
    fetch = next(c[2] for c in doc.runcmd if "fetch-secret" in " ".join(c))
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    setup = CLOUDS[cloud]({"config.json": b"{}"}, build_manifest(str(src)), MODEL_URLS[cloud], secret_name(fetch), 0)
    wheels, deps = agent_wheel
    node = ScratchNode(tmp_path / "gateway", wheels, deps, {})
    try:
        node.env = await setup.start()
        ips = await asyncio.to_thread(fleet_nodes, cloud, setup, fleet_of(text))
        await node.boot(text)
        keys = Path(node.path("/etc/spotstack/api-keys"))
        # The boot's fetch loop writes the keys once the package is installed; until then the gateway refuses all.
        await wait_for(lambda: asyncio.to_thread(keys.exists), 120, "the API keys fetched from the secret store")
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
        assert sorted(r["url"] for r in s["replicas"]) == sorted(f"http://{ip}:8080" for ip in ips)
        assert await asyncio.to_thread(models, port, None) == 401
        assert await asyncio.to_thread(models, port, TOKEN) == 200
    finally:
        await node.stop()
        await setup.stop()
