"""`AgentConfig`: the contract between the components (which render it) and the node agent.

Components write it as JSON into cloud-init; the agent reads it from a file and lets
environment variables override any field (`SPOTSTACK_AGENT__DRAIN__TIMEOUT_S=60`). Invalid
combinations are rejected when the config is parsed, not halfway through a drain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spotstack.runtime.clouds import CLOUDS

Cloud = Literal["aws", "gcp", "alicloud"]
Discovery = Literal["static", "dns", "file", "aws", "gcp", "alicloud"]


ENV_PREFIX = "SPOTSTACK_AGENT__"
AGENT_PORT = 8471
"""The agent's own server (readiness, health, metrics, status): what load balancers probe."""
PEER_PORT = 8470
"""The peer cache's default port."""
RESERVED_PATHS = ("/healthz", "/metrics", "/status")
"""The agent serves these itself: a readiness path may not take one of them."""


def check_readiness_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must start with /")
    if path.rstrip("/") in RESERVED_PATHS:
        raise ValueError(
            f"{path!r} is the agent's own endpoint ({', '.join(RESERVED_PATHS)} are taken); use e.g. /ready"
        )
    return path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetadataConfig(_Model):
    base_url: str | None = None
    """Metadata server URL; default: the cloud's link-local address."""
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    """Seconds between polls where the cloud has no long-poll (AWS, Alibaba)."""
    timeout_s: float = Field(default=2.0, gt=0, le=30)
    """Per-request timeout; metadata servers answer in milliseconds or not at all."""
    token_ttl_s: int = Field(default=21600, ge=1, le=21600)
    """IMDSv2 session token lifetime requested (AWS) / Alibaba metadata token lifetime."""
    use_token: bool = True
    """Use the metadata token flow (required by IMDSv2-only launch templates)."""


class ReadinessConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(default=AGENT_PORT, ge=0, le=65535)
    """Port of the agent's own HTTP server (readiness, health, metrics, status); 0 picks a free one."""
    path: str = "/ready"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_readiness_path(v)

    workload_health_url: str | None = None
    """If set, readiness is also 503 while the workload's own health check fails."""


class LoadBalancerConfig(_Model):
    kind: Literal["none", "elbv2", "haproxy"] = "none"
    """How this node leaves rotation besides readiness: ELBv2 deregistration, HAProxy runtime API."""
    target_group_arn: str | None = None
    target_port: int | None = None
    region: str | None = None
    endpoint_url: str | None = None
    """Override the AWS API endpoint (tests use moto's server)."""
    haproxy_socket: str | None = None
    """HAProxy runtime API address: a unix socket path or host:port."""
    haproxy_backend: str | None = None
    haproxy_server: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> LoadBalancerConfig:
        if self.kind == "elbv2" and not self.target_group_arn:
            raise ValueError("kind elbv2 needs target_group_arn")
        if self.kind == "haproxy" and not (self.haproxy_socket and self.haproxy_backend and self.haproxy_server):
            raise ValueError("kind haproxy needs haproxy_socket, haproxy_backend and haproxy_server")
        return self


class InflightConfig(_Model):
    proxy_listen_port: int | None = Field(default=None, ge=0, le=65535)
    """If set, the agent proxies service traffic on this port to the workload and counts requests."""
    metrics_url: str | None = None
    """Else: a Prometheus endpoint of the workload exposing an in-flight gauge."""
    metrics_gauge: str = "inflight_requests"
    poll_interval_s: float = Field(default=0.1, gt=0)
    max_body_bytes: int = Field(default=64 << 20, ge=1)
    """The proxy's cap on a request body (413 beyond it); bodies are streamed, never held whole."""


class WorkloadConfig(_Model):
    port: int = Field(default=8080, ge=1, le=65535)
    stop_command: list[str] | None = None
    """Run this to tell the workload to stop (e.g. checkpoint). Else send `signal` to the pid."""
    pid_file: str | None = None
    signal: Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"] = "SIGTERM"


class LifecycleConfig(_Model):
    enabled: bool = False
    """Complete the ASG termination lifecycle action once drained (AWS)."""
    hook_name: str | None = None
    launch_hook_name: str | None = None
    """A launching hook to complete once the node is READY (AWS warm pools: the node finishes loading before
    AWS stops it into the pool, and goes InService only once it serves)."""
    group_name: str | None = None
    """Auto Scaling group; default: read from the instance tag aws:autoscaling:groupName."""
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    region: str | None = None
    endpoint_url: str | None = None

    @model_validator(mode="after")
    def _hook(self) -> LifecycleConfig:
        if self.enabled and not self.hook_name:
            raise ValueError("enabled needs hook_name")
        return self


