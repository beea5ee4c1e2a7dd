"""What any cloud's node is told at boot: its AgentConfig and the cloud-init that starts it. Pure.

Each cloud's component passes what only it knows (its load balancer, lifecycle hook, model URL
scheme, peer discovery); everything else comes from the spec the same way on every cloud.
"""

from __future__ import annotations

from typing import Any, Literal

from spotstack.components import catalog
from spotstack.components.spec import FleetSpec
from spotstack.runtime.bootstrap import VENV, WHEEL_DIR, AgentInstall, Workload, render_cloud_init
from spotstack.runtime.bootstrap import Secret as Secret
from spotstack.runtime.clouds import AWS, CLOUDS, PROFILES
from spotstack.runtime.config import AGENT_PORT as AGENT_PORT
from spotstack.runtime.config import (
    AgentConfig,
    CacheConfig,
    Cloud,
    Discovery,
    DrainConfig,
    JobsConfig,
    LifecycleConfig,
    LoadBalancerConfig,
    ReadinessConfig,
    WorkloadConfig,
)

CACHE_TOKEN_PATH = "/etc/spotstack/cache-token"
FLEET_TAG = AWS.fleet_key
"""The tag every node of an AWS or Alibaba fleet carries (GCP's label: `GCP.fleet_key`)."""
ROOT_VOLUME_GB = 200
"""Every node's boot disk: the image, the Docker image and the model on disk (what a warm pool keeps)."""


def agent_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spotstack")
    except PackageNotFoundError:
        return None


def agent_install(cloud: str, fleet: FleetSpec | None = None) -> AgentInstall:
    """How the fleet's nodes get the agent: the wheel of the spotstack deploying them, which the fleet publishes
    to its model bucket (`components/agent_wheel.py`), when it has one; else spotstack pinned to that version from
    the package index (the plan warns). Either way a new release never changes a running fleet's next boot."""
    extra = CLOUDS[cloud].agent_extra
    mc = fleet.model_cache if fleet is not None else None
    if fleet is None or mc is None:
        return AgentInstall(extra, agent_version())
    from spotstack.components.agent_wheel import build

    w = build()
    assert mc.bucket is not None, "the model bucket is resolved (components/inputs.py) before a boot document"
    return AgentInstall(
        extra,
        w.version,
        sha256=w.sha256,
        wheel_url=CLOUDS[cloud].url(mc.bucket, w.key),
        wheel_file=f"{WHEEL_DIR}/{w.filename}",
        # The store's region: across regions the home region's bucket is read from every region.
        region=(fleet.home or fleet.region) if cloud != "gcp" else None,
    )


def agent_config(
    fleet: FleetSpec,
    cloud: Cloud,
    *,
    model_scheme: str,
    discovery: Discovery,
    load_balancer: LoadBalancerConfig | None = None,
    lifecycle: LifecycleConfig | None = None,
    jobs: JobsConfig | None = None,
    discovery_target: str | None = None,
) -> AgentConfig:
    """`discovery_target`: what discovery matches peers by (default: the fleet's name, its tag on AWS and Alibaba;
    GCP's stack-scoped label value)."""
    mc = fleet.model_cache
    cache = (
        CacheConfig(
            enabled=True,
            model_url=f"{model_scheme}://{mc.bucket}/{mc.prefix}",
            memory_limit_bytes=int(
                catalog.cache_gib(fleet.cloud, [i.type for i in fleet.instances], mc.memory_cache_gib) * (1 << 30)
            ),
            peer_port=mc.peer_port,
            token_file=CACHE_TOKEN_PATH,
            discovery=discovery,
            discovery_target=discovery_target or fleet.name,
            origin_connections=mc.origin_connections,
            connections_per_peer=mc.peer_connections,
            congestion_control=mc.congestion_control,
            manifest_digest=mc.manifest_digest,
            # Nodes that start together split the origin's chunks: each knows itself as discovery lists it.
            advertise="auto" if discovery in ("aws", "gcp", "alicloud") else None,
        )
        if mc is not None
        else CacheConfig()
    )
    svc = fleet.service
    return AgentConfig(
        cloud=cloud,
        region=fleet.region,
        readiness=ReadinessConfig(
            port=AGENT_PORT,
            path=svc.readiness_path,
            workload_health_url=f"http://127.0.0.1:{svc.port}{svc.readiness_path}",
        ),
        load_balancer=load_balancer or LoadBalancerConfig(),
        workload=WorkloadConfig(port=svc.port),
        lifecycle=lifecycle or LifecycleConfig(),
        drain=drain_config(fleet),
        cache=cache,
        jobs=jobs or JobsConfig(),
    )


def drain_config(fleet: FleetSpec) -> DrainConfig:
    """The node's drain settings (what the controller's policy must credit a noticed replica with, too)."""
    return DrainConfig(timeout_s=float(fleet.service.drain_timeout))


