"""Alibaba Cloud notice: `instance/spot/termination-time` (404 until the 5-minute warning)."""

from __future__ import annotations

from spotstack.runtime.notices.base import WallClock, wall_clock
from spotstack.runtime.notices.clock import parse_iso_utc
from spotstack.runtime.notices.event import InterruptionEvent, Kind, event_id
from spotstack.runtime.notices.metadata import TokenMetadataClient

TERMINATION_TIME = "/latest/meta-data/instance/spot/termination-time"
INSTANCE_ID = "/latest/meta-data/instance-id"
NOTICE_S = 300.0


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