class DrainConfig(_Model):
    timeout_s: float = Field(default=90.0, gt=0)
    """Most time to wait for in-flight requests once out of rotation."""
    safety_margin_s: float = Field(default=5.0, ge=0)
    """Finish this long before the notice's deadline."""
    deregistration_grace_s: float = Field(default=0.0, ge=0)
    """Wait after deregistering, for the load balancer to stop routing (its health check interval)."""
    serve_through_notice: bool = True
    """After a spot notice, keep serving until the deadline less the drain (timeout, margin, grace and
    `lead_s`), then drain as usual: the controller launches the replacement at the notice, and this node
    carries traffic meanwhile. A notice shorter than the drain (GCP's 30 s) drains at once either way."""
    lead_s: float = Field(default=5.0, ge=0)
    """Extra time before the drain must start, for the load balancer to see readiness go (health checks)."""


class CacheConfig(_Model):
    enabled: bool = False
    model_url: str | None = None
    """Where the model lives: s3://bucket/prefix, gs://..., oss://..., or a local directory."""
    dest: str = "/var/lib/spotstack/model"
    store_dir: str = "/dev/shm/spotstack"
    memory_limit_bytes: int = Field(default=16 << 30, gt=0)
    peer_port: int = Field(default=PEER_PORT, ge=0, le=65535)
    token_file: str | None = None
    """File holding the fleet's shared bearer token."""
    discovery: Discovery = "static"
    peers: list[str] = Field(default_factory=list)
    discovery_target: str | None = None
    """DNS name, peers file, or the fleet's tag value / group name, by discovery kind."""
    origin_endpoint: str | None = None
    """The object store's endpoint, where not the cloud's default (oss://: the region's internal endpoint)."""
    origin_region: str | None = None
    """The model bucket's region, where not the node's (a fleet across regions reads the home region's bucket):
    oss:// requests are signed for it."""
    origin_connections: int = Field(default=4, ge=1, le=64)
    """Parallel ranged reads from the object store (16 MiB chunks)."""
    connections_per_peer: int = Field(default=2, ge=1, le=16)
    """Parallel chunk transfers from each peer."""
    congestion_control: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,15}$")
    """TCP congestion control the peer cache sends chunks with (e.g. `cubic`); None: the host's."""
    manifest_digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The model's pinned manifest (`spotstack cache manifest` prints it): any other is refused."""
    discovery_endpoint: str | None = None
    """The API endpoint discovery calls, where not the cloud's default (a private endpoint, an emulator)."""
    advertise: str | None = None
    """host:port this node's peers know its cache by. Set: the node pulls as one of a swarm, splitting the
    origin's chunks with the peers that pull at the same time (`cache.schedule.Swarm`). `auto`: this node's
    private address (from the cloud's metadata, as discovery lists peers) and `peer_port`."""


