"""GCP notices: `instance/preempted` and `instance/maintenance-event`, long-polled with ETags."""

from __future__ import annotations

from spotstack.runtime.clouds import GCP
from spotstack.runtime.notices.base import WallClock, wall_clock
from spotstack.runtime.notices.clock import BadNotice
from spotstack.runtime.notices.event import InterruptionEvent, Kind, event_id
from spotstack.runtime.notices.metadata import GcpMetadataClient

PREEMPTED = "/instance/preempted"
MAINTENANCE = "/instance/maintenance-event"
NOTICE_S = GCP.notice_s  # spot / preemptible: ACPI soft-off follows 30 s after the notice
MAINTENANCE_NOTICE_S = 60.0  # terminate-on-host-maintenance gives 60 s


class _LongPoll:
    """First read the current value, then block until it changes (wait_for_change + last_etag)."""

    long_poll = True

    def __init__(self, client: GcpMetadataClient, path: str, wait_timeout_s: int) -> None:
        self._client, self._path, self._wait = client, path, wait_timeout_s
        self._etag: str | None = None

    async def _next_value(self) -> str | None:
        body, etag = await self._client.get(
            self._path, wait_for_change=self._etag is not None, last_etag=self._etag, wait_timeout_s=self._wait
        )
        self._etag = etag
        return None if body is None else body.strip()


class PreemptedMonitor(_LongPoll):
    name = "gcp-preempted"

    def __init__(self, client: GcpMetadataClient, wait_timeout_s: int = 60, clock: WallClock = wall_clock) -> None:
        super().__init__(client, PREEMPTED, wait_timeout_s)
        self._clock = clock

    async def poll(self) -> InterruptionEvent | None:
        value = await self._next_value()
        if value is None or value == "FALSE":
            return None
        if value != "TRUE":
            raise BadNotice(f"{PREEMPTED}: expected TRUE or FALSE, got {value[:40]!r}")
        now = self._clock()
        return InterruptionEvent(
            Kind.SPOT_INTERRUPTION,
            "gcp",
            now + NOTICE_S,
            event_id("gcp", Kind.SPOT_INTERRUPTION, "preempted"),
            "instance preempted",
            now,
        )


class MaintenanceMonitor(_LongPoll):
    name = "gcp-maintenance-event"

    def __init__(self, client: GcpMetadataClient, wait_timeout_s: int = 60, clock: WallClock = wall_clock) -> None:
        super().__init__(client, MAINTENANCE, wait_timeout_s)
        self._clock = clock

    async def poll(self) -> InterruptionEvent | None:
        value = await self._next_value()
        # NONE, or MIGRATE_ON_HOST_MAINTENANCE: live migration keeps the node serving.
        if value is None or value != "TERMINATE_ON_HOST_MAINTENANCE":
            return None
        now = self._clock()
        return InterruptionEvent(
            Kind.MAINTENANCE,
            "gcp",
            now + MAINTENANCE_NOTICE_S,
            event_id("gcp", Kind.MAINTENANCE, value),
            "terminate on host maintenance",
            now,
        )
