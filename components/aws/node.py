"""What an AWS node is told at boot: its AgentConfig and the cloud-init that starts it. Pure."""

from __future__ import annotations

from spotstack.components.spec import FleetSpec
from spotstack.runtime.bootstrap import Secret, Workload, render_cloud_init
from spotstack.runtime.config import (
    AgentConfig,
    CacheConfig,
    DrainConfig,
    LifecycleConfig,
    LoadBalancerConfig,
    ReadinessConfig,
    WorkloadConfig,
)

# The tag every node of a fleet carries; peer discovery filters describe_instances on it.
FLEET_TAG = "spotstack:fleet"
# Deep Learning Base AMI (NVIDIA driver, Docker, NVIDIA container toolkit), resolved at launch.
DEFAULT_AMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def lifecycle_hook_name(fleet: FleetSpec) -> str:
    return f"{fleet.name}-drain"


def agent_config(fleet: FleetSpec, target_group_arn: str, agent_port: int = 8471) -> AgentConfig:
    mc = fleet.model_cache
    cache = (
        CacheConfig(
            enabled=True,
            model_url=f"s3://{mc.bucket}/{mc.prefix}",
            memory_limit_bytes=int(mc.memory_cache_gib * (1 << 30)),
            peer_port=mc.peer_port,
            token_file=CACHE_TOKEN_PATH,
            discovery="aws",
            discovery_target=fleet.name,
        )
        if mc is not None
        else CacheConfig()
    )
    svc = fleet.service
    return AgentConfig(
        cloud="aws",
        region=fleet.region,
        readiness=ReadinessConfig(
            port=agent_port,
            path=svc.readiness_path,
            workload_health_url=f"http://127.0.0.1:{svc.port}{svc.readiness_path}",
        ),
        load_balancer=LoadBalancerConfig(
            kind="elbv2", target_group_arn=target_group_arn, target_port=svc.port, region=fleet.region
        ),
        workload=WorkloadConfig(port=svc.port),
        # The group name is read from the instance's aws:autoscaling:groupName tag: one launch
        # template serves both the spot group and the on-demand fallback group.
        lifecycle=LifecycleConfig(enabled=True, hook_name=lifecycle_hook_name(fleet), region=fleet.region),
        drain=DrainConfig(timeout_s=float(svc.drain_timeout)),
        cache=cache,
    )


def ecr_login(image_url: str, region: str) -> list[str]:
    registry = image_url.split("/", 1)[0]
    if ".dkr.ecr." not in registry:
        return []
    return [f"aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry}"]


CACHE_TOKEN_PATH = "/etc/spotstack/cache-token"


def token_fetch(parameter_name: str, region: str) -> Secret:
    return Secret(
        CACHE_TOKEN_PATH,
        f"aws ssm get-parameter --region {region} --name {parameter_name} --with-decryption "
        "--query Parameter.Value --output text",
    )


def user_data(
    fleet: FleetSpec, target_group_arn: str, image_url: str, agent_port: int = 8471, token_parameter: str | None = None
) -> str:
    cfg = agent_config(fleet, target_group_arn, agent_port)
    workload = Workload(image=image_url, port=fleet.service.port, login=ecr_login(image_url, fleet.region))
    secrets = (token_fetch(token_parameter, fleet.region),) if token_parameter else ()
    return render_cloud_init(cfg, workload, secrets=secrets)
