"""The value types and limits the fleet spec (`spec.py`) builds its fields from: names, paths, ports, domains,
regions and the caps on counts and prices. The spec reference (`scripts/spec_reference.py`) shows these limits by
value."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from spotstack.components.field_checks import not_agent_port

Cloud = Literal["aws", "gcp", "alicloud", "local"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]
Path = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~/-]*$")]

# Far above any real fleet, low enough that no count overflows a cloud API's integer or a cost sum.
MAX_REPLICAS = 1000
MAX_PRICE = 1000.0
"""USD per instance-hour: above every GPU type's list price."""
MAX_REGIONS = 8

NodePort = Annotated[int, Field(ge=1, le=65535), AfterValidator(not_agent_port)]
"""A port on the node besides the agent's own."""

Domain = Annotated[
    str, StringConstraints(max_length=253, pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
]
SnsArn = Annotated[str, StringConstraints(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")]

Region = Annotated[str, StringConstraints(min_length=1)]
Zones = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
