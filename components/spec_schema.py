"""The fleet spec as Pulumi schema types, generated from `FleetSpec` (its JSON Schema, field docstrings included), so
the multi-language components' `spec` input is typed: TypeScript, Go, .NET and YAML users get the fields, their
types and their documentation instead of `any`.

Field names stay as the spec writes them (`base_on_demand`, not `baseOnDemand`): the provider receives the object
as sent and validates it with the spec's own rules (limits, patterns and cross-field checks are not repeated here).
"""

from __future__ import annotations

from typing import Any

from spotstack.components.spec import FleetSpec

SCALARS = {"string", "integer", "number", "boolean"}


def spec_types(package: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `spec` property's schema, the types it refers to by `#/types/<package>:index:<Model>`)."""
    doc = FleetSpec.model_json_schema(mode="validation")
    types: dict[str, Any] = {}
    defs = doc.get("$defs", {})
    for name, model in {**defs, "FleetSpec": doc}.items():
        types[f"{package}:index:{name}"] = _object(model, package, defs)
    ref = {"$ref": f"#/types/{package}:index:FleetSpec", "description": doc.get("description", "The fleet.")}
    return ref, types


def _object(model: dict[str, Any], package: str, defs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": {k: _property(v, package, defs) for k, v in model["properties"].items()},
    }
    if model.get("description"):
        out["description"] = model["description"]
    if model.get("required"):
        out["required"] = sorted(model["required"])
    return out


def _property(prop: dict[str, Any], package: str, defs: dict[str, Any]) -> dict[str, Any]:
    out = _type(prop, package)
    # A field without a docstring of its own that holds a model (`capacity: CapacitySpec`) says what the model says.
    ref = out.get("$ref") or out.get("items", {}).get("$ref") or ""
    text = prop.get("description") or defs.get(ref.rsplit(":", 1)[-1], {}).get("description") or prop.get("title")
    if "enum" in prop:  # a Literal: the values it takes, in the description (Pulumi enums would rename them)
        values = ", ".join(f"`{v}`" for v in prop["enum"])
        text = f"{text} One of {values}." if text else f"One of {values}."
    if text:
        out["description"] = text
    return out


def _type(prop: dict[str, Any], package: str) -> dict[str, Any]:
    if "$ref" in prop:
        return {"$ref": f"#/types/{package}:index:{prop['$ref'].rsplit('/', 1)[-1]}"}
    if "anyOf" in prop:  # `X | None`: optional in the schema
        (inner,) = [p for p in prop["anyOf"] if p.get("type") != "null"]
        return _type({**inner, **{k: v for k, v in prop.items() if k != "anyOf"}}, package)
    kind = prop.get("type", "string")
    if kind == "array":
        return {"type": "array", "items": _type(prop.get("items", {}), package)}
    if kind == "object":
        return {"type": "object", "additionalProperties": _type(prop.get("additionalProperties", {}), package)}
    if kind not in SCALARS:
        raise ValueError(f"no Pulumi schema type for {prop}")
    return {"type": kind}
