"""Finding the fleet's peers: a static list, DNS, a file (local fleets), or the cloud's API with the node's own
identity: AWS (`DescribeInstances` by the fleet tag, boto3), GCP (the Compute API's aggregated instance list by
the fleet label, the metadata server's token) and Alibaba Cloud (ECS `DescribeInstances` by the fleet tag, signed
with the RAM role's STS credentials). The last two use the standard library only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spotstack.runtime.clouds import ALICLOUD, AWS, GCP


def _unique(addrs: Iterable[str], exclude: set[str]) -> list[str]:
    seen: list[str] = []
    for a in addrs:
        if a and a not in exclude and a not in seen:
            seen.append(a)
    return seen


def from_dns(name: str, port: int, exclude: set[str] | None = None) -> list[str]:
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return _unique((f"{info[4][0]}:{port}" for info in infos), exclude or set())


def from_file(path: str | Path, exclude: set[str] | None = None) -> list[str]:
    """One host:port per line; '#' starts a comment. Re-read on every call: the fleet changes."""
    lines = Path(path).read_text().splitlines()
    return _unique((ln.split("#", 1)[0].strip() for ln in lines), exclude or set())


def from_aws(
    fleet: str,
    port: int,
    region: str | None,
    exclude_instance: str | None = None,
    endpoint_url: str | None = None,
    client: Any = None,
    zones: dict[str, str] | None = None,
) -> list[str]:
    """Running instances tagged spotstack:fleet=<fleet>, by private IP (the node role may DescribeInstances).
    `zones`, when given, is filled with each peer's zone, and this node's under the key "" (locality)."""
    if client is None:
        import boto3

        client = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url)
    out: list[str] = []
    pages = client.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{AWS.fleet_key}", "Values": [fleet]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    for page in pages:
        for res in page["Reservations"]:
            for inst in res["Instances"]:
                zone = (inst.get("Placement") or {}).get("AvailabilityZone", "")
                if inst["InstanceId"] == exclude_instance:
                    _note(zones, "", zone)
                elif inst.get("PrivateIpAddress"):
                    out.append(f"{inst['PrivateIpAddress']}:{port}")
                    _note(zones, out[-1], zone)
    return _unique(out, set())


def _note(zones: dict[str, str] | None, peer: str, zone: str) -> None:
    if zones is not None and zone:
        zones[peer] = zone


GCP_API = "https://compute.googleapis.com"


def from_gcp(
    fleet: str,
    port: int,
    *,
    metadata_url: str | None = None,
    api_url: str | None = None,
    zones: dict[str, str] | None = None,
) -> list[str]:
    """Running VMs labelled spotstack-fleet=<fleet> in the node's project and region, by internal IP, this VM
    left out (the node's service account may list instances). The listing spans the project's regions: a VM
    in another region is never a peer (cross-region transfer is billed and slow)."""
    import urllib.parse

    from spotstack.runtime.secrets import GCP_METADATA, gcp_get, gcp_metadata

    md = metadata_url or GCP_METADATA
    project, me = gcp_metadata("project/project-id", md), gcp_metadata("instance/name", md)
    my_zone = gcp_metadata("instance/zone", md).rsplit("/", 1)[-1]
    region = my_zone.rsplit("-", 1)[0]
    _note(zones, "", my_zone)
    query = {"filter": f'(labels.{GCP.fleet_key} = "{fleet}") AND (status = RUNNING)', "maxResults": "500"}
    out: list[str] = []
    while True:
        url = f"{api_url or GCP_API}/compute/v1/projects/{project}/aggregated/instances?"
        doc = gcp_get(url + urllib.parse.urlencode(query), md)
        for scoped in (doc.get("items") or {}).values():
            for inst in scoped.get("instances", []):
                nics = inst.get("networkInterfaces") or [{}]
                zone = str(inst.get("zone", "")).rsplit("/", 1)[-1]
                if inst.get("name") != me and nics[0].get("networkIP") and zone.rsplit("-", 1)[0] == region:
                    out.append(f"{nics[0]['networkIP']}:{port}")
                    _note(zones, out[-1], zone)
        if not doc.get("nextPageToken"):
            return _unique(out, set())
        query["pageToken"] = doc["nextPageToken"]


def from_alicloud(
    fleet: str,
    port: int,
    region: str,
    *,
    exclude_instance: str | None = None,
    metadata_url: str | None = None,
    endpoint: str | None = None,
    zones: dict[str, str] | None = None,
) -> list[str]:
    """Running ECS instances tagged spotstack:fleet=<fleet>, by private IP (the node role may DescribeInstances)."""
    from spotstack.runtime.secrets import ALICLOUD_METADATA, alicloud_rpc

    base = endpoint or f"https://ecs.{region}.aliyuncs.com"
    out: list[str] = []
    page = 1
    while True:
        params = {
            "Tag.1.Key": ALICLOUD.fleet_key,
            "Tag.1.Value": fleet,
            "Status": "Running",
            "PageSize": "100",
            "PageNumber": str(page),
        }
        doc = alicloud_rpc(base, "DescribeInstances", "2014-05-26", params, region, metadata_url or ALICLOUD_METADATA)
        batch = (doc.get("Instances") or {}).get("Instance") or []
        for inst in batch:
            ips = ((inst.get("VpcAttributes") or {}).get("PrivateIpAddress") or {}).get("IpAddress") or []
            if inst.get("InstanceId") == exclude_instance:
                _note(zones, "", str(inst.get("ZoneId", "")))
            elif ips:
                out.append(f"{ips[0]}:{port}")
                _note(zones, out[-1], str(inst.get("ZoneId", "")))
        if len(batch) < 100:
            return _unique(out, set())
        page += 1


def discover(
    kind: str,
    *,
    peers: list[str],
    target: str | None,
    port: int,
    region: str | None = None,
    exclude: set[str] | None = None,
    instance_id: str | None = None,
    metadata_url: str | None = None,
    endpoint: str | None = None,
    zones: dict[str, str] | None = None,
) -> list[str]:
    """The peers by the configured kind; the cloud kinds also fill `zones` (peer -> zone, "" -> this node's)."""
    ex = exclude or set()
    if kind == "static":
        return _unique(peers, ex)
    if target is None:
        raise ValueError(f"peer discovery '{kind}' needs discovery_target")
    if kind == "dns":
        return from_dns(target, port, ex)
    if kind == "file":
        return from_file(target, ex)
    if kind == "aws":
        found = from_aws(target, port, region, instance_id, endpoint_url=endpoint, zones=zones)
        return [p for p in found if p not in ex]
    if kind == "gcp":
        found = from_gcp(target, port, metadata_url=metadata_url, api_url=endpoint, zones=zones)
        return [p for p in found if p not in ex]
    if kind == "alicloud":
        if region is None:
            raise ValueError("peer discovery 'alicloud' needs the agent's region")
        found = from_alicloud(
            target,
            port,
            region,
            exclude_instance=instance_id,
            metadata_url=metadata_url,
            endpoint=endpoint,
            zones=zones,
        )
        return [p for p in found if p not in ex]
    raise ValueError(f"peer discovery '{kind}' is not supported; use static, dns, file, aws, gcp or alicloud")
