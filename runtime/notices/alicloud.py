"""Alibaba Cloud notices: `instance/spot/termination-time` (404 until the 5-minute warning), and Auto Scaling
scale-in, which ECS metadata does not show: the node asks ESS for its own lifecycle state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from spotstack.runtime.clouds import ALICLOUD
from spotstack.runtime.notices.base import WallClock, wall_clock
from spotstack.runtime.notices.clock import parse_iso_utc
from spotstack.runtime.notices.event import InterruptionEvent, Kind, event_id
from spotstack.runtime.notices.metadata import TokenMetadataClient

TERMINATION_TIME = "/latest/meta-data/instance/spot/termination-time"
INSTANCE_ID = "/latest/meta-data/instance-id"
NOTICE_S = ALICLOUD.notice_s


class SpotTerminationMonitor:
    name = "alicloud-spot-termination-time"
    long_poll = False

    def __init__(self, client: TokenMetadataClient, clock: WallClock = wall_clock) -> None:
        self._client, self._clock = client, clock

    async def poll(self) -> InterruptionEvent | None:
        body = await self._client.get(TERMINATION_TIME)
        if body is None or not body.strip():
            return None
        deadline = parse_iso_utc(body)
        return InterruptionEvent(
            Kind.SPOT_INTERRUPTION,
            "alicloud",
            deadline,
            event_id("alicloud", Kind.SPOT_INTERRUPTION, body),
            f"spot instance reclaimed at {body.strip()}",
            self._clock(),
        )


Describe = Callable[[str], Any]
"""Instance id -> the ESS `DescribeScalingInstances` answer (a signed call with the node's RAM role)."""

# ESS holds an instance in Removing:Wait while a SCALE_IN lifecycle hook waits (until the heartbeat
# timeout or CompleteLifecycleAction); Removing once nothing holds it any more.
REMOVING = frozenset({"Removing:Wait", "Removing"})


def ess_describe(region: str, metadata_url: str, endpoint: str | None = None) -> Describe:
    from spotstack.runtime import secrets

    base = endpoint or f"https://ess.{region}.aliyuncs.com"

    def describe(instance_id: str) -> Any:
        params = {"InstanceIds.1": instance_id}
        return secrets.alicloud_rpc(base, "DescribeScalingInstances", "2014-08-28", params, region, metadata_url)

    return describe


class ScaleInMonitor:
    """The scaling group is removing this instance: its SCALE_IN hook holds it for `window_s` while we drain.

    ESS sends hook notifications only to MNS or a webhook, which a node cannot receive without more
    infrastructure, so the node reads its own state. The API is rate-limited: at most one call per `every_s`.
    """

    name = "alicloud-ess-scale-in"
    long_poll = False

    def __init__(
        self,
        client: TokenMetadataClient,
        describe: Describe,
        window_s: float,
        every_s: float = 10.0,
        clock: WallClock = wall_clock,
    ) -> None:
        self._client, self._describe, self._window, self._every, self._clock = (
            client,
            describe,
            window_s,
            every_s,
            clock,
        )
        self._instance: str | None = None
        self._next = 0.0

    async def poll(self) -> InterruptionEvent | None:
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self._every
        if self._instance is None:
            self._instance = ((await self._client.get(INSTANCE_ID)) or "").strip() or None
            if self._instance is None:
                return None
        answer = await asyncio.to_thread(self._describe, self._instance)
        found = (answer.get("ScalingInstances") or {}).get("ScalingInstance") or [] if isinstance(answer, dict) else []
        state = next((str(i.get("LifecycleState")) for i in found if i.get("InstanceId") == self._instance), None)
        if state not in REMOVING:
            return None
        now = self._clock()
        return InterruptionEvent(
            Kind.SCALE_IN,
            "alicloud",
            now + self._window,
            event_id("alicloud", Kind.SCALE_IN, f"{self._instance}|removing"),
            f"auto scaling is removing this instance ({state})",
            now,
        )
