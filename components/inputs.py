"""Component args that take `pulumi.Input`s: checked at once when the value is known, inside `apply` when not.

A program wires its own resources into a fleet (`vpc_id=vpc.id`) without `.apply`, as pulumi-awsx allows. A
plain value that cannot be right fails before anything is declared; an Output is checked when the engine knows
it (during `pulumi up`, and in `spotstack plan` where the mocks resolve it). Both raise Pulumi's
`InputPropertiesError`, which names the property path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pulumi

AWS_ID = {
    "vpc": re.compile(r"^vpc-[0-9a-f]{8}(?:[0-9a-f]{9})?$"),
    "subnet": re.compile(r"^subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?$"),
}
"""EC2 ids: the kind, then 8 (old) or 17 hex digits."""
ALICLOUD_ID = {"vpc": re.compile(r"^vpc-[a-z0-9]+$"), "vswitch": re.compile(r"^vsw-[a-z0-9]+$")}


def _fail(component: str, path: str, reason: str) -> pulumi.InputPropertiesError:
    return pulumi.InputPropertiesError(f"{component}: {path}: {reason}", [{"property_path": path, "reason": reason}])


def _check_one(component: str, path: str, value: Any, pattern: re.Pattern[str] | None, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(component, path, f"must be a non-empty string ({what}), got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise _fail(component, path, f"{value!r} is not {what}")
    return value


def checked(
    component: str, path: str, value: pulumi.Input[str], what: str, pattern: re.Pattern[str] | None = None
) -> pulumi.Input[str]:
    """`value` as given when it is plain and well-formed; an Output that fails with the path when it resolves
    to something that is not `what`."""
    if isinstance(value, str):
        return _check_one(component, path, value, pattern, what)
    resolved: pulumi.Input[str] = value
    return pulumi.Output.from_input(resolved).apply(lambda v: _check_one(component, path, v, pattern, what))


def checked_list(
    component: str,
    path: str,
    value: pulumi.Input[Sequence[pulumi.Input[str]]],
    what: str,
    count: int,
    pattern: re.Pattern[str] | None = None,
) -> pulumi.Input[list[str]]:
    """A list of `count` items (one per zone, in the spec's zone order), each checked like `checked`."""

    def check(items: Any) -> list[str]:
        if not isinstance(items, list | tuple):
            raise _fail(component, path, f"must be a list of {what}, got {type(items).__name__}")
        if len(items) != count:
            raise _fail(component, path, f"give one per zone of spec.zones ({count}), got {len(items)}")
        return [_check_one(component, f"{path}[{i}]", v, pattern, what) for i, v in enumerate(items)]

    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return check(value)
    return pulumi.Output.from_input(value).apply(check)


def require_together(component: str, **given: object) -> bool:
    """True when every one of `given` is set, False when none is; a half-given network is an error."""
    missing = [k for k, v in given.items() if v is None]
    if missing and len(missing) != len(given):
        have = [k for k in given if k not in missing]
        raise _fail(component, missing[0], f"give it with {', '.join(have)} (or neither, to use spec.network)")
    return not missing


BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""A bucket name every one of the three clouds accepts (as `ModelCacheSpec.bucket`)."""


def model_spec(component: str, spec: Any, bucket: pulumi.Input[str] | None) -> pulumi.Output[Any]:
    """The fleet spec with its model bucket: `bucket` (e.g. your `aws.s3.BucketV2(...).bucket`) replaces
    `spec.model_cache.bucket`. Everything the bucket's name goes into (IAM documents, the node's config, the
    agent's wheel) is built from this Output, so it waits for the bucket the program declares."""
    mc = spec.model_cache
    if bucket is None:
        if mc is not None and mc.bucket is None:
            raise _fail(component, "model_bucket", "give the bucket here or as spec.model_cache.bucket")
        return pulumi.Output.from_input(spec)
    if mc is None:
        raise _fail(component, "model_bucket", "the spec has no model_cache to put a bucket in")

    def with_bucket(name: str) -> Any:
        return spec.model_copy(update={"model_cache": mc.model_copy(update={"bucket": name})})

    return pulumi.Output.from_input(checked(component, "model_bucket", bucket, "a bucket name", BUCKET)).apply(
        with_bucket
    )


def bucket_of(resolved: pulumi.Output[Any]) -> pulumi.Output[str]:
    """The model bucket's name from `model_spec`'s Output."""
    return resolved.apply(lambda s: str(s.model_cache.bucket))
