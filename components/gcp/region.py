"""One region's part of a GCP fleet: its Cloud NAT (on the default network), instance templates, regional managed
instance groups (an on-demand base, one spot group ranking the spot types, the on-demand fallback at 0) and the spot
group's autoscaler. A fleet in one region declares exactly this once, under the fleet's own name; across regions,
every region's groups are backends of the fleet's one global backend service (GCP's own multi-region load
balancing: a client goes to the nearest region with capacity) and one controller sizes every region's fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from spotstack.components import node
from spotstack.components.gcp import disks, mapping, scaling
from spotstack.components.spec import FleetSpec, WarmPoolSpec
from spotstack.runtime.clouds import GCP

C = gcp.compute


@dataclass
class Shared:
    """What the fleet's regions share (global on GCP): the network, the nodes' identity, tag, label and boot
    metadata, the liveness check, and the groups' VM name prefixes (the preemption log filter and the controller's
    IAM condition match them in every region)."""

    network: pulumi.Input[str]
    subnet: pulumi.Input[str] | None
    declare_nat: bool
    node_tag: str
    fleet_label: str
    service_account: gcp.serviceaccount.Account
    metadata: Callable[[str], pulumi.Output[dict[str, str]]]
    """A region's boot metadata (the agent's configuration names the node's region)."""
    live: gcp.compute.HealthCheck
    base_names: dict[str, str]


@dataclass
class GcpFleetRegion:
    region: str
    migs: dict[str, gcp.compute.RegionInstanceGroupManager]
    """Role (base, spot, fallback) to the region's group."""


