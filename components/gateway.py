"""The fleet gateway as the components deploy it, whatever the cloud: its default instance type and price, its port,
the command its instances run and their boot document. No cloud calls: the one side effect is the agent's wheel the
boot document names (built once per process, `components/agent_wheel.py`)."""

from __future__ import annotations

from collections.abc import Callable

from spotstack.components import node
from spotstack.components.spec import FleetSpec
from spotstack.runtime.bootstrap import GATEWAY_KEYS_PATH, VENV, Secret, render_gateway_cloud_init
from spotstack.runtime.config import AGENT_PORT

GATEWAY_PORT = 8000
"""Where a gateway instance listens (the load balancer's target port and health check)."""

DEFAULT_TYPES: dict[str, tuple[str, float | None]] = {
    # A gateway is a few streams' bookkeeping: 2 vCPU, on-demand (it must outlive the spot nodes it fronts).
    # USD per hour on-demand, Linux, in the dev stacks' regions (the clouds' price pages, 2026-12).
    "aws": ("c7i.large", 0.08925),
    "gcp": ("e2-standard-2", 0.067006),
    # Alibaba publishes per-region ECS prices on its console only: unpriced here (the plan says so).
    "alicloud": ("ecs.c7.large", None),
}
"""Cloud -> (instance type, on-demand USD/h) when `service.gateway.type` is unset."""


def gateway_type(fleet: FleetSpec) -> tuple[str, float | None]:
    """The instance type and, where known, its hourly price: the spec's `on_demand_price`, else the table's for its
    default type (a type priced by neither is unpriced: the plan says so)."""
    gw = fleet.service.gateway
    assert gw is not None
    default, price = DEFAULT_TYPES[fleet.cloud]
    typ = gw.type or default
    if gw.on_demand_price is not None:
        return typ, gw.on_demand_price
    return typ, price if typ == default else None


def gateway_command(fleet: FleetSpec, region: str, fleet_tag: str) -> list[str]:
    """`spotstack gateway run` on an instance: the fleet's nodes found by tag with the instance's identity, the
    model server's port for requests, the agent's for readiness."""
    gw = fleet.service.gateway
    assert gw is not None
    cmd = [
        f"{VENV}/bin/spotstack", "gateway", "run",
        "--discover", fleet.cloud, "--fleet", fleet_tag, "--region", region,
        "--replica-port", str(fleet.service.port), "--ready-port", str(AGENT_PORT),
        "--host", "0.0.0.0", "--port", str(GATEWAY_PORT),
        "--continue-as", gw.continue_as, "--max-request", str(fleet.service.max_request_s),
    ]  # fmt: skip
    if gw.api_keys is not None:
        cmd += ["--api-keys-file", GATEWAY_KEYS_PATH]
    if gw.rate_limit is not None:
        cmd += ["--rate-limit", str(gw.rate_limit)]
    return cmd


def gateway_boot(fleet: FleetSpec, fleet_tag: str, fetch_keys: Callable[[str], str]) -> str:
    """The gateway instances' boot document (cloud-init text): the agent's package installed as on the fleet's nodes,
    the API keys (when the spec names a secret) fetched by the command `fetch_keys` makes of the secret's name (each
    cloud names secrets its own way), then `gateway_command`. The cloud's adaptor encodes it as its API wants."""
    gw = fleet.service.gateway
    assert gw is not None
    secrets = (Secret(GATEWAY_KEYS_PATH, fetch_keys(gw.api_keys)),) if gw.api_keys is not None else ()
    command = gateway_command(fleet, fleet.region, fleet_tag)
    install = node.agent_install(fleet.cloud, fleet)
    return render_gateway_cloud_init(command, fleet.service.max_request_s, install, secrets)
