"""The cloud-neutral fleet spec: what a user writes under `spotstack:fleets` in a stack file.

Every cloud's component reads this one model; none adds fields of its own. Field checks live here (pydantic), in
`spec_types.py` (value types and limits) and `field_checks.py` (the longer ones); rules that span fields or need the
catalog live in `validate.py`, which also turns every problem into a `path: reason` line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from spotstack.components.field_checks import check_cidr, check_cron, check_timezone, fill_home_region
from spotstack.components.spec_types import (
    MAX_PRICE,
    MAX_REGIONS,
    MAX_REPLICAS,
    Cloud,
    Domain,
    Name,
    NodePort,
    Path,
    Region,
    SnsArn,
    Zones,
)
from spotstack.runtime.config import PEER_PORT, check_readiness_path


class _Model(BaseModel):
    # Unknown keys are typos more often than not: reject them (the error names the key).
    # strict: YAML's `true` is not the number 1, and "3" is not 3; infinities and NaN are never a value.
    # The docstring under each field is its description (the multi-language schema, components/spec_schema.py).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )


class SpotMarket(_Model):
    """Run this type as spot. Give at most one cap; with none, the cap is the on-demand price."""

    bid: float | None = None
    """Cap as a fraction of the type's on-demand price (0.2 = pay at most 20%)."""
    max_price: float | None = Field(default=None, gt=0, le=MAX_PRICE)
    """Cap as an absolute price per instance-hour, in the catalog's currency."""

    @field_validator("bid")
    @classmethod
    def _bid_is_fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"must be > 0 and <= 1 (a fraction of the on-demand price; got {v})")
        return v

    @model_validator(mode="after")
    def _one_cap(self) -> SpotMarket:
        if self.bid is not None and self.max_price is not None:
            raise ValueError("give either bid or max_price, not both")
        return self


class OnDemandMarket(_Model):
    """Run this type on-demand only (never as spot)."""


class InstanceSpec(_Model):
    """One entry of the ordered instance list; the order is the priority."""

    type: Annotated[str, StringConstraints(min_length=1)]
    """The cloud's instance/machine type, e.g. g6.xlarge, g2-standard-4, ecs.gn7i-c8g1.2xlarge."""
    spot: SpotMarket | None = None
    """Allow spot for this type, with an optional price cap."""
    on_demand: OnDemandMarket | None = None
    """Use this type only on-demand."""
    on_demand_price: float | None = Field(default=None, gt=0, le=MAX_PRICE)
    """Override the catalog's hourly on-demand price (needed for types the catalog lacks)."""

    @model_validator(mode="after")
    def _one_market(self) -> InstanceSpec:
        if (self.spot is None) == (self.on_demand is None):
            raise ValueError("give exactly one market: spot or on_demand")
        return self

    @property
    def is_spot(self) -> bool:
        return self.spot is not None


class WarmPoolSpec(_Model):
    """Stopped instances kept ready for the on-demand fallback: the agent and the model are already on their
    disks, so a replacement serves in about 45 s instead of about 300 s (provisioning plus a cold load). Idle,
    they cost their disks only. AWS: an Auto Scaling warm pool on a single-type on-demand fallback group; GCP:
    the fallback group's standby pool (stopped VMs); Alibaba: an on-demand fallback scaling group in
    economical mode (instances stopped on scale-in, started first on scale-out)."""

    size: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    """Instances prepared, stopped or serving as fallback: a fallback replica takes one (more start cold, as
    without a pool) and gives it back, stopped with the model on disk, when it makes way for spot."""
    state: Literal["stopped", "running"] = "stopped"
    """`stopped` pays for disks only; `running` (AWS only) pays for the instances, for a start in seconds."""


class CapacitySpec(_Model):
    """How many replicas, and which run on-demand: bounds, the on-demand base, the on-demand share above it, the
    fallback to on-demand while spot is short, and its warm pool."""

    min: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    """Fewest replicas."""
    max: int = Field(ge=1, le=MAX_REPLICAS)
    """Most replicas serving the target (base and spot together). The on-demand fallback stands in for spot
    replicas that are not READY, on top of this: at most `max - base_on_demand` more, and only while spot is short."""
    desired: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    """Replicas to start with; defaults to min."""
    base_on_demand: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    """Replicas always kept on-demand, whatever spot does."""
    on_demand_above_base_percent: int = Field(default=0, ge=0, le=100)
    """Share of the replicas above the base that run on-demand."""
    dynamic_on_demand_fallback: bool = False
    """Start an on-demand replica for each wanted spot replica that is not ready."""
    warm_pool: WarmPoolSpec | None = None
    """Keep stopped on-demand instances with the model on disk for the fallback (needs the fallback on)."""

    @property
    def desired_or_min(self) -> int:
        return self.min if self.desired is None else self.desired


