"""Errors as a person reads them: one line, what went wrong, no library's multi-line dump."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception's message on one line; a pydantic error is its first problem with where it is."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and exc.__class__.__name__ == "ValidationError":
        try:
            found = errors()
        except Exception:  # not pydantic's after all
            found = None
        if found:
            e = found[0]
            where = ".".join(str(x) for x in e.get("loc", ()))
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            return f"{where + ': ' if where else ''}{e.get('msg')}{more}"
    text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return " ".join(str(text).split())
