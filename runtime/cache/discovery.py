"""Finding the fleet's peers: a static list, DNS, a file (local fleets), or the cloud's API (AWS).

GCP (managed instance group listing) and Alibaba (scaling group listing) need their SDKs or
signed REST calls and are not here yet; on those clouds use DNS or a static list.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FLEET_TAG = "spotstack:fleet"


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
) -> list[str]:
    """Running instances tagged spotstack:fleet=<fleet>, by private IP (the node role may DescribeInstances)."""
    if client is None:
        import boto3

        client = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url)
    out: list[str] = []
    pages = client.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{FLEET_TAG}", "Values": [fleet]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    for page in pages:
        for res in page["Reservations"]:
            for inst in res["Instances"]:
                if inst["InstanceId"] != exclude_instance and inst.get("PrivateIpAddress"):
                    out.append(f"{inst['PrivateIpAddress']}:{port}")
    return _unique(out, set())


def discover(
    kind: str,
    *,
    peers: list[str],
    target: str | None,
    port: int,
    region: str | None = None,
    exclude: set[str] | None = None,
    instance_id: str | None = None,
) -> list[str]:
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
        return [p for p in from_aws(target, port, region, instance_id) if p not in ex]
    raise ValueError(f"peer discovery '{kind}' is not supported yet; use static, dns, file or aws")
