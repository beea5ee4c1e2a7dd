"""Checks of single spec fields too long to sit beside their field in spec.py: cron expressions, time zones, ports
and CIDR blocks. Each returns the value or raises ValueError with a message that names the value."""

from __future__ import annotations

from typing import Any

from spotstack.runtime.config import AGENT_PORT


def check_cron(expr: str) -> str:
    """Five-field Unix cron (minute hour day-of-month month day-of-week), each field in its range."""
    names = {
        3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    }
    bounds = [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)]
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    for k, (field, (what, lo, hi)) in enumerate(zip(fields, bounds, strict=True)):

        def value(tok: str, k: int = k, what: str = what, lo: int = lo, hi: int = hi) -> int:
            low = tok.lower()
            if k in names and low in names[k]:
                return names[k].index(low) + (1 if k == 3 else 0)
            if not tok.isdigit():
                raise ValueError(f"{expr!r}: {what} {tok!r} is not a number")
            n = int(tok)
            if not lo <= n <= hi:
                raise ValueError(f"{expr!r}: {what} {n} is outside {lo}-{hi}")
            return n

        for part in field.split(","):
            rng, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{expr!r}: {what} step {step!r} must be a positive number")
            if rng in ("*", "?"):
                continue
            a, dash, b = rng.partition("-")
            if dash and value(a) > value(b):
                raise ValueError(f"{expr!r}: {what} range {rng!r} runs backwards")
            value(a)
    return expr


def check_timezone(tz: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{tz!r} is not an IANA time zone (e.g. UTC, America/New_York)") from None
    return tz


def not_agent_port(port: int) -> int:
    if port == AGENT_PORT:
        raise ValueError(f"{port} is the node agent's port; pick another")
    return port


def check_cidr(cidr: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(cidr, strict=True))
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not a CIDR block ({exc})") from None


def fill_home_region(data: Any) -> Any:
    """A fleet's raw spec with `regions`: `region`, `zones` and `network` filled in from the home region (`home`,
    default the first), so everything that serves one region reads the home region. `home` naming no region is read
    as the first (region_checks.py reports it with its path). The same values given again (a spec dumped and read
    back) are fine; different ones are two answers."""
    if not isinstance(data, dict) or not data.get("regions") or not isinstance(data["regions"], list):
        return data
    entries = [r for r in data["regions"] if isinstance(r, dict)]
    if not entries:
        return data
    home = data.get("home", entries[0].get("region"))
    at_home = next((r for r in entries if r.get("region") == home), entries[0])
    filled = {"region": at_home.get("region"), "zones": at_home.get("zones"), "network": at_home.get("network")}
    if any(filled[k] != data[k] for k in filled if data.get(k) is not None):
        raise ValueError(
            "give region and zones (one region) or regions (several, each with its zones and network), not both"
        )
    return {**data, **{k: v for k, v in filled.items() if v is not None}, "home": home}
