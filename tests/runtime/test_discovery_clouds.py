"""Peer discovery on GCP and Alibaba Cloud with the node's own identity, against their API shapes: the metadata
servers hand out the token / STS credentials, the loopback Compute and ECS APIs check them and answer as
documented (tests/clouds)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from spotstack.runtime.cache.discovery import discover, from_alicloud, from_gcp
from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.secrets import SecretError
from tests.clouds.alicloud_fleet import AlicloudFleetFake, Threaded
from tests.clouds.gcp_compute import ComputeFake


async def test_gcp_lists_the_fleets_running_vms_by_internal_ip_without_itself() -> None:
    # A fleet label used in two regions of one project: the other region's VMs are never peers.
    zones = ["us-central1-a", "us-central1-b", "europe-west4-a"]
    api = ComputeFake("acme-ml", "us-central1", zones, "llm-backend")
    api.add_group("llm-spot-mig", ["g2-standard-4"], spot=True, target=6)
    vms = sorted(api.migs["llm-spot-mig"].vms.values(), key=lambda v: v.name)
    me = next(v for v in vms if v.zone == "us-central1-b")
    meta = GcpMetadataEmulator(name=me.name, project_id="acme-ml", zone="us-central1-b")
    await meta.start()
    try:
        api.token = meta.access_token  # the Compute API wants the node's own token
        found: dict[str, str] = {}
        peers = await asyncio.to_thread(from_gcp, "llm", 8470, metadata_url=meta.url, api_url=api.url, zones=found)
        same_region = [v for v in vms if v is not me and v.zone.startswith("us-central1-")]
        assert sorted(peers) == sorted(f"{v.ip}:8470" for v in same_region)  # this VM and europe left out
        assert found == {"": "us-central1-b", **{f"{v.ip}:8470": v.zone for v in same_region}}
        assert await asyncio.to_thread(from_gcp, "other-fleet", 8470, metadata_url=meta.url, api_url=api.url) == []
        same = await asyncio.to_thread(
            discover, "gcp", peers=[], target="llm", port=8470, metadata_url=meta.url, endpoint=api.url
        )
        assert sorted(same) == sorted(peers)
        api.token = "another-token"  # a token the API does not accept: an error, never an empty fleet
        try:
            await asyncio.to_thread(from_gcp, "llm", 8470, metadata_url=meta.url, api_url=api.url)
        except SecretError as exc:
            assert "401" in str(exc)
        else:
            raise AssertionError("a refused listing must raise")
    finally:
        await meta.stop()
        api.stop()


async def test_alicloud_lists_the_fleets_running_instances_by_private_ip_without_itself() -> None:
    meta = AlicloudMetadataEmulator(region="us-west-1")
    await meta.start()
    creds = {k: meta.credentials[k] for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken")}
    fake = AlicloudFleetFake(creds, "us-west-1", "sgp-llm", "lsn-llm")
    fake.add_group("asg-main", ["ecs.gn7i-c8g1.2xlarge"], spot=True, desired=3)
    servers = Threaded()
    try:
        app = web.Application()
        app.router.add_get("/", fake.rpc)
        url = servers.serve(app)
        ids = sorted(fake.groups["asg-main"].members)
        me = ids[0]
        peers = await asyncio.to_thread(
            from_alicloud, "llm", 8470, "us-west-1", exclude_instance=me, metadata_url=meta.url, endpoint=url
        )
        assert sorted(peers) == sorted(f"172.16.0.{int(i[2:], 16)}:8470" for i in ids[1:])
        assert "ecs:DescribeInstances" in {f"ecs:{a}" for v, a in fake.versioned_calls if v == "2014-05-26"}
        assert (
            await asyncio.to_thread(
                from_alicloud, "other-fleet", 8470, "us-west-1", metadata_url=meta.url, endpoint=url
            )
            == []
        )
        same = await asyncio.to_thread(
            discover,
            "alicloud",
            peers=[],
            target="llm",
            port=8470,
            region="us-west-1",
            instance_id=me,
            metadata_url=meta.url,
            endpoint=url,
        )
        assert sorted(same) == sorted(peers)
    finally:
        servers.stop()
        await meta.stop()
