"""The cloud profile (runtime/clouds.py) is the one place per-cloud facts live: every cloud has every field, and the
facts a module once kept for itself are not written anywhere else."""

from __future__ import annotations

import dataclasses
import re

import pytest

from spotstack.runtime import clouds, objectget
from tests.conftest import ROOT

FIELDS = [f.name for f in dataclasses.fields(clouds.CloudProfile)]


@pytest.mark.parametrize("name", list(clouds.PROFILES))
def test_every_cloud_has_every_field(name: str) -> None:
    p = clouds.PROFILES[name]
    assert p.name == name
    for field in FIELDS:
        value = getattr(p, field)
        assert value is not None and value != "", (name, field)
        if isinstance(value, float | int) and field != "disk_usd_per_gb_month":
            assert value > 0, (name, field)


def test_the_documented_windows_and_limits() -> None:
    # The clouds' own figures: EC2's two-minute warning, GCE's 30 s, ECS's five minutes; user data before base64.
    assert {n: p.notice_s for n, p in clouds.CLOUDS.items()} == {"aws": 120.0, "gcp": 30.0, "alicloud": 300.0}
    assert {n: p.user_data_limit for n, p in clouds.CLOUDS.items()} == {"aws": 16384, "gcp": 262144, "alicloud": 32768}
    assert ":" not in clouds.GCP.fleet_key  # GCP label keys allow no colon


@pytest.mark.parametrize(
    ("cloud", "zone", "region", "ok"),
    [
        ("aws", "us-east-1a", "us-east-1", True),
        ("aws", "us-east-1-a", "us-east-1", False),
        ("aws", "us-east-2a", "us-east-1", False),
        ("gcp", "us-central1-a", "us-central1", True),
        ("gcp", "us-central1a", "us-central1", False),
        ("alicloud", "cn-hangzhou-h", "cn-hangzhou", True),
        ("alicloud", "us-west-1a", "us-west-1", True),
        ("alicloud", "us-east-1a", "us-west-1", False),
    ],
)
def test_zone_in_region(cloud: str, zone: str, region: str, ok: bool) -> None:
    assert clouds.CLOUDS[cloud].zone_in(zone, region) is ok


def test_lookups_name_what_is_known() -> None:
    assert clouds.by_scheme("gs") is clouds.GCP
    with pytest.raises(ValueError, match="aws, gcp, alicloud, local"):
        clouds.profile("azure")
    with pytest.raises(ValueError, match="az://"):
        clouds.by_scheme("az")


def test_the_standalone_fetcher_agrees() -> None:
    # objectget.py runs on a bare node before the package is installed, so it cannot import the profile: its own
    # table must say the same.
    assert {p.scheme: p.metadata_url for p in clouds.CLOUDS.values()} == objectget.METADATA


def test_no_other_module_keeps_a_cloud_fact() -> None:
    """The metadata addresses, the extras and the old per-cloud tables appear in the profile only."""
    facts = [re.escape(p.metadata_url.removeprefix("http://")) for p in clouds.CLOUDS.values()]
    facts += [r'"agent-gcp"', r'"agent-alicloud"', r"NOTICE_WINDOW_S", r"USER_DATA_LIMIT", r"AGENT_EXTRA"]
    facts += [r'\{"aws": "s3"', r"\bNOTICE_S = \d"]
    pattern = re.compile("|".join(facts))
    allowed = {"runtime/clouds.py", "runtime/objectget.py"}
    found = []
    for folder in ("runtime", "components", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel in allowed:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