class TlsSpec(_Model):
    """HTTPS on the load balancer (port 443); plain HTTP (port 80) then answers with a permanent redirect."""

    certificate: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    """AWS: an ACM certificate ARN in the fleet's region. GCP: an SSL certificate's name or self link.
    Alibaba: a Certificate Management Service certificate id (e.g. `12345-us-west-1`)."""
    domains: list[Domain] = Field(default_factory=list, max_length=100)
    """GCP only: declare a Google-managed certificate for these domains (point their DNS at the address)."""


class GatewaySpec(_Model):
    """The fleet gateway (`spotstack gateway`) in front of the replicas: least-load routing, and streams continued
    on another replica when theirs is preempted. For OpenAI-compatible engines (vLLM, SGLang, TGI)."""

    replicas: int = Field(default=2, ge=1, le=20)
    """Gateway processes (instances on a cloud), spread across zones."""
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    """The gateways' instance type (on-demand, CPU only); the cloud's default (`components/gateway.py`) if unset."""
    on_demand_price: float | None = Field(default=None, gt=0, le=MAX_PRICE)
    """The type's hourly on-demand price, for the plan's bill, where the table has none (a type you name, or
    Alibaba's default, whose per-region price is on its console only)."""
    continue_as: Literal["token_ids", "text"] = "token_ids"
    """How a continuation carries the tokens already sent: token ids (vLLM's `return_token_ids`) or text."""
    api_keys: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    """Where the API keys are, one a line, in a secret you create: an SSM SecureString parameter's name (AWS), a
    Secret Manager secret's id (GCP), an OOS encrypted parameter's name (Alibaba); on a local fleet a file (made with
    one key if absent). Without it the gateway takes every request."""
    rate_limit: float | None = Field(default=None, gt=0, le=100_000)
    """Requests per second per API key."""


class ServiceSpec(_Model):
    """How clients reach the replicas: the model server's port and readiness path, the drain, the longest request,
    the load balancer (public or internal, who may reach it, TLS) and the optional fleet gateway."""

    port: NodePort = 8080
    """Port the model server listens on."""
    readiness_path: Annotated[Path, AfterValidator(check_readiness_path)] = "/ready"
    """Path the load balancer probes; the agent serves it and flips it to 503 when draining."""

    drain_timeout: int = Field(default=90, ge=1, le=3600)
    """Seconds to wait for in-flight requests after the node leaves rotation."""
    max_request_s: int = Field(default=600, ge=1, le=86400)
    """The longest a request may take, its whole answer streamed: the load balancers' timeouts (GCP backend
    service `timeout_sec`, default 30 s; Alibaba ALB listener `request_timeout`, at most 600 s, default 60 s; the
    AWS ALB idle timeout, default 60 s). An LLM generation routinely runs past a minute."""
    public: bool = True
    """Whether the load balancer faces the internet (else internal)."""
    allowed_cidrs: list[Annotated[str, AfterValidator(check_cidr)]] = Field(
        default_factory=lambda: ["0.0.0.0/0"], min_length=1, max_length=50
    )
    """Who may reach the load balancer."""
    tls: TlsSpec | None = None
    """HTTPS with a certificate (a component's `certificate` argument, an Input, may give it instead)."""
    gateway: GatewaySpec | None = None
    """A fleet gateway in front of the replicas (LLM streams continued across preemptions)."""


class ScheduleSpec(_Model):
    """A scheduled floor: at least `min` replicas from each `cron` time, for the schedule window."""

    name: Name
    cron: Annotated[str, AfterValidator(check_cron)]
    """Five-field cron expression, in `timezone`."""
    min: int = Field(ge=0, le=MAX_REPLICAS)
    max: int = Field(ge=1, le=MAX_REPLICAS)
    desired: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    timezone: Annotated[str, AfterValidator(check_timezone)] = "UTC"


