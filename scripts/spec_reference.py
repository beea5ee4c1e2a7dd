#!/usr/bin/env python3
"""Write docs/reference/spec.md from `components/spec.py`: every spec model, each field with its type, default,
limits and the docstring under it, in the order the file declares them — so the reference cannot drift from the
code (tests/test_docs.py fails when the committed page differs from what this prints).

    python scripts/spec_reference.py            # rewrite docs/reference/spec.md
    python scripts/spec_reference.py --check    # exit 1 if it differs
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "components" / "spec.py"
TYPES = ROOT / "components" / "spec_types.py"
"""The value types and limits spec.py imports: read for the limits' numbers only."""
OUT = ROOT / "docs" / "reference" / "spec.md"

HEADER = """# Spec reference

Every field of a fleet spec (`spotstack:fleets` in a stack file, or the `spec` a component takes), generated
from `components/spec.py` by `scripts/spec_reference.py`. Unknown keys are refused, and values are strict
(`"3"` is not `3`). See [the fleet spec](../spec.md) for how the parts fit and how each cloud maps them.
"""


CONSTANTS: dict[str, str] = {}
"""Module-level numbers (`MAX_REPLICAS = 1000`), shown by value in the limits."""


def _value(node: ast.expr) -> str:
    text = ast.unparse(node)
    return CONSTANTS.get(text, text)


def _limits(call: ast.expr | None) -> tuple[str, str]:
    """(default, limits) from `Field(default=..., ge=..., ...)` or a plain default."""
    if call is None:
        return "required", ""
    if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Field":
        default = "required"
        limits = []
        for kw in call.keywords:
            value = _value(kw.value)
            if kw.arg == "default":
                default = value
            elif kw.arg == "default_factory":
                default = {"list": "[]", "dict": "{}"}.get(value, f"{value}()")
            elif kw.arg in ("ge", "gt", "le", "lt", "min_length", "max_length"):
                sym = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "len >=", "max_length": "len <="}
                limits.append(f"{sym[kw.arg]} {value}")
        return default, ", ".join(limits)
    return ast.unparse(call), ""


def render(source: str, types: str = "") -> str:
    tree = ast.parse(source)
    for node in [*ast.parse(types).body, *tree.body]:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and isinstance(node.value.value, (int, float)):
                CONSTANTS[target.id] = repr(node.value.value)
    parts = [HEADER]
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        if not any(getattr(b, "id", "") in ("_Model", "BaseModel") for b in node.bases):
            continue
        doc = ast.get_docstring(node)
        rows = []
        body = node.body
        for i, item in enumerate(body):
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            name = item.target.id
            if name.startswith("_") or name == "model_config":
                continue
            nxt = body[i + 1] if i + 1 < len(body) else None
            text = ""
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                text = " ".join(nxt.value.value.split())
            default, limits = _limits(item.value)
            typ = ast.unparse(item.annotation).replace("|", "\\|")
            cell = text.replace("|", "\\|")
            rows.append(f"| `{name}` | `{typ}` | `{default}` | {limits} | {cell} |")
        if not rows:
            continue
        parts.append(f"\n## {node.name}\n\n")
        if doc:
            parts.append(" ".join(doc.split()) + "\n")
        parts.append("\n| field | type | default | limits | meaning |\n| --- | --- | --- | --- | --- |\n")
        parts.append("\n".join(rows) + "\n")
    return "".join(parts)


def main() -> int:
    text = render(SOURCE.read_text(), TYPES.read_text())
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write(f"{OUT.relative_to(ROOT)} is stale: run python scripts/spec_reference.py\n")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
