"""A small curated table of GPU instance types and their on-demand prices.

Used to turn a bid fraction into an absolute price cap and to estimate costs in `spotstack plan`.
Prices are Linux on-demand, per instance-hour, in USD (Alibaba: USD list price of the
international site). They change: each row names its source and the date it was read, and a
spec can override any price with `on_demand_price`. A type missing here needs that override.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AWS_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/"
GCP_SOURCE = "https://cloud.google.com/compute/gpus-pricing and /vm-instance-pricing"
ALI_SOURCE = "https://www.alibabacloud.com/product/ecs-pricing-list"


@dataclass(frozen=True)
class InstanceType:
    cloud: str
    name: str
    gpu: str
    gpu_count: int
    vcpu: int
    memory_gib: float
    prices: dict[str, float] = field(default_factory=dict)
    """Region -> on-demand USD per hour."""
    source: str = ""
    as_of: str = ""

    def price_in(self, region: str) -> float | None:
        return self.prices.get(region)


def _aws(name: str, gpu: str, n: int, vcpu: int, mem: float, usd: float, eu: float) -> InstanceType:
    # us-east-1, us-east-2 and us-west-2 list the same price for these types; eu-west-1 differs.
    prices = {"us-east-1": usd, "us-east-2": usd, "us-west-2": usd, "eu-west-1": eu}
    return InstanceType("aws", name, gpu, n, vcpu, mem, prices, AWS_SOURCE, "2024-06")


def _gcp(name: str, gpu: str, n: int, vcpu: int, mem: float, usd: float) -> InstanceType:
    # us-central1 and us-east1 share a price list for these machine types.
    prices = {"us-central1": usd, "us-east1": usd}
    return InstanceType("gcp", name, gpu, n, vcpu, mem, prices, GCP_SOURCE, "2024-06")


def _ali(name: str, gpu: str, n: int, vcpu: int, mem: float, usd: float) -> InstanceType:
    # Only US (Silicon Valley) is listed: other regions differ and must be given as overrides.
    prices = {"us-west-1": usd}
    return InstanceType("alicloud", name, gpu, n, vcpu, mem, prices, ALI_SOURCE, "2024-06")


_TYPES: list[InstanceType] = [
    _aws("g4dn.xlarge", "T4", 1, 4, 16, 0.526, 0.587),
    _aws("g4dn.2xlarge", "T4", 1, 8, 32, 0.752, 0.835),
    _aws("g5.xlarge", "A10G", 1, 4, 16, 1.006, 1.123),
    _aws("g5.2xlarge", "A10G", 1, 8, 32, 1.212, 1.353),
    _aws("g5.12xlarge", "A10G", 4, 48, 192, 5.672, 6.332),
    _aws("g6.xlarge", "L4", 1, 4, 16, 0.8048, 0.8984),
    _aws("g6.2xlarge", "L4", 1, 8, 32, 0.9776, 1.0914),
    _aws("g6e.xlarge", "L40S", 1, 4, 32, 1.861, 2.0776),
    _aws("p3.2xlarge", "V100", 1, 8, 61, 3.06, 3.305),
    _aws("p4d.24xlarge", "A100", 8, 96, 1152, 32.7726, 35.3937),
    _gcp("g2-standard-4", "L4", 1, 4, 16, 0.7068),
    _gcp("g2-standard-8", "L4", 1, 8, 32, 0.8536),
    _gcp("g2-standard-12", "L4", 1, 12, 48, 1.0003),
    _gcp("a2-highgpu-1g", "A100", 1, 12, 85, 3.6731),
    _gcp("a2-ultragpu-1g", "A100-80GB", 1, 12, 170, 5.0688),
    _ali("ecs.gn6i-c4g1.xlarge", "T4", 1, 4, 15, 0.9456),
    _ali("ecs.gn7i-c8g1.2xlarge", "A10", 1, 8, 30, 1.6714),
    _ali("ecs.gn7i-c16g1.4xlarge", "A10", 1, 16, 60, 1.9744),
    _ali("ecs.gn6v-c8g1.2xlarge", "V100", 1, 8, 32, 2.9788),
]

CATALOG: dict[tuple[str, str], InstanceType] = {(t.cloud, t.name): t for t in _TYPES}


def lookup(cloud: str, name: str) -> InstanceType | None:
    """The catalog row for a type, or None. `local` fleets borrow AWS's rows for cost figures."""
    return CATALOG.get(("aws" if cloud == "local" else cloud, name))


def types_for(cloud: str) -> list[str]:
    key = "aws" if cloud == "local" else cloud
    return sorted(name for (c, name) in CATALOG if c == key)


def on_demand_price(cloud: str, name: str, region: str, override: float | None = None) -> float | None:
    """Hourly on-demand price: the override if given, else the catalog's for that region."""
    if override is not None:
        return override
    row = lookup(cloud, name)
    if row is None:
        return None
    if cloud == "local":
        return row.price_in("us-east-1")
    return row.price_in(region)


def smallest_memory_gib(cloud: str, types: list[str]) -> float | None:
    """The least memory among the catalog's rows for these types (None when the catalog knows none)."""
    mems = [row.memory_gib for t in types if (row := lookup(cloud, t)) is not None]
    return min(mems) if mems else None


DEFAULT_CACHE_GIB = 16.0
CACHE_SHARE = 0.5
"""The peer cache may use at most this share of a node's memory: the model server needs the rest."""


def cache_gib(cloud: str, types: list[str], given: float | None) -> float:
    """The peer cache's size: as given, else half the smallest type's memory, at most 16 GiB."""
    if given is not None:
        return given
    smallest = smallest_memory_gib(cloud, types)
    return DEFAULT_CACHE_GIB if smallest is None else min(DEFAULT_CACHE_GIB, smallest * CACHE_SHARE)