class QueueScalingSpec(_Model):
    """Scale on a queue of your own: replicas = backlog / `backlog_per_instance`."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """Queue whose backlog drives scaling (SQS queue name on AWS)."""
    backlog_per_instance: int = Field(ge=1, le=1_000_000)
    """Messages one replica should have waiting, at most."""


class ScalingSpec(_Model):
    """Autoscaling between `capacity.min` and `capacity.max`: requests per second per replica, a queue's backlog,
    schedules."""

    target_qps_per_replica: float | None = Field(default=None, gt=0, le=1_000_000)
    """Requests per second one replica should serve; drives target tracking."""
    queue: QueueScalingSpec | None = None
    """Scale on queue backlog per instance instead of (or besides) QPS."""
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    """Scheduled changes of min/max (e.g. working hours)."""


class ImageSpec(_Model):
    """The workload's container image and the registry it comes from (declared by the fleet, or yours)."""

    repository: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/-]*$")]
    """Image repository name (without registry host)."""
    tag: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] = "latest"
    registry: str | None = None
    """Registry host; empty means the registry spotstack declares for this fleet."""
    create_registry: bool = True
    """Declare the image registry (repository) along with the fleet."""
    pull_through_upstream: str | None = None
    """Upstream registry to cache (e.g. public.ecr.aws), where the cloud supports it."""
    registry_instance: Annotated[str, StringConstraints(pattern=r"^cri-[a-z0-9]+$")] | None = None
    """Alibaba Cloud: the existing Container Registry Enterprise Edition instance (`cri-...`) to hold the
    repository. ACR EE is sold by monthly subscription, so spotstack reuses one unless told to buy one."""
    create_registry_instance: bool = False
    """Alibaba Cloud: buy a new ACR EE instance for this fleet (a monthly subscription; manual renewal, protected)."""


class ModelCacheSpec(_Model):
    """The model files: where they live in the object store, and the peer cache that serves them from the nodes'
    memory to the next node that starts."""

    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None = None
    """Object-store bucket holding the model files. A program may leave it out and pass the bucket as the fleet's
    `model_bucket` Input instead; a stack's fleets must name it."""
    prefix: Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9._=+-]+/)*[A-Za-z0-9._=+-]*$", max_length=512)] = ""
    """Key prefix of the model inside the bucket: plain path segments, so the IAM grant on it stays narrow."""
    create_bucket: bool = True
    """Declare the bucket (model store) along with the fleet."""
    memory_cache_gib: float | None = Field(default=None, gt=0, le=4096)
    """Memory the node's peer cache may use; default: half the smallest instance type's memory, at most 16."""
    peer_port: NodePort = PEER_PORT
    """Port the agent serves cached chunks to peers on."""
    origin_connections: int = Field(default=4, ge=1, le=64)
    """Parallel ranged reads a node makes from the bucket (16 MiB each)."""
    peer_connections: int = Field(default=2, ge=1, le=16)
    """Parallel chunk transfers a node makes from each peer."""
    congestion_control: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,15}$")] | None = None
    """TCP congestion control the nodes send chunks to each other with (e.g. `cubic`); default: the image's. On
    an image with BBR but without the fq qdisc, TCP paces each connection with a timer interrupt per burst, which
    costs the CPU a node's bulk copies need (on a 2-core test host the pull was 13% faster with cubic)."""
    manifest_digest: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    """Pin the model: the manifest's digest as `spotstack cache manifest` prints it; nodes refuse any other
    manifest, from the bucket or from a peer."""


class TrainingSpec(_Model):
    """Long jobs that checkpoint (tasks submitted with `training: true`): each gets a checkpoint location,
    `<jobs bucket>/<prefix>checkpoints/<task id>/` (SPOTSTACK_CHECKPOINT_URL), is told to checkpoint on a notice,
    and resumes on another replica from its latest complete checkpoint."""

    resume_command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None, min_length=1, max_length=64
    )
    """Run this instead of the job's command when a checkpoint exists (default: the same command, which reads
    `Checkpoints.latest()`)."""


class JobsSpec(_Model):
    """Serve a queue: tasks in an input queue, results to an output queue, a dead-letter queue for tasks that
    fail `max_attempts` times. AWS: SQS; GCP: Pub/Sub; Alibaba Cloud: MNS."""

    http_path: Annotated[Path, AfterValidator(check_readiness_path)] | None = "/task"
    """Each task's body is POSTed to the workload here (on service.port) ..."""
    command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None, min_length=1, max_length=64
    )
    """... or each task runs this command, its body on stdin (http_path is then unused)."""
    task_commands: bool = False
    """Tasks may carry their own command. Whoever may send to the input queue then runs commands on the nodes."""
    concurrency: int = Field(default=1, ge=1, le=256)
    """Tasks one replica runs at once."""
    lease: int = Field(default=60, ge=10, le=43200)
    """Seconds a taken task stays hidden from other replicas; the worker renews it every third while it runs."""
    task_timeout: int = Field(default=900, ge=1, le=7 * 86400)
    """Seconds one run of a task may take."""
    max_attempts: int = Field(default=3, ge=1, le=100)
    """Failed runs before a task goes to the dead-letter queue (runs given back on a notice do not count)."""
    retention: int = Field(default=4 * 86400, ge=600, le=14 * 86400)
    """Seconds an unfinished task (or an unread result) is kept."""
    backlog_per_instance: int | None = Field(default=None, ge=1, le=1_000_000)
    """Scale on the input queue: at most this many waiting tasks per replica."""
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    """Object-store bucket for results (by task id) and training checkpoints."""
    prefix: Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9._=+-]+/)*$", max_length=256)] = "jobs/"
    create_bucket: bool = True
    training: TrainingSpec | None = None
    """Allow training jobs (checkpointed, resumed after a preemption)."""


