"""GcpGpuFleet: spot GPU VMs in regional managed instance groups behind a global HTTP load balancer.

Groups: an on-demand base group sized to `base_on_demand`, one spot group whose instance
flexibility policy ranks the spec's spot types in order (GCP then picks the best-ranked type it
can obtain in each zone — the native equivalent of AWS's capacity-optimized-prioritized; a group
per type would leave that choice to the controller), and an on-demand fallback group at 0. All
ranked types share one template; the flexibility policy overrides its machine type.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from spotstack.components import inputs, node, regions, tokens
from spotstack.components.component import fleet_options, image_reference, report, shared_outputs
from spotstack.components.gcp import controller, gateway, identity, load_balancer, mapping, queues, region
from spotstack.components.spec import FleetSpec
from spotstack.runtime.clouds import GCP

C = gcp.compute


@dataclass
class GcpGpuFleetArgs:
    spec: FleetSpec
    """The validated fleet spec (cloud must be gcp)."""
    image_url: pulumi.Input[str] | None = None
    """Full image reference; default: `<registry>/<repository>:<tag>` from the spec."""
    repository: gcp.artifactregistry.Repository | None = None
    """Artifact Registry repository the nodes may read (scopes the reader role)."""
    model_store: pulumi.Resource | None = None
    """The model bucket's component, when declared alongside: its IAM binding waits for it."""
    model_bucket: pulumi.Input[str] | None = None
    """The model bucket's name, e.g. your own `gcp.storage.Bucket(...).name`: replaces `spec.model_cache.bucket`."""
    network: pulumi.Input[str] | None = None
    """The VPC network (name or self link), e.g. your own `gcp.compute.Network(...).self_link`; with
    `subnetwork`, it replaces `spec.network` (default: the project's `default` network and a Cloud NAT)."""
    subnetwork: pulumi.Input[str] | None = None
    """The subnetwork in the fleet's region that nodes take their addresses from."""
    certificate: pulumi.Input[str] | None = None
    """An SSL certificate (self link or name), e.g. your `gcp.compute.ManagedSslCertificate(...).self_link`:
    HTTPS on 443 and a redirect on 80. Replaces `spec.service.tls`."""


