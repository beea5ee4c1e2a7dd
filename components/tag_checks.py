"""Tags and image references against what each cloud accepts, so `plan` refuses what `pulumi up` (or a node's
first `docker pull`) would: too many tags, reserved prefixes, over-long keys and values, GCP's label alphabet, and
image names Docker cannot parse. Every problem with its config path."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spotstack.components.problem import Problem
from spotstack.components.spec import FleetSpec


@dataclass(frozen=True)
class TagRules:
    max_tags: int
    """Per resource, ours included."""
    key_len: int
    value_len: int
    reserved: tuple[str, ...]
    """Key prefixes the cloud keeps for itself (compared in lower case)."""
    key_pattern: str | None = None
    value_pattern: str | None = None
    what: str = "tags"


RULES = {
    # EC2/ASG/ALB tags: 50 per resource, keys to 128, values to 256; `aws:` is AWS's own.
    "aws": TagRules(50, 128, 256, ("aws:",), r"^[\w .:/=+\-@]+$", r"^[\w .:/=+\-@]*$"),
    # Labels: 64 per resource, lower-case letters, digits, _ and - (the components write ':' as '-'), to 63.
    "gcp": TagRules(64, 63, 63, (), r"^[a-z][a-z0-9_-]*$", r"^[a-z0-9_-]*$", "labels"),
    # ECS tags: 20 per resource, keys and values to 128; `aliyun` and `acs:` are Alibaba Cloud's own.
    "alicloud": TagRules(20, 128, 128, ("aliyun", "acs:")),
    "local": TagRules(50, 128, 256, ()),
}
OURS = 2
"""Tags the components add to every resource they tag (spotstack:fleet, and spotstack:config on Alibaba)."""


def check_tags(fleet: FleetSpec, at: str) -> list[Problem]:
    r = RULES[fleet.cloud]
    out: list[Problem] = []
    if len(fleet.tags) > r.max_tags - OURS:
        out.append(
            Problem(
                f"{at}.tags",
                f"{len(fleet.tags)} {r.what}: {fleet.cloud} takes {r.max_tags} per resource, {OURS} of them "
                f"spotstack's own, so at most {r.max_tags - OURS}",
            )
        )
    for key, value in fleet.tags.items():
        where = f"{at}.tags.{key}"
        name = key.replace(":", "-") if fleet.cloud == "gcp" else key
        if key.lower().startswith("spotstack:") or name.lower().startswith("spotstack-"):
            out.append(
                Problem(where, "spotstack: keys are the fleet's own (spotstack:fleet is its name); pick another")
            )
        elif any(key.lower().startswith(p) for p in r.reserved):
            out.append(Problem(where, f"{fleet.cloud} keeps keys starting with {' or '.join(r.reserved)} for itself"))
        if not 1 <= len(name) <= r.key_len:
            out.append(Problem(where, f"a key is 1 to {r.key_len} characters on {fleet.cloud}, this is {len(name)}"))
        elif r.key_pattern and not re.match(r.key_pattern, name):
            out.append(Problem(where, f"{fleet.cloud} {r.what} keys match {r.key_pattern}"))
        if len(value) > r.value_len:
            out.append(
                Problem(where, f"a value is at most {r.value_len} characters on {fleet.cloud}, this {len(value)}")
            )
        elif r.value_pattern and not re.match(r.value_pattern, value):
            out.append(Problem(where, f"{fleet.cloud} {r.what} values match {r.value_pattern}"))
        if fleet.cloud == "alicloud" and ("http://" in key + value or "https://" in key + value):
            out.append(Problem(where, "Alibaba Cloud tags may not contain http:// or https://"))
    return out


# Docker's reference grammar (distribution/reference): lower-case path components joined by '/'.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
REGISTRY = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d{1,5})?$"
)


def check_image(fleet: FleetSpec, at: str) -> list[Problem]:
    img, out = fleet.image, []
    if not REPOSITORY.match(img.repository) or len(img.repository) > 255:
        out.append(
            Problem(
                f"{at}.image.repository",
                f"{img.repository!r} is not a Docker repository name (lower-case letters and digits, separated "
                "by single '.', '_', '__' or '-', path parts joined by '/')",
            )
        )
    if img.registry is not None and not REGISTRY.match(img.registry):
        out.append(Problem(f"{at}.image.registry", f"{img.registry!r} is not a registry host (host[:port])"))
    return out
