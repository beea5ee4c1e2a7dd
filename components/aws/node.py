"""What an AWS node is told at boot: ELBv2 deregistration, the ASG lifecycle hook, S3, SSM. Pure."""

from __future__ import annotations

from spotstack.components import node
from spotstack.components.spec import FleetSpec
from spotstack.runtime.bootstrap import Secret
from spotstack.runtime.config import AgentConfig, LifecycleConfig, LoadBalancerConfig

FLEET_TAG = node.FLEET_TAG
secret_id = node.secret_id
parameter_path = node.parameter_path
AGENT_PORT = node.AGENT_PORT
CACHE_TOKEN_PATH = node.CACHE_TOKEN_PATH
ROOT_VOLUME_GB = node.ROOT_VOLUME_GB
# Deep Learning Base AMI (NVIDIA driver, Docker, NVIDIA container toolkit), resolved at launch.
DEFAULT_AMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def lifecycle_hook_name(fleet: FleetSpec) -> str:
    return f"{fleet.name}-drain"


def launch_hook_name(fleet: FleetSpec) -> str:
    return f"{fleet.name}-warm"


def agent_config(
    fleet: FleetSpec,
    target_group_arn: str,
    agent_port: int = node.AGENT_PORT,
    launch_hook: str | None = None,
    queues: dict[str, str] | None = None,
) -> AgentConfig:
    """`queues`: the job queues' URLs (input, output, dead), when the fleet serves a queue."""
    return node.agent_config(
        fleet,
        "aws",
        model_scheme="s3",
        discovery="aws",
        load_balancer=LoadBalancerConfig(
            kind="elbv2", target_group_arn=target_group_arn, target_port=fleet.service.port, region=fleet.region
        ),
        # The group name is read from the instance's aws:autoscaling:groupName tag: one launch
        # template serves both the spot group and the on-demand fallback group.
        lifecycle=LifecycleConfig(
            enabled=True, hook_name=lifecycle_hook_name(fleet), launch_hook_name=launch_hook, region=fleet.region
        ),
        jobs=node.jobs_config(fleet, "s3", queues, protection=True) if queues else None,
    )


def ecr_login(image_url: str, region: str) -> list[str]:
    """The workload unit's login before each start: the agent's own (boto3, the instance profile), not the AWS CLI,
    which an image need not have. The registry's region is in its host name (an image in another region's ECR)."""
    import shlex

    from spotstack.runtime.bootstrap import VENV

    registry = image_url.split("/", 1)[0]
    if ".dkr.ecr." not in registry:
        return []
    where = registry.split(".dkr.ecr.", 1)[1].split(".", 1)[0] or region
    cmd = [f"{VENV}/bin/spotstack", "agent", "registry-login", "--cloud", "aws", "--region", where]
    return [shlex.join([*cmd, "--registry", registry])]


def token_fetch(parameter_name: str, region: str) -> Secret:
    # The agent's own fetcher (boto3), not the AWS CLI: a custom AMI may lack the CLI, and the same
    # command shape on every cloud keeps the boot path one thing to test.
    return Secret(CACHE_TOKEN_PATH, node.fetch_secret_command("aws", parameter_name, region))


def user_data(
    fleet: FleetSpec,
    target_group_arn: str,
    image_url: str,
    agent_port: int = node.AGENT_PORT,
    token_parameter: str | None = None,
    launch_hook: str | None = None,
    queues: dict[str, str] | None = None,
) -> str:
    """`launch_hook`: the warm-pool group's launching hook, which the agent completes once the node is READY
    (into the warm pool: model and image on disk, then AWS stops it; out of it: then it goes InService)."""
    cfg = agent_config(fleet, target_group_arn, agent_port, launch_hook, queues)
    secrets = (token_fetch(token_parameter, fleet.region),) if token_parameter else ()
    return node.cloud_init(cfg, fleet, image_url, ecr_login(image_url, fleet.region), secrets)
