"""Checks for the command line's numbers, run while the line is parsed: a bad value is one usage error naming the
flag (exit 2) before anything starts, never a traceback or a fleet started for nothing.

Click's ranges let NaN through (every comparison with NaN is false) and take infinities where no upper bound is
set; these refuse both."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")


def _say(lo: float | None, hi: float | None, above: float | None) -> str:
    parts = []
    if above is not None:
        parts.append(f"above {above:g}")
    if lo is not None:
        parts.append(f"at least {lo:g}")
    if hi is not None:
        parts.append(f"at most {hi:g}")
    return "a finite number" + (" " + " and ".join(parts) if parts else "")


def number(lo: float | None = None, hi: float | None = None, *, above: float | None = None) -> Callable[[T], T]:
    """A callback for a numeric option (or a repeatable one): finite, `lo` <= v <= `hi`, v > `above`."""

    def check(value: T) -> T:
        if value is None:
            return value
        values: Any = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if (
                (isinstance(v, float) and not math.isfinite(v))
                or (lo is not None and v < lo)
                or (hi is not None and v > hi)
                or (above is not None and v <= above)
            ):
                raise typer.BadParameter(f"{v} is not {_say(lo, hi, above)}")
        return value

    return check


PORT = number(0, 65535)
"""A port to listen on (0: any free one)."""


def existing_file(value: Path | None) -> Path | None:
    """A file the command reads: said at parse time when it is missing or not a file."""
    if value is not None and not value.is_file():
        raise typer.BadParameter(f"{value}: {'not a file' if value.exists() else 'no such file'}")
    return value