class GcpGpuFleet(pulumi.ComponentResource):
    """A spot GPU fleet on GCP. Its child resources are exposed for a program to attach to: `backend` (the backend
    service), `groups` (role -> regional MIG: base, spot, fallback), `service_account` (the nodes') and
    `controller` (the Cloud Run function, None without a fallback)."""

    address: pulumi.Output[str]
    backend_service: pulumi.Output[str]
    service_account_email: pulumi.Output[str]
    warnings: list[str]

    def __init__(self, name: str, args: GcpGpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.GCP_GPU_FLEET, name, None, opts)
        spec = args.spec
        # The spec with its model bucket, which may be an Input (`model_bucket`): what names the bucket waits for it.
        resolved = inputs.model_spec("GcpGpuFleet", spec, args.model_bucket)
        child = fleet_options(self, spec, "gcp", opts)
        # Scoped to the project and stack: two stacks with a fleet `llm` in one GCP project read neither each other's
        # preemptions (the log sink filters on VM names) nor each other's peers (discovery lists by this label).
        fleet_label = node.stack_name(name, 63)
        base_names = {kind: node.stack_name(f"{name}-{kind}", 58) for kind in ("base", "spot", "fallback")}
        self.warnings = report(self, mapping.warnings(spec))
        svc = spec.service
        network: pulumi.Input[str] = spec.network.id if spec.network else "default"
        subnet: pulumi.Input[str] | None = spec.network.subnets[0] if spec.network and spec.network.subnets else None
        wired = inputs.require_together("GcpGpuFleet", network=args.network, subnetwork=args.subnetwork)
        if wired:
            assert args.network is not None and args.subnetwork is not None
            network = inputs.checked("GcpGpuFleet", "network", args.network, "a network name or self link")
            subnet = inputs.checked("GcpGpuFleet", "subnetwork", args.subnetwork, "a subnetwork name or self link")
        node_tag = f"{name}-node"

        sa, member = identity.declare(name, spec, resolved, args.model_store, args.repository, child)
        mc = spec.model_cache

        # Traffic only from Google's load balancers and health checkers; peer cache only between nodes.
        C.Firewall(
            f"{name}-allow-lb",
            network=network,
            source_ranges=mapping.LB_RANGES,
            target_tags=[node_tag],
            allows=[C.FirewallAllowArgs(protocol="tcp", ports=[str(svc.port), str(node.AGENT_PORT)])],
            opts=child,
        )
        if mc is not None:
            C.Firewall(
                f"{name}-allow-peers",
                network=network,
                source_tags=[node_tag],
                target_tags=[node_tag],
                allows=[C.FirewallAllowArgs(protocol="tcp", ports=[str(mc.peer_port)])],
                opts=child,
            )

        hc = C.HealthCheck(
            f"{name}-ready",
            check_interval_sec=5,
            timeout_sec=2,
            healthy_threshold=2,
            unhealthy_threshold=2,
            http_health_check=C.HealthCheckHttpHealthCheckArgs(port=node.AGENT_PORT, request_path=svc.readiness_path),
            opts=child,
        )

        # The peer-cache token: in Secret Manager, readable by this fleet's service account alone; the
        # node fetches it at boot with its own identity, so it never enters the instance metadata.
        token_secret: pulumi.Output[str] | None = None
        if mc is not None:
            token = random.RandomPassword(f"{name}-cache-token", length=48, special=False, opts=child)
            secret = gcp.secretmanager.Secret(
                f"{name}-cache-token",
                secret_id=node.secret_id(spec, "cache-token"),
                replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
                labels={GCP.fleet_key: fleet_label},
                opts=child,
            )
            gcp.secretmanager.SecretVersion(
                f"{name}-cache-token-v1", secret=secret.id, secret_data=token.result, opts=child
            )
            gcp.secretmanager.SecretIamMember(
                f"{name}-read-cache-token",
                secret_id=secret.secret_id,
                project=secret.project,
                role="roles/secretmanager.secretAccessor",
                member=member,
                opts=child,
            )
            token_secret = secret.name

        live = C.HealthCheck(
            f"{name}-live",
            check_interval_sec=10,
            timeout_sec=5,
            healthy_threshold=1,
            unhealthy_threshold=3,
            http_health_check=C.HealthCheckHttpHealthCheckArgs(port=node.AGENT_PORT, request_path="/healthz"),
            opts=child,
        )

        self.job_queues: queues.JobQueues | None = None
        """The fleet's Pub/Sub topics and subscriptions when it serves jobs."""
        if spec.jobs is not None:
            self.job_queues = queues.declare(name, spec, member, {GCP.fleet_key: spec.name}, child)

        image = image_reference(self, spec, args.image_url)
        jq = self.job_queues
        job_ids: pulumi.Output[dict[str, str] | None] = (
            pulumi.Output.all(jq.tasks.id, jq.input.id, jq.output.id, jq.dead.id).apply(
                lambda i: {"input": i[0], "input_topic": i[1], "output": i[2], "dead": i[3]}
            )
            if jq is not None
            else pulumi.Output.from_input(None)
        )

        def boot(img: str, secret_name: str | None, jobs: dict[str, str] | None, spec: FleetSpec) -> dict[str, str]:
            cfg = node.agent_config(
                spec,
                "gcp",
                model_scheme="gs",
                discovery="gcp",
                jobs=node.jobs_config(spec, "gs", jobs) if jobs else None,
                discovery_target=fleet_label,
            )
            secrets = (
                (node.Secret(node.CACHE_TOKEN_PATH, node.fetch_secret_command("gcp", secret_name)),)
                if secret_name
                else ()
            )
            return {
                # The accelerator image carries the NVIDIA driver only: the GPU set-up step adds Docker and the
                # container toolkit (it skips what an image has; a baked `machine_image` has it all).
                "user-data": node.cloud_init(
                    cfg, spec, img, mapping.docker_login(img), secrets, gpu_setup=spec.machine_image is None
                ),
                "shutdown-script": mapping.shutdown_script(node.AGENT_PORT),
            }

        def metadata(region_name: str) -> pulumi.Output[dict[str, str]]:
            """A region's boot metadata: the agent configured with its own region's part of the fleet."""
            return pulumi.Output.all(image, token_secret, job_ids, resolved).apply(
                lambda a: boot(a[0], a[1], a[2], next(p for p in regions.parts(a[3]) if p.region == region_name))
            )

        shared = region.Shared(
            network, subnet, spec.network is None and not wired, node_tag, fleet_label, sa, metadata, live, base_names
        )
        tasks = self.job_queues.tasks.name if self.job_queues is not None else None
        self.regions: dict[str, region.GcpFleetRegion] = {}
        """Each region's groups, the home region first (one, under the fleet's name, for a fleet in one region)."""
        for part in regions.parts(spec):
            self.regions[part.region] = region.declare(
                regions.resource_name(name, spec, part.region), part, shared, child, tasks
            )
        here = self.regions[spec.region]
        migs = here.migs
        backends = [m for r in self.regions.values() for m in r.migs.values()]

        front, front_group = (
            gateway.declare(name, spec, resolved, network, subnet, node_tag, fleet_label, child)
            if svc.gateway
            else (None, None)
        )
        lb = load_balancer.declare(name, spec, hc, backends, args.certificate, child, front)
        bs, address = lb.backend, lb.address
        self.certificate: pulumi.CustomResource | None = lb.certificate
        """The Google-managed certificate the fleet declared for `service.tls.domains`, if any."""
        self.controller_function: pulumi.Output[str] | None = None
        self.controller: pulumi.CustomResource | None = None
        self.controller_config: pulumi.Output[str] | None = None
        """The controller's configuration document (`spotstack controller once --config`)."""
        if "fallback" in migs:
            # The fallback groups move only when the controller moves them: it runs decide() every minute and at
            # each preemption of a spot VM, over every region (components/gcp/controller.py).
            fleet_migs = {k: r.migs for k, r in self.regions.items()}
            fn, doc = controller.declare(name, spec, fleet_migs, {k: base_names[k] for k in migs}, bs, child)
            self.controller_function, self.controller_config, self.controller = fn.name, doc, fn

        self.backend, self.groups, self.service_account = bs, migs, sa
        self.address = address.address
        self.backend_service = bs.name
        self.service_account_email = sa.email
        groups: dict[str, pulumi.Input[str]] = {k: m.name for k, m in migs.items()}
        if front_group is not None:
            groups["gateway"] = front_group.name
        q = self.job_queues
        self.shared = shared_outputs(
            address.address,
            self.controller_config,
            groups,
            sa.email,
            {"input": q.input.id, "output": q.output.id, "dead": q.dead.id} if q else None,
        )
        self.register_outputs(
            {
                **self.shared,
                "address": self.address,
                "backend_service": self.backend_service,
                "service_account_email": self.service_account_email,
                "controller_function": self.controller_function,
                "controller_config": self.controller_config,
                "job_topics": (
                    {
                        "input": self.job_queues.input.id,
                        "output": self.job_queues.output.id,
                        "dead": self.job_queues.dead.id,
                        "tasks": self.job_queues.tasks.id,
                    }
                    if self.job_queues
                    else None
                ),
            }
        )
