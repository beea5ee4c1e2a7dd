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


@pytest.mark.parametrize(
    ("cloud", "gateway", "says"),
    [
        ("aws", {}, "2 on-demand c7i.large, always on, about $130/month"),
        ("gcp", {"replicas": 3}, "3 on-demand e2-standard-2, always on, about $147/month"),
        ("alicloud", {}, "2 on-demand ecs.c7.large, always on (unpriced here"),
        ("alicloud", {"on_demand_price": 0.1}, "2 on-demand ecs.c7.large, always on, about $146/month"),
        ("aws", {"type": "m7i.large"}, "2 on-demand m7i.large, always on (unpriced here"),
        ("aws", {"type": "m7i.large", "on_demand_price": 0.1008}, "2 on-demand m7i.large, always on, about $147/month"),
    ],
)
def test_the_plan_bills_the_gateways_with_the_tables_price_or_the_specs(
    cloud: str, gateway: dict[str, Any], says: str
) -> None:
    from spotstack.components.plan.engine import PlanRun
    from spotstack.components.plan.prereqs import prerequisites

    fleets, _ = validate_fleets([fleet(cloud, api_keys="llm-api-keys", **gateway)])
    billed = [i.text for i in prerequisites(fleets, PlanRun([], [])) if "the gateways:" in i.text]
    assert len(billed) == 1 and says in billed[0], billed
