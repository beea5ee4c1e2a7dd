"""Every per-cloud fact in one place: what a node, a component, the controller and the CLI need to know about AWS,
GCP and Alibaba Cloud (and the local fleet, which plays AWS on loopback). A module that needs one of these reads it
here; `tests/test_clouds.py` checks that every cloud has every field. Standard library only: the agent, the
controller's function packages and the components all import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

CloudName = Literal["aws", "gcp", "alicloud"]


@dataclass(frozen=True)
class CloudProfile:
    name: str
    title: str
    """How the docs and messages name it."""
    notice_s: float
    """Seconds between a spot notice and the reclaim: EC2's two-minute warning, GCE's 30 s ACPI soft-off,
    ECS's five minutes."""
    metadata_url: str
    """The instance metadata service (tests and local fleets point the agent at an emulator instead)."""
    scheme: str
    """The object store's URL scheme (the model, the agent's wheel, job results)."""
    user_data_limit: int
    """The most boot document the cloud takes, before base64: EC2's 16 KB, a GCE metadata value's 256 KB,
    ECS's 32 KB."""
    agent_extra: str
    """The package extra a node installs: the agent plus its cloud's fsspec backend and SDK."""
    fleet_key: str
    """The tag (AWS, Alibaba) or label (GCP: no colons allowed) every node of a fleet carries; discovery and the
    controller filter on it."""
    zone_form: str
    """A zone of `{region}` matches this regular expression once the region is put in."""
    disk_usd_per_gb_month: float
    """The boot disk as nodes declare it (gp3, pd-standard, ESSD PL1), US list prices 2026: what a stopped warm-pool
    instance costs."""
    max_request_s: int
    """The longest request the cloud's load balancer waits for: the AWS ALB idle timeout (1-4000 s), GCP's backend
    service timeout (to 2^31 s; the spec caps at a day), the Alibaba ALB listener's request timeout (0-600 s)."""
    queue_name_limit: int
    """A job queue's name: SQS 80 characters, a Pub/Sub topic 255, an MNS queue 120."""
    queue_service: str
    """The job queues' service."""

    def zone_in(self, zone: str, region: str) -> bool:
        return re.fullmatch(self.zone_form.format(region=re.escape(region)), zone) is not None

    def url(self, bucket: str, key: str = "") -> str:
        return f"{self.scheme}://{bucket}/{key}"


AWS = CloudProfile(
    name="aws",
    title="AWS",
    notice_s=120.0,
    metadata_url="http://169.254.169.254",
    scheme="s3",
    user_data_limit=16 * 1024,
    agent_extra="agent",
    fleet_key="spotstack:fleet",
    zone_form="{region}[a-z]",  # us-east-1 -> us-east-1a
    disk_usd_per_gb_month=0.08,
    max_request_s=4000,
    queue_name_limit=80,
    queue_service="SQS",
)
GCP = CloudProfile(
    name="gcp",
    title="GCP",
    notice_s=30.0,
    metadata_url="http://metadata.google.internal",
    scheme="gs",
    user_data_limit=256 * 1024,
    agent_extra="agent-gcp",
    fleet_key="spotstack-fleet",
    zone_form="{region}-[a-z]",  # us-central1 -> us-central1-a
    disk_usd_per_gb_month=0.04,
    max_request_s=86400,
    queue_name_limit=255,
    queue_service="Pub/Sub",
)
ALICLOUD = CloudProfile(
    name="alicloud",
    title="Alibaba Cloud",
    notice_s=300.0,
    metadata_url="http://100.100.100.200",
    scheme="oss",
    user_data_limit=32 * 1024,
    agent_extra="agent-alicloud",
    fleet_key="spotstack:fleet",
    zone_form="{region}-?[a-z]",  # us-west-1 -> us-west-1a; cn-hangzhou -> cn-hangzhou-h
    disk_usd_per_gb_month=0.14,
    max_request_s=600,
    queue_name_limit=120,
    queue_service="MNS",
)
LOCAL = CloudProfile(
    # The local fleet plays AWS on loopback (moto, the IMDSv2 emulator, HAProxy in the ALB's place): AWS's facts,
    # bar what loopback does not bill or bound.
    name="local",
    title="local",
    notice_s=AWS.notice_s,
    metadata_url=AWS.metadata_url,
    scheme=AWS.scheme,
    user_data_limit=AWS.user_data_limit,
    agent_extra=AWS.agent_extra,
    fleet_key=AWS.fleet_key,
    zone_form="{region}(-[a-z0-9]+)?",
    disk_usd_per_gb_month=0.0,
    max_request_s=86400,
    queue_name_limit=AWS.queue_name_limit,
    queue_service=AWS.queue_service,
)

CLOUDS: dict[str, CloudProfile] = {p.name: p for p in (AWS, GCP, ALICLOUD)}
"""The clouds a fleet deploys to."""
PROFILES: dict[str, CloudProfile] = {**CLOUDS, LOCAL.name: LOCAL}
"""Every `cloud:` a fleet spec may name."""


def profile(cloud: str) -> CloudProfile:
    try:
        return PROFILES[cloud]
    except KeyError:
        raise ValueError(f"unknown cloud {cloud!r}: one of {', '.join(PROFILES)}") from None


def by_scheme(scheme: str) -> CloudProfile:
    """The cloud whose object store a URL names (`s3://`, `gs://`, `oss://`)."""
    for p in CLOUDS.values():
        if p.scheme == scheme:
            return p
    raise ValueError(f"no cloud stores objects under {scheme}://")