class JobsConfig(_Model):
    """The queue worker (`runtime/jobs`): tasks from the input queue, results to the output queue."""

    enabled: bool = False
    queue: Literal["sqs", "pubsub", "mns"] = "sqs"
    """The queue service: SQS (queue URLs), Pub/Sub (input_url: the subscription, the others: topics), or Alibaba's
    MNS (queue URLs: `https://<account>.mns.<region>-internal.aliyuncs.com/queues/<name>`)."""
    input_url: str | None = None
    input_topic: str | None = None
    """Pub/Sub: the input topic, where a give-back publishes the task again."""
    output_url: str | None = None
    dead_letter_url: str | None = None
    results_url: str | None = None
    """Where each task's result is kept by id (s3://bucket/prefix, ...): what `spotstack job status` reads."""
    region: str | None = None
    endpoint_url: str | None = None
    """Override the queue API's endpoint (tests and the local fleet: moto's server)."""
    store_endpoint: str | None = None
    """The object store's endpoint for results and checkpoints, where not the cloud's default (oss://: the
    region's VPC-internal endpoint)."""
    http_path: str | None = "/task"
    """Tasks are POSTed to the workload at this path (on workload.port) ..."""
    command: list[str] | None = Field(default=None, min_length=1)
    """... or run as this command, the task's body on stdin (then http_path is not used)."""
    task_commands: bool = False
    """Tasks may carry their own command: whoever can send to the input queue runs commands on the node."""
    concurrency: int = Field(default=1, ge=1, le=256)
    lease_s: int = Field(default=60, ge=5, le=43200)
    """The lease (visibility timeout) a received task gets, renewed every third of it while it runs."""
    task_timeout_s: int = Field(default=900, ge=1, le=7 * 86400)
    max_attempts: int = Field(default=3, ge=1, le=100)
    """Failed runs before a task goes to the dead-letter queue (preempted runs do not count)."""
    retry_delay_s: float = Field(default=5.0, ge=0, le=900)
    wait_s: float = Field(default=5.0, ge=0, le=20)
    checkpoint_url: str | None = None
    """Training jobs checkpoint under <checkpoint_url>/<task id>/ (SPOTSTACK_CHECKPOINT_URL)."""
    resume_command: list[str] | None = Field(default=None, min_length=1)
    """Run this instead of the job's command when it has a checkpoint to resume from."""
    scale_in_protection: bool = False
    """AWS: protect this instance from its group's scale-in while a task runs."""
    workdir: str = "/var/lib/spotstack/jobs"

    @model_validator(mode="after")
    def _complete(self) -> JobsConfig:
        if self.enabled and not (self.input_url and self.output_url):
            raise ValueError("enabled needs input_url and output_url")
        if self.enabled and self.queue == "pubsub" and not self.input_topic:
            raise ValueError("queue pubsub needs input_topic (give-backs publish to it)")
        if self.http_path is not None and not self.http_path.startswith("/"):
            raise ValueError(f"http_path {self.http_path!r} must start with /")
        if self.enabled and self.command is None and self.http_path is None and not self.task_commands:
            raise ValueError("give http_path or command (or allow task_commands): tasks need a handler")
        return self


class AgentConfig(_Model):
    cloud: Cloud
    node_name: str | None = None
    region: str | None = None
    dry_run: bool = False
    """Log every mutating step (deregister, signal, lifecycle) instead of doing it."""
    metadata: MetadataConfig = Field(default_factory=MetadataConfig)
    readiness: ReadinessConfig = Field(default_factory=ReadinessConfig)
    load_balancer: LoadBalancerConfig = Field(default_factory=LoadBalancerConfig)
    inflight: InflightConfig = Field(default_factory=InflightConfig)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    drain: DrainConfig = Field(default_factory=DrainConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    watch_rebalance: bool = False
    """Treat an AWS rebalance recommendation as a notice (drain early) rather than only count it."""

    @property
    def metadata_url(self) -> str:
        return (self.metadata.base_url or CLOUDS[self.cloud].metadata_url).rstrip("/")

    @model_validator(mode="after")
    def _cross(self) -> AgentConfig:
        ports = {"readiness.port": self.readiness.port, "workload.port": self.workload.port}
        if self.cache.enabled:
            ports["cache.peer_port"] = self.cache.peer_port
        if self.inflight.proxy_listen_port is not None:
            ports["inflight.proxy_listen_port"] = self.inflight.proxy_listen_port
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port and port in seen:
                raise ValueError(f"{name} ({port}) is the same port as {seen[port]}: each server needs its own")
            seen[port] = name
        if self.lifecycle.enabled and self.cloud not in ("aws", "alicloud"):
            raise ValueError("lifecycle.enabled is for AWS Auto Scaling and Alibaba ESS groups only")
        if self.jobs.scale_in_protection and self.cloud != "aws":
            raise ValueError("jobs.scale_in_protection is for AWS Auto Scaling groups only")
        if self.load_balancer.kind == "elbv2" and self.cloud != "aws":
            raise ValueError("load_balancer.kind elbv2 is for AWS only")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_defaults=True)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """`SPOTSTACK_AGENT__DRAIN__TIMEOUT_S=60` -> {"drain": {"timeout_s": 60}}; values parse as JSON where they can."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        _set_path(out, path, value)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def load_agent_config(path: str | Path | None, environ: dict[str, str] | None = None) -> AgentConfig:
    """Read the config file (JSON or YAML), apply environment overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    data = _merge(data, env_overrides(dict(os.environ if environ is None else environ)))
    return AgentConfig.model_validate(data)