def declare(
    name: str,
    spec: FleetSpec,
    shared: Shared,
    child: pulumi.ResourceOptions,
    tasks: pulumi.Input[str] | None = None,
) -> GcpFleetRegion:
    """`spec`: the region's part of the fleet (components/regions.py); `name`: what its resources are named from;
    `tasks`: the fleet's task subscription, scaled on with `jobs.backlog_per_instance`."""
    svc, g = spec.service, mapping.groups(spec)
    boot = shared.metadata(spec.region)
    # Egress: nodes have no external address, and boot installs the agent and pulls the image and the
    # model (GCS, Artifact Registry): on the default network the fleet declares a Cloud NAT for its
    # region. A network the spec names is the user's: its egress is theirs (the plan says so).
    if shared.declare_nat:
        router = C.Router(f"{name}-router", network=shared.network, region=spec.region, opts=child)
        C.RouterNat(
            f"{name}-nat",
            router=router.name,
            region=spec.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config=C.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child,
        )

    def template(kind: str, machine_type: str, spot: bool) -> gcp.compute.InstanceTemplate:
        acc = mapping.accelerator(machine_type)
        return C.InstanceTemplate(
            f"{name}-{kind}-tpl",
            # A template is global, but its subnetwork is resolved in this region (default: the provider's).
            region=spec.region,
            name_prefix=f"{name}-{kind}-",
            machine_type=machine_type,
            disks=[
                C.InstanceTemplateDiskArgs(
                    source_image=spec.machine_image or mapping.DEFAULT_IMAGE,
                    disk_size_gb=node.ROOT_VOLUME_GB,
                    # Unset, the provider sends pd-standard, which G2 (L4) and the Hyperdisk-only families refuse.
                    disk_type=disks.boot_disk_type(machine_type),
                    boot=True,
                    auto_delete=True,
                )
            ],
            guest_accelerators=[C.InstanceTemplateGuestAcceleratorArgs(type=acc[0], count=acc[1])] if acc else None,
            scheduling=C.InstanceTemplateSchedulingArgs(
                provisioning_model="SPOT" if spot else "STANDARD",
                preemptible=spot,
                automatic_restart=not spot,
                on_host_maintenance="TERMINATE",  # GPUs cannot live-migrate
                instance_termination_action="DELETE" if spot else None,
            ),
            network_interfaces=[
                C.InstanceTemplateNetworkInterfaceArgs(network=shared.network, subnetwork=shared.subnet)
            ],
            service_account=C.InstanceTemplateServiceAccountArgs(
                email=shared.service_account.email, scopes=["cloud-platform"]
            ),
            metadata=boot,
            tags=[shared.node_tag],
            labels={GCP.fleet_key: shared.fleet_label, **{k.replace(":", "-"): v for k, v in spec.tags.items()}},
            opts=child,  # name_prefix: a changed template is created before the old one goes
        )

    def group(
        kind: str,
        tpl: gcp.compute.InstanceTemplate,
        types: list[str],
        size: int,
        managed: bool,
        standby: WarmPoolSpec | None = None,
    ) -> gcp.compute.RegionInstanceGroupManager:
        extra = pulumi.ResourceOptions(ignore_changes=["targetSize"]) if managed else pulumi.ResourceOptions()
        pool: dict[str, object] = {}
        if standby is not None:
            # The standby pool: stopped VMs whose disks hold the agent, the image and the model. In
            # SCALE_OUT_POOL mode a resize up starts them first and the MIG refills the pool itself; a new
            # VM serves `initial_delay_sec` (boot and model load) before it is stopped into the pool.
            pool = {
                "standby_policy": C.RegionInstanceGroupManagerStandbyPolicyArgs(
                    mode="SCALE_OUT_POOL", initial_delay_sec=mapping.STANDBY_INITIAL_DELAY_S
                ),
                "target_stopped_size": standby.size,
            }
        return C.RegionInstanceGroupManager(
            f"{name}-{kind}-mig",
            base_instance_name=shared.base_names[kind],
            region=spec.region,
            distribution_policy_zones=spec.zones,
            versions=[C.RegionInstanceGroupManagerVersionArgs(instance_template=tpl.self_link_unique)],
            target_size=size,
            named_ports=[C.RegionInstanceGroupManagerNamedPortArgs(name="http", port=svc.port)],
            # Auto-healing judges liveness (/healthz): readiness is 503 while draining or loading, and
            # healing on it recreated every VM that drained or lagged.
            auto_healing_policies=C.RegionInstanceGroupManagerAutoHealingPoliciesArgs(
                health_check=shared.live.id, initial_delay_sec=600
            ),
            # BALANCED: spread over the zones but let a zone short of a type take fewer; instance
            # flexibility is not supported with the default EVEN shape.
            distribution_policy_target_shape="BALANCED",
            instance_flexibility_policy=C.RegionInstanceGroupManagerInstanceFlexibilityPolicyArgs(
                instance_selections=[
                    C.RegionInstanceGroupManagerInstanceFlexibilityPolicyInstanceSelectionArgs(
                        name=f"rank-{rank}", machine_types=[t], rank=rank
                    )
                    for rank, t in enumerate(types)
                ]
            ),
            # A new template (image, agent, settings) rolls through the group at once and spot-safely:
            # one replacement per zone comes up and must stay available `min_ready_sec` (boot, model from
            # peers) before an old VM goes; none is taken down first. Fixed surge: 0 or >= the zones.
            # (OPPORTUNISTIC left running VMs on the old template until something else replaced them.)
            update_policy=C.RegionInstanceGroupManagerUpdatePolicyArgs(
                type="PROACTIVE",
                minimal_action="REPLACE",
                replacement_method="SUBSTITUTE",
                instance_redistribution_type="NONE",
                max_surge_fixed=len(spec.zones),
                max_unavailable_fixed=0,
                min_ready_sec=mapping.ROLLOUT_MIN_READY_S,
            ),
            opts=pulumi.ResourceOptions.merge(child, extra),
            **pool,
        )

    migs: dict[str, gcp.compute.RegionInstanceGroupManager] = {}
    od_tpl = template("ondemand", g.on_demand_types[0], spot=False)
    if g.base:
        migs["base"] = group("base", od_tpl, g.on_demand_types, g.base, managed=False)
    spot_mig = None
    if g.spot_types:
        spot_tpl = template("spot", g.spot_types[0], spot=True)
        spot_mig = migs["spot"] = group("spot", spot_tpl, g.spot_types, g.spot_target, managed=True)
    warm = spec.capacity.warm_pool
    if spec.capacity.dynamic_on_demand_fallback:
        # With a standby pool the group keeps one type: a stopped VM restarts as the type it was made.
        types = g.on_demand_types[:1] if warm is not None else g.on_demand_types
        migs["fallback"] = group("fallback", od_tpl, types, 0, managed=True, standby=warm)

    if spot_mig is not None:
        scaling.declare(name, spec, g, spot_mig, child, tasks)
    return GcpFleetRegion(spec.region, migs)
