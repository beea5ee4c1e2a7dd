"""The local fleet as a component: the one fleet spec mapped onto the local supervisor (`runtime/local`), as each
cloud's component maps it onto its cloud — the groups' types and sizes, the prices for the cost figures, the
controller's policy (the clouds' own, `controller_policy.fleet_policy`), the jobs worker, the gateways, and the
workload the spec's image names. The runtime does not import components: this hands it a `FleetPlan`."""

from __future__ import annotations

from typing import Any

from spotstack.components import node
from spotstack.components.controller_policy import fleet_policy
from spotstack.components.pricing import on_demand_price, spot_cap
from spotstack.components.spec import FleetSpec, JobsSpec
from spotstack.runtime.local.plan import FleetPlan

LOCAL_IMAGES = {"minilm-server": "minilm", "llm-server": "llm"}
"""The local fleet's registry: what a node runs for the spec's image."""


def plan_of(f: FleetSpec) -> FleetPlan:
    """ValueError (with the config path) for what a local fleet cannot run."""
    if f.image.repository not in LOCAL_IMAGES:
        raise ValueError(
            f"image.repository: a local fleet runs {' or '.join(LOCAL_IMAGES)}, not {f.image.repository!r}"
        )
    # Validation guarantees a price for every type (catalog or on_demand_price), as on any cloud.
    prices = {i.type: (on_demand_price(f, i), spot_cap(f, i)) for i in f.instances}
    c = f.capacity
    return FleetPlan(
        f.name,
        tuple(i.type for i in f.spot_instances),
        tuple(i.type for i in f.instances),
        c.min,
        c.max,
        c.desired_or_min,
        c.base_on_demand,
        c.on_demand_above_base_percent,
        c.dynamic_on_demand_fallback,
        float(f.service.drain_timeout),
        prices,
        c.warm_pool.size if c.warm_pool is not None else 0,
        jobs=None if f.jobs is None else agent_jobs(f.jobs),
        workload=LOCAL_IMAGES[f.image.repository],
        gateway=None if f.service.gateway is None else f.service.gateway.model_dump(),
        policy=fleet_policy(f),
        node=node_template(f),
    )


def node_template(f: FleetSpec) -> dict[str, Any]:
    """What a cloud node of this spec runs (`node.agent_config`; AWS's form: the local fleet plays AWS on loopback),
    as the JSON document cloud-init would write. The supervisor changes its ports, paths and endpoints, the drain's
    time scale and the load balancer (its HAProxy slot): `runtime/local/node_config.agent_config`."""
    cfg = node.agent_config(f, "aws", model_scheme="s3", discovery="file")
    doc: dict[str, Any] = cfg.model_dump(mode="json")
    return doc


def agent_jobs(j: JobsSpec) -> dict[str, Any]:
    """The spec's jobs section as the agent's jobs config takes it (queue URLs are the fleet's to add)."""
    return {
        "http_path": j.http_path,
        "command": j.command,
        "task_commands": j.task_commands,
        "concurrency": j.concurrency,
        "lease_s": j.lease,
        "task_timeout_s": j.task_timeout,
        "max_attempts": j.max_attempts,
        "resume_command": j.training.resume_command if j.training else None,
    }
