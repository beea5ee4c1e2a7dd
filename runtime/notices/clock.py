"""Parse the notice time formats the clouds use. Pure."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


class BadNotice(ValueError):
    """The metadata server answered, but not in the documented format."""


def parse_iso_utc(text: str) -> float:
    """'2017-09-18T08:22:00Z' (AWS instance-action, rebalance; Alibaba termination-time) -> epoch."""
    s = text.strip()
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise BadNotice(f"not an ISO-8601 time: {s[:60]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_http_date(text: str) -> float:
    """'21 Jan 2019 09:00:43 GMT' (AWS scheduled events NotBefore) -> epoch."""
    s = text.strip()
    for candidate in (s, f"Mon, {s}"):
        try:
            return parsedate_to_datetime(candidate).timestamp()
        except (TypeError, ValueError, IndexError):
            continue
    raise BadNotice(f"not an HTTP date: {s[:60]!r}")