def jobs_config(
    fleet: FleetSpec,
    scheme: str,
    queues: dict[str, str],
    *,
    protection: bool = False,
    service: Literal["sqs", "pubsub", "mns"] | None = None,
) -> JobsConfig:
    """The node's worker for the fleet's queues (`queues`: input, output and dead-letter URLs; on Pub/Sub the
    input subscription, the topics and `input_topic`). `service`: sqs, pubsub or mns (default: from `queues`)."""
    j = fleet.jobs
    assert j is not None
    root = f"{scheme}://{j.bucket}/{j.prefix}"
    return JobsConfig(
        enabled=True,
        queue=service or ("pubsub" if "input_topic" in queues else "sqs"),
        input_topic=queues.get("input_topic"),
        input_url=queues["input"],
        output_url=queues["output"],
        dead_letter_url=queues["dead"],
        results_url=f"{root}results",
        checkpoint_url=f"{root}checkpoints" if j.training is not None else None,
        region=fleet.region,
        http_path=None if j.command else j.http_path,
        command=j.command,
        task_commands=j.task_commands,
        concurrency=j.concurrency,
        lease_s=j.lease,
        task_timeout_s=j.task_timeout,
        max_attempts=j.max_attempts,
        resume_command=j.training.resume_command if j.training else None,
        scale_in_protection=protection,
    )


def cloud_init(
    cfg: AgentConfig,
    fleet: FleetSpec,
    image_url: str,
    login: list[str],
    secrets: tuple[Secret, ...] = (),
    gpu_setup: bool = False,
) -> str:
    workload = Workload(
        image=image_url, port=fleet.service.port, login=login, wait_for_model=fleet.model_cache is not None
    )
    agent = agent_install(cfg.cloud, fleet)
    text = render_cloud_init(cfg, workload, agent, secrets=secrets, gpu_setup=gpu_setup)
    limit = CLOUDS[cfg.cloud].user_data_limit
    if len(text.encode()) > limit:
        raise ValueError(
            f"fleet {fleet.name}: the node's boot document is {len(text.encode())} bytes; {cfg.cloud} takes at most "
            f"{limit} (shorten the fleet's settings, e.g. schedules or job commands)"
        )
    return text


def job_queue_name(fleet: FleetSpec, role: str, project: str | None = None, stack: str | None = None) -> str:
    """A job queue's name (`input`, `output`, `dead`; on GCP a topic's) as the components declare it and
    `spotstack job` finds it, within the queue service's limit (SQS 80, Pub/Sub 255, MNS 120)."""
    limit = PROFILES[fleet.cloud].queue_name_limit
    if fleet.cloud in ("gcp", "alicloud"):
        return stack_name(f"{fleet.name}-jobs-{role}", limit, project, stack)
    return secret_id(fleet, f"jobs-{role}", project, stack)[:limit]  # SQS: the names deployed stacks have


def secret_id(fleet: FleetSpec, what: str, project: str | None = None, stack: str | None = None) -> str:
    """A name unique per project, stack and fleet (a fixed name collides across stacks in one account). Outside a
    Pulumi program (`spotstack controller`), pass the project and stack to get the same name."""
    import re

    project, stack = _where(project, stack)
    raw = f"spotstack-{project}-{stack}-{fleet.name}-{what}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:200]


def _where(project: str | None, stack: str | None) -> tuple[str, str]:
    if project is not None and stack is not None:
        return project, stack
    import pulumi

    return pulumi.get_project(), pulumi.get_stack()


def global_name(resource: str, what: str, limit: int, opts: Any) -> Any:
    """A name unique across every account in the world (OSS buckets, SLS projects): `stack_name` cut to leave room,
    and a random suffix made once and kept in the stack's state (`pulumi_random`), so everyone who runs the example
    gets a name of their own and this stack keeps its own across updates."""
    import pulumi
    import pulumi_random as random

    suffix = random.RandomString(f"{resource}-suffix", length=6, special=False, upper=False, opts=opts)
    return pulumi.Output.concat(stack_name(what, limit - 7), "-", suffix.result)


def stack_name(what: str, limit: int, project: str | None = None, stack: str | None = None) -> str:
    """`<project>-<stack>-<what>`, lowercase letters, digits and hyphens, starting with a letter, at most `limit`
    characters (cut with a hash of the whole so two long names stay apart). For names a cloud keeps unique per
    account or project (IAM roles, service accounts, registries): a fixed name collides with another stack's."""
    import hashlib
    import re

    project, stack = _where(project, stack)
    raw = f"{project}-{stack}-{what}"
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", raw.lower())).strip("-")
    if not name[:1].isalpha():
        name = "s-" + name
    if len(name) > limit:
        name = name[: limit - 7].rstrip("-") + "-" + hashlib.sha1(raw.encode()).hexdigest()[:6]
    return name


def parameter_path(fleet: FleetSpec, what: str) -> str:
    """A hierarchical name (SSM parameters) scoped like `secret_id`: /spotstack/<project>/<stack>/<fleet>/<what>."""
    import re

    import pulumi

    parts = [pulumi.get_project(), pulumi.get_stack(), fleet.name, what]
    return "/spotstack/" + "/".join(re.sub(r"[^A-Za-z0-9_.-]", "-", p) for p in parts)


def fetch_secret_command(cloud: Cloud, name: str, region: str | None = None) -> str:
    """The boot's command that prints a secret with the node's identity (the agent's own fetcher, so it
    runs once the agent is installed; the boot's retry loop covers the time before)."""
    import shlex

    cmd = [f"{VENV}/bin/spotstack", "agent", "fetch-secret", "--cloud", cloud, "--name", name]
    if region:
        cmd += ["--region", region]
    return shlex.join(cmd)
