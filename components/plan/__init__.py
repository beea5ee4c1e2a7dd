"""`spotstack plan`: what `pulumi up` would create, and what it would cost, computed offline.

`Plan`, `plan_stack` and `ProgramError` load on first use (`stack.py`): reading a stack file (`stackfile.py`), as the
local fleet does, must not import Pulumi - `make demo` installs only what the local fleet needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spotstack.components.plan.stack import Plan, ProgramError, plan_stack

__all__ = ["Plan", "ProgramError", "plan_stack"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from spotstack.components.plan import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
