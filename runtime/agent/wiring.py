"""What an AgentConfig turns into on each cloud: the notice monitors, and the node's identity."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from spotstack.runtime.backoff import Backoff
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.drain.targets import Lifecycle, Rotation
from spotstack.runtime.jobs.protection import Protection
from spotstack.runtime.notices.base import Monitor
from spotstack.runtime.notices.metadata import GcpMetadataClient, TokenMetadataClient, alicloud_metadata, aws_imds

log = logging.getLogger("spotstack.agent")


@dataclass
class Injected:
    """Adaptors given to the agent instead of built from its configuration: the local fleet's nodes (no Auto Scaling
    group to tell), tests and benchmarks (clients pointed at moto, monitors of their own)."""

    monitors: list[Monitor] | None = None
    rotations: list[Rotation] | None = None
    lifecycle: Lifecycle | None = None
    no_lifecycle: bool = False
    """No lifecycle action to complete, whatever the configuration says (the local supervisor ends the process)."""
    protection: Protection | None = None
    autoscaling_client: Any = None
    """A boto3 Auto Scaling client for the lifecycle action and scale-in protection."""
    sqs_client: Any = None


def build_monitors(cfg: AgentConfig, session: aiohttp.ClientSession, clock: Callable[[], float]) -> list[Monitor]:
    md = cfg.metadata
    if cfg.cloud == "aws":
        from spotstack.runtime.notices import aws

        imds = aws_imds(session, cfg.metadata_url, timeout_s=md.timeout_s, ttl_s=md.token_ttl_s, use_token=md.use_token)
        monitors: list[Monitor] = [
            aws.SpotInterruptionMonitor(imds, clock),
            aws.RebalanceMonitor(imds, clock),
            aws.ScheduledEventsMonitor(imds, clock),
        ]
        if cfg.lifecycle.enabled:
            window = cfg.drain.timeout_s + cfg.drain.safety_margin_s + 30
            monitors.append(aws.LifecycleStateMonitor(imds, window, clock))
        return monitors
    if cfg.cloud == "gcp":
        from spotstack.runtime.notices import gcp

        client = GcpMetadataClient(session, cfg.metadata_url, timeout_s=md.timeout_s)
        return [gcp.PreemptedMonitor(client, clock=clock), gcp.MaintenanceMonitor(client, clock=clock)]
    from spotstack.runtime.notices import alicloud

    ali = alicloud_metadata(
        session, cfg.metadata_url, timeout_s=md.timeout_s, ttl_s=md.token_ttl_s, use_token=md.use_token
    )
    monitors = [alicloud.SpotTerminationMonitor(ali, clock)]
    lc = cfg.lifecycle
    if lc.enabled:
        # The hook's heartbeat is the drain plus 30 s (components/alicloud/mapping.py).
        window = cfg.drain.timeout_s + cfg.drain.safety_margin_s + 30
        region = lc.region or cfg.region
        assert region, "an Alibaba scale-in hook needs the agent's region"
        describe = alicloud.ess_describe(region, cfg.metadata_url, lc.endpoint_url)
        monitors.append(alicloud.ScaleInMonitor(ali, describe, window, clock=clock))
    return monitors


PRIVATE_IP_PATH = {
    "aws": "/latest/meta-data/local-ipv4",
    "gcp": "/instance/network-interfaces/0/ip",
    "alicloud": "/latest/meta-data/private-ipv4",
}


class Identity:
    """Who this node is (instance id, ASG name), read from metadata once and kept."""

    def __init__(self, cfg: AgentConfig, session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        md = cfg.metadata
        self._client: TokenMetadataClient | None = None
        if cfg.cloud == "aws":
            self._client = aws_imds(
                session, cfg.metadata_url, timeout_s=md.timeout_s, ttl_s=md.token_ttl_s, use_token=md.use_token
            )
        elif cfg.cloud == "alicloud":
            self._client = alicloud_metadata(
                session, cfg.metadata_url, timeout_s=md.timeout_s, ttl_s=md.token_ttl_s, use_token=md.use_token
            )
        self._gcp = GcpMetadataClient(session, cfg.metadata_url, timeout_s=md.timeout_s) if cfg.cloud == "gcp" else None
        self.instance_id: str | None = None
        self.group_name: str | None = cfg.lifecycle.group_name

    async def resolve(self) -> None:
        """Retry until the metadata server answers; the agent serves meanwhile."""
        backoff = Backoff(0.2, 5.0)
        while self._client is not None and (self.instance_id is None or self._needs_group()):
            try:
                if self.instance_id is None:
                    self.instance_id = (await self._client.get("/latest/meta-data/instance-id") or "").strip() or None
                if self._needs_group():
                    tag = "/latest/meta-data/tags/instance/aws:autoscaling:groupName"
                    self.group_name = (await self._client.get(tag) or "").strip() or None
            except Exception as exc:
                log.warning("identity: %s", exc)
            if self.instance_id is None or self._needs_group():
                await asyncio.sleep(backoff.next())

    async def private_ip(self, attempts: int = 5) -> str | None:
        """This node's private address, as peer discovery lists it (EC2 `local-ipv4`, GCP's first interface,
        ECS `private-ipv4`); None when the metadata server does not answer after `attempts` tries."""
        path = PRIVATE_IP_PATH.get(self.cfg.cloud)
        backoff = Backoff(0.2, 2.0)
        for _ in range(attempts if path else 0):
            try:
                if self._gcp is not None:
                    text, _etag = await self._gcp.get(path or "")
                elif self._client is not None:
                    text = await self._client.get(path or "")
                else:
                    return None
                ip = (text or "").strip()
                if ip:
                    return ip
            except Exception as exc:
                log.warning("private address: %s", exc)
            await asyncio.sleep(backoff.next())
        return None

    def _needs_group(self) -> bool:
        lc = self.cfg.lifecycle
        wants = lc.enabled or lc.launch_hook_name is not None or self.cfg.jobs.scale_in_protection
        return self.cfg.cloud == "aws" and wants and self.group_name is None
