"""How the spec maps onto GCP's managed instance groups and autoscaler. Pure, tested without the engine."""

from __future__ import annotations

from dataclasses import dataclass

from spotstack.components import catalog
from spotstack.components.spec import FleetSpec

# Catalog GPU model -> GCE accelerator type.
ACCELERATORS = {
    "L4": "nvidia-l4",
    "A100": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-a100-80gb",
    "T4": "nvidia-tesla-t4",
    "V100": "nvidia-tesla-v100",
    "H100": "nvidia-h100-80gb",
}
# Ubuntu with NVIDIA drivers (cloud-init reads the user-data metadata key).
DEFAULT_IMAGE = (
    "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2204-amd64-with-nvidia-550"
)
# Google's load balancer and health check source ranges.
LB_RANGES = ["130.211.0.0/22", "35.191.0.0/16"]
LB_UTILIZATION = 0.8
SCHEDULE_WINDOW_S = 12 * 3600


# Accelerator-optimized families come with their GPUs attached by the machine type; only general-purpose
# types (N1 with T4/V100) take guest accelerators on the template.
AUTO_ATTACHED = ("a2-", "a3-", "a4-", "g2-", "g4-")


def accelerator(cloud_type: str) -> tuple[str, int] | None:
    """The guest accelerator a template must declare for this type (None: none, or attached by the type)."""
    if cloud_type.startswith(AUTO_ATTACHED):
        return None
    row = catalog.lookup("gcp", cloud_type)
    if row is None or row.gpu not in ACCELERATORS:
        return None
    return ACCELERATORS[row.gpu], row.gpu_count


def same_attachment(types: list[str]) -> tuple[list[str], list[str]]:
    """Split ranked types into those that can share the first type's template and the rest.

    Instance flexibility overrides only the machine type: a type that needs other guest accelerators
    than the template declares would boot with the wrong GPUs (or none)."""
    if not types:
        return [], []
    first = accelerator(types[0])
    kept = [t for t in types if accelerator(t) == first]
    return kept, [t for t in types if t not in kept]


STANDBY_INITIAL_DELAY_S = 900
ROLLOUT_MIN_READY_S = 300
"""A rolling update waits this long after a replacement is available (booted, live) before the next old VM
goes: time to load the model (from peers, mostly) and turn ready. The API allows 0..3600."""
"""A VM made for the standby pool runs this long (boot, image pull, model load) before the MIG stops it."""


@dataclass(frozen=True)
class Groups:
    spot_types: list[str]
    """Ranked machine types of the spot group (rank = position)."""
    on_demand_types: list[str]
    """Ranked machine types of the on-demand groups (base and fallback): every listed type."""
    base: int
    spot_min: int
    spot_max: int
    spot_target: int


def groups(fleet: FleetSpec) -> Groups:
    """A regional MIG for the on-demand base, one spot MIG ranking the spot types in spec order,
    and (with dynamic fallback) an on-demand MIG at 0 that the controller grows."""
    cap = fleet.capacity
    base = min(cap.base_on_demand, cap.max)
    spot = same_attachment([i.type for i in fleet.spot_instances])[0]
    return Groups(
        spot_types=spot,
        on_demand_types=same_attachment([i.type for i in fleet.instances])[0],
        base=base,
        spot_min=max(0, cap.min - base),
        spot_max=max(0, cap.max - base),
        spot_target=max(0, cap.desired_or_min - base),
    )


def max_rate_per_instance(qps: float) -> float:
    """The autoscaler holds backend utilization at LB_UTILIZATION of this rate: i.e. at the QPS target."""
    return round(qps / LB_UTILIZATION, 3)


def warnings(fleet: FleetSpec) -> list[str]:
    """Spec fields GCP cannot honour as written: reported, never dropped silently."""
    out: list[str] = []
    for what, types in (
        ("spot", [i.type for i in fleet.spot_instances]),
        ("on-demand", [i.type for i in fleet.instances]),
    ):
        kept, left = same_attachment(types)
        if left:
            out.append(
                f"GCP ranks types in one {what} group only when they attach the same GPUs: {left} need other guest "
                f"accelerators than {kept[0]} and are left out of it"
            )
    capped = [
        i.type for i in fleet.spot_instances if i.spot and (i.spot.bid is not None or i.spot.max_price is not None)
    ]
    if capped:
        out.append(f"GCP spot VMs have no bid or price cap: spot caps on {capped} are ignored (you pay the spot price)")
    uncapped = [i.type for i in fleet.spot_instances if i.spot and i.spot.bid is None and i.spot.max_price is None]
    if uncapped:
        out.append(
            "GCP spot prices float and the catalog lists none: plan's spot cost for "
            f"{uncapped} is the on-demand price, an upper bound"
        )
    if fleet.capacity.on_demand_above_base_percent:
        out.append(
            "GCP instance groups cannot split a percentage on-demand: on_demand_above_base_percent is not applied "
            "(the groups declare the base, spot and the fallback; the fleet controller sizes only the fallback)"
        )
    if any(s.max for s in fleet.scaling.schedules):
        out.append(
            f"GCP scaling schedules raise the minimum for a window ({SCHEDULE_WINDOW_S // 3600} h here); "
            "a schedule's max is not applied"
        )
    if fleet.network is not None:
        out.append(
            f"network {fleet.network.id} is yours: its subnets need egress (Cloud NAT, or Private Google Access "
            "for Google APIs) or nodes cannot install the agent or reach GCS and Artifact Registry"
        )
    return out


def docker_login(image: str) -> list[str]:
    """Artifact Registry: the agent logs Docker in with the service account's token before each start (gcloud's
    credential helper needs gcloud on the image, and its configuration in root's home)."""
    import shlex

    from spotstack.runtime.bootstrap import VENV

    host = image.split("/", 1)[0]
    if not host.endswith("-docker.pkg.dev"):
        return []
    return [shlex.join([f"{VENV}/bin/spotstack", "agent", "registry-login", "--cloud", "gcp", "--registry", host])]


def shutdown_script(agent_port: int, wait_s: int = 25) -> str:
    """GCP runs this on preemption (best effort, within the 30 s): wait for the agent's drain to finish."""
    return (
        "#!/bin/sh\n"
        "# Preempted or stopped: give the spotstack agent time to finish its drain before the VM goes.\n"
        f"end=$(( $(date +%s) + {wait_s} ))\n"
        "while [ $(date +%s) -lt $end ]; do\n"
        f'  curl -fsS http://127.0.0.1:{agent_port}/status | grep -q \'"state": *"drained"\' && exit 0\n'
        "  sleep 1\n"
        "done\n"
    )