class NotificationsSpec(_Model):
    """Who hears when the fleet's alarms fire (the controller failing: the groups keep their last sizes)."""

    emails: list[Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list, max_length=10
    )
    """Addresses the fleet subscribes (AWS: an SNS topic's email subscriptions, confirmed from the mail; GCP: email
    notification channels; Alibaba: alarm contacts, activated from the mail)."""
    sns_topic_arn: SnsArn | None = None
    """AWS: an SNS topic of yours (a pager, a chat integration)."""
    gcp_channels: list[Annotated[str, StringConstraints(pattern=r"^projects/[^/]+/notificationChannels/[^/]+$")]] = (
        Field(default_factory=list, max_length=10)
    )
    """GCP: notification channels of yours (`projects/P/notificationChannels/ID`)."""
    alicloud_contact_group: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    """Alibaba Cloud: a CloudMonitor alarm contact group of yours."""


class NetworkSpec(_Model):
    """A network of your own to place the fleet in (default: the cloud's default network)."""

    id: str
    """VPC (AWS, Alibaba) or network (GCP) to place the fleet in; default: the cloud's default."""
    subnets: list[str] = Field(default_factory=list)
    """Subnets / vSwitches / subnetworks, one or more per zone."""


class RegionSpec(_Model):
    """One region of a fleet that spans several: its zones and, where you bring one, its network."""

    region: Region
    zones: Zones
    """The region's zones the fleet may use."""
    network: NetworkSpec | None = None
    """A network of yours in this region (default: the region's default network)."""


class FleetSpec(_Model):
    """One fleet: a spot GPU group with its on-demand fallback, load balancer, autoscaling, controller and
    identity on one cloud, in one region or several, as `spotstack:fleets` lists them."""

    name: Name
    """Fleet name; every resource of the fleet is named from it."""
    cloud: Cloud
    region: Region
    """The fleet's region. With `regions`, filled in: the home region."""
    zones: Zones
    """The region's zones the fleet may use. With `regions`, filled in: the home region's."""
    regions: list[RegionSpec] = Field(default_factory=list, max_length=MAX_REGIONS)
    """Several regions, each with its zones (instead of `region` and `zones`): spot capacity is taken wherever it
    is, behind one endpoint (docs/multi-region.md), on every cloud."""
    home: Region | None = None
    """With `regions`: where the controller, its memory, the front door's state and the model store live
    (default: the first region)."""
    instances: list[InstanceSpec] = Field(min_length=1)
    capacity: CapacitySpec
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    image: ImageSpec
    model_cache: ModelCacheSpec | None = None
    notifications: NotificationsSpec | None = None
    """Who hears the fleet's alarms; without it, the alarms fire to nobody (the plan says so)."""
    jobs: JobsSpec | None = None
    """Take tasks from a queue (besides or instead of serving the load balancer)."""
    network: NetworkSpec | None = None
    machine_image: str | None = None
    """Boot image; default: the cloud's GPU image with NVIDIA drivers and Docker."""
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_region_form(cls, data: Any) -> Any:
        """`regions` fills in `region`, `zones` and `network` from the home region, so everything that serves one
        region reads the home region; `region` and `zones` alone mean one region, as before."""
        return fill_home_region(data)

    @property
    def spot_instances(self) -> list[InstanceSpec]:
        return [i for i in self.instances if i.is_spot]

    @property
    def region_list(self) -> list[RegionSpec]:
        """Every region of the fleet, the home region first; the one-region form gives one."""
        if not self.regions:
            return [RegionSpec(region=self.region, zones=self.zones, network=self.network)]
        return sorted(self.regions, key=lambda r: r.region != self.region)

    @property
    def multi_region(self) -> bool:
        return len(self.regions) > 1
