"""AWS notices through IMDSv2: spot instance-action, rebalance, ASG target lifecycle state, scheduled events."""

from __future__ import annotations

import json
from typing import Any

from spotstack.runtime.clouds import AWS
from spotstack.runtime.notices.base import WallClock, wall_clock
from spotstack.runtime.notices.clock import BadNotice, parse_http_date, parse_iso_utc
from spotstack.runtime.notices.event import InterruptionEvent, Kind, event_id
from spotstack.runtime.notices.metadata import TokenMetadataClient

SPOT_ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
LIFECYCLE_STATE = "/latest/meta-data/autoscaling/target-lifecycle-state"
SCHEDULED = "/latest/meta-data/events/maintenance/scheduled"
INSTANCE_ID = "/latest/meta-data/instance-id"
GROUP_TAG = "/latest/meta-data/tags/instance/aws:autoscaling:groupName"
NOTICE_S = AWS.notice_s

# Scheduled event codes after which this instance stops serving.
STOPPING_CODES = {"instance-stop", "instance-retirement", "instance-reboot", "system-reboot", "system-maintenance"}


def _json(body: str, path: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise BadNotice(f"{path}: not JSON: {body[:60]!r}") from None


class SpotInterruptionMonitor:
    name = "aws-spot-instance-action"
    long_poll = False

    def __init__(self, imds: TokenMetadataClient, clock: WallClock = wall_clock) -> None:
        self._imds, self._clock = imds, clock

    async def poll(self) -> InterruptionEvent | None:
        body = await self._imds.get(SPOT_ACTION)
        if body is None:
            return None
        doc = _json(body, SPOT_ACTION)
        if not isinstance(doc, dict) or "time" not in doc or "action" not in doc:
            raise BadNotice(f"{SPOT_ACTION}: expected {{action, time}}, got {body[:80]!r}")
        deadline = parse_iso_utc(str(doc["time"]))
        return InterruptionEvent(
            Kind.SPOT_INTERRUPTION,
            "aws",
            deadline,
            event_id("aws", Kind.SPOT_INTERRUPTION, body),
            f"spot {doc['action']} at {doc['time']}",
            self._clock(),
        )


class RebalanceMonitor:
    name = "aws-rebalance-recommendation"
    long_poll = False

    def __init__(self, imds: TokenMetadataClient, clock: WallClock = wall_clock) -> None:
        self._imds, self._clock = imds, clock

    async def poll(self) -> InterruptionEvent | None:
        body = await self._imds.get(REBALANCE)
        if body is None:
            return None
        doc = _json(body, REBALANCE)
        if not isinstance(doc, dict) or "noticeTime" not in doc:
            raise BadNotice(f"{REBALANCE}: expected {{noticeTime}}, got {body[:80]!r}")
        # No deadline is promised; an interruption notice (2 minutes) may follow at any time.
        deadline = parse_iso_utc(str(doc["noticeTime"])) + NOTICE_S
        return InterruptionEvent(
            Kind.REBALANCE,
            "aws",
            deadline,
            event_id("aws", Kind.REBALANCE, body),
            f"rebalance recommended at {doc['noticeTime']}",
            self._clock(),
        )


class LifecycleStateMonitor:
    """The ASG is terminating this instance (scale-in, rebalance, health): its hook waits for us."""

    name = "aws-target-lifecycle-state"
    long_poll = False

    def __init__(self, imds: TokenMetadataClient, window_s: float, clock: WallClock = wall_clock) -> None:
        self._imds, self._window, self._clock = imds, window_s, clock

    async def poll(self) -> InterruptionEvent | None:
        body = await self._imds.get(LIFECYCLE_STATE)
        if body is None or body.strip() != "Terminated":
            return None
        now = self._clock()
        return InterruptionEvent(
            Kind.SCALE_IN,
            "aws",
            now + self._window,
            event_id("aws", Kind.SCALE_IN, "Terminated"),
            "auto scaling group is terminating this instance",
            now,
        )


class ScheduledEventsMonitor:
    name = "aws-scheduled-events"
    long_poll = False

    def __init__(self, imds: TokenMetadataClient, clock: WallClock = wall_clock) -> None:
        self._imds, self._clock = imds, clock

    async def poll(self) -> InterruptionEvent | None:
        body = await self._imds.get(SCHEDULED)
        if body is None or not body.strip():
            return None
        doc = _json(body, SCHEDULED)
        if not isinstance(doc, list):
            raise BadNotice(f"{SCHEDULED}: expected a list, got {body[:80]!r}")
        soonest: InterruptionEvent | None = None
        for ev in doc:
            if not isinstance(ev, dict) or ev.get("Code") not in STOPPING_CODES:
                continue
            if str(ev.get("State", "active")) not in ("active", "scheduled"):
                continue  # canceled or completed
            deadline = parse_http_date(str(ev.get("NotBefore", "")))
            cand = InterruptionEvent(
                Kind.MAINTENANCE,
                "aws",
                deadline,
                event_id("aws", Kind.MAINTENANCE, str(ev.get("EventId", ev))),
                f"{ev.get('Code')}: {ev.get('Description', '')}".strip(),
                self._clock(),
            )
            if soonest is None or cand.deadline < soonest.deadline:
                soonest = cand
        return soonest
