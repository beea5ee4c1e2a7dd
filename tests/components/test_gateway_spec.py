"""`service.gateway` in the spec: each cloud's API keys store name checked with its config path; no keys warned."""

from __future__ import annotations

from typing import Any

import pytest

from spotstack.components.validate import SpecError, validate_fleets
from tests.components.test_gcp_alicloud import as_cloud
from tests.conftest import base_fleet


def fleet(cloud: str, **gateway: Any) -> dict[str, Any]:
    f = base_fleet() if cloud == "aws" else as_cloud(cloud)
    f["service"] = {**f["service"], "gateway": gateway}
    return f


@pytest.mark.parametrize(
    ("cloud", "keys"),
    [("aws", "ssm/keys"), ("aws", "bad name!"), ("gcp", "projects/x/secret/y"), ("alicloud", "oos-keys")],
)
def test_a_key_store_name_the_cloud_refuses_is_an_error_with_its_path(cloud: str, keys: str) -> None:
    with pytest.raises(SpecError) as err:
        validate_fleets([fleet(cloud, api_keys=keys)])
    (p,) = [p for p in err.value.problems if p.path.endswith("service.gateway.api_keys")]
    assert p.path == "fleets[0].service.gateway.api_keys" and "must be" in p.reason


@pytest.mark.parametrize(
    ("cloud", "keys"), [("aws", "/spotstack/dev/api-keys"), ("gcp", "llm-api-keys"), ("alicloud", "llm/api-keys")]
)
def test_good_names_pass_and_no_keys_is_a_warning(cloud: str, keys: str) -> None:
    _, problems = validate_fleets([fleet(cloud, api_keys=keys)])
    assert not [p for p in problems if "api_keys" in p.path]
    _, problems = validate_fleets([fleet(cloud)])
    assert [p.reason for p in problems if p.path.endswith("gateway.api_keys")] == [
        "no API keys: the gateway takes every request"
    ]
