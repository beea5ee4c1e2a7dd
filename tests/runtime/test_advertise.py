"""Cloud nodes join the swarm: `advertise: auto` is the node's private address from its cloud's metadata server
(as discovery lists peers) and the peer port; the components set it wherever discovery is the cloud's."""

from __future__ import annotations

import json

import aiohttp
import pytest
import yaml

from spotstack.runtime.agent.wiring import Identity
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.emulators.server import EmulatorServer

EMULATORS: dict[str, type[EmulatorServer]] = {
    "aws": AwsImdsEmulator,
    "gcp": GcpMetadataEmulator,
    "alicloud": AlicloudMetadataEmulator,
}


@pytest.mark.parametrize("cloud", sorted(EMULATORS))
async def test_private_address_from_each_clouds_metadata(cloud: str) -> None:
    async with EMULATORS[cloud]() as emu, aiohttp.ClientSession() as session:
        cfg = AgentConfig(cloud=cloud, metadata={"base_url": emu.url})  # type: ignore[arg-type]
        assert await Identity(cfg, session).private_ip() == "127.0.0.1"


async def test_no_metadata_server_means_no_swarm_not_a_hang() -> None:
    async with aiohttp.ClientSession() as session:
        cfg = AgentConfig(cloud="aws", metadata={"base_url": "http://127.0.0.1:9", "timeout_s": 0.5})  # type: ignore[arg-type]
        assert await Identity(cfg, session).private_ip(attempts=2) is None


@pytest.mark.parametrize("cloud", ["aws", "gcp", "alicloud"])
def test_cloud_nodes_advertise_themselves(cloud: str) -> None:
    from spotstack.components import program
    from spotstack.components.plan.engine import run_offline
    from tests.components.test_gcp_alicloud import as_cloud
    from tests.conftest import base_fleet, region_config

    raw = base_fleet() if cloud == "aws" else as_cloud(cloud)
    run = run_offline(program.run, {"spotstack:fleets": [raw], **region_config(raw)}, stack="t")
    docs = {
        "aws": lambda: next(r for r in run.find("aws:ec2/launchTemplate:LaunchTemplate")).inputs["userData"],
        "gcp": lambda: next(r for r in run.find("gcp:compute/instanceTemplate:InstanceTemplate")).inputs["metadata"][
            "user-data"
        ],
        "alicloud": lambda: next(r for r in run.find("alicloud:ess/scalingConfiguration:ScalingConfiguration")).inputs[
            "userData"
        ],
    }
    text = docs[cloud]()
    if cloud == "aws" or cloud == "alicloud":
        import base64

        text = base64.b64decode(text).decode()
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    cache = json.loads(files["/etc/spotstack/agent.json"])["cache"]
    assert cache["discovery"] == cloud and cache["advertise"] == "auto"
