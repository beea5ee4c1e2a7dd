"""Run the Pulumi program offline under Pulumi's mock engine and record what it declares.

No Pulumi CLI, no credentials, no network: the program is the same code `pulumi up` runs, and
the mock monitor stands in for the engine. Computed outputs (ARNs, DNS names) get
recognisable placeholders so that documents built from them (IAM policies, user data) render.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ACCOUNT = "123456789012"
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass
class Declared:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    provider: str = ""
    """The explicit provider's reference (`urn::id`); empty: the stack's default provider for the package."""


@dataclass
class PlanRun:
    resources: list[Declared]
    warnings: list[str]

    def children_of(self, urn: str) -> list[Declared]:
        return [r for r in self.resources if r.parent == urn]

    def find(self, type_: str, name: str | None = None) -> list[Declared]:
        return [r for r in self.resources if r.type == type_ and (name is None or r.name == name)]


def _aws_outputs(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    module = typ.split(":")[1].split("/")[0]
    kind = typ.rsplit(":", 1)[-1]
    service = {
        "lb": "elasticloadbalancing",
        "iam": "iam",
        "autoscaling": "autoscaling",
        "ecr": "ecr",
        "s3": "s3",
        "ec2": "ec2",
        "vpc": "ec2",
    }.get(module, module)
    out: dict[str, Any] = {"arn": f"arn:aws:{service}:{region}:{ACCOUNT}:{kind.lower()}/{name}"}
    if kind == "Group":
        out["name"] = inputs.get("name", name)
        out["arn"] = (
            f"arn:aws:autoscaling:{region}:{ACCOUNT}:autoScalingGroup:00000000-0000-0000-0000-000000000000:"
            f"autoScalingGroupName/{out['name']}"
        )
    elif kind == "TargetGroup":
        out["arn"] = f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT}:targetgroup/{name}/0123456789abcdef"
        out["arnSuffix"] = f"targetgroup/{name}/0123456789abcdef"
    elif kind == "LoadBalancer":
        out["arnSuffix"] = f"app/{name}/0123456789abcdef"
        out["dnsName"] = f"{name}-0123456789.{region}.elb.amazonaws.com"
    elif kind == "Repository":
        out["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{inputs.get('name', name)}"
        out["arn"] = f"arn:aws:ecr:{region}:{ACCOUNT}:repository/{inputs.get('name', name)}"
    elif kind == "Bucket":
        out["bucket"] = inputs.get("bucket", name)
        out["arn"] = f"arn:aws:s3:::{out['bucket']}"
    elif kind == "Parameter":
        out["name"] = inputs.get("name", name)
        out["arn"] = f"arn:aws:ssm:{region}:{ACCOUNT}:parameter{out['name']}"
    elif typ == "aws:acm/certificate:Certificate":
        h = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
        out["arn"] = f"arn:aws:acm:{region}:{ACCOUNT}:certificate/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    elif typ == "aws:sqs/queue:Queue":
        out["name"] = inputs.get("name", name)
        out["arn"] = f"arn:aws:sqs:{region}:{ACCOUNT}:{out['name']}"
        out["url"] = f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{out['name']}"
    elif kind == "LaunchTemplate":
        out["latestVersion"] = 1  # each update of a template makes a new version; groups follow it
    elif kind in ("Role", "InstanceProfile"):
        out["name"] = inputs.get("name", name)
        out["arn"] = f"arn:aws:iam::{ACCOUNT}:{kind[0].lower() + kind[1:]}/{out['name']}"
    return out


# EC2 ids carry their kind (`vpc-0a1b...`): a program's own VPC reaches a fleet that checks the id's form.
_EC2_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/natGateway:NatGateway": "nat",
}


def _aws_id(typ: str, name: str) -> str | None:
    prefix = _EC2_ID_PREFIX.get(typ)
    if prefix is None:
        return None
    return f"{prefix}-{_hex17(name)}"


def _hex17(seed: str) -> str:
    return hashlib.blake2b(seed.encode(), digest_size=9).hexdigest()[:17]


PROJECT = "plan-project"


def _gcp_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    kind = typ.rsplit(":", 1)[-1]
    rname = inputs.get("name") or (inputs["namePrefix"] + "plan" if "namePrefix" in inputs else name)
    link = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/{kind.lower()}s/{rname}"
    out: dict[str, Any] = {"project": PROJECT, "name": rname, "selfLink": link, "selfLinkUnique": f"{link}?uniq=1"}
    if kind == "Account":
        out["email"] = f"{inputs.get('accountId', name)}@{PROJECT}.iam.gserviceaccount.com"
    elif kind == "RegionInstanceGroupManager":
        out["instanceGroup"] = link.replace("regioninstancegroupmanagers", "instanceGroups")
    elif kind == "GlobalAddress":
        out["address"] = "203.0.113.10"
    elif kind == "Bucket":
        out["url"] = f"gs://{rname}"
    elif kind == "Repository":
        out["name"] = inputs.get("repositoryId", name)
    elif typ == "gcp:cloudfunctionsv2/function:Function":
        out["url"] = f"https://{inputs.get('location', 'region')}-{PROJECT}.cloudfunctions.net/{rname}"
    elif kind == "ProjectSink":
        out["writerIdentity"] = "serviceAccount:service-123456789@gcp-sa-logging.iam.gserviceaccount.com"
    elif kind == "IAMCustomRole":
        out["name"] = f"projects/{PROJECT}/roles/{inputs.get('roleId', name)}"
    elif typ == "gcp:pubsub/topic:Topic":
        out["id"] = f"projects/{PROJECT}/topics/{rname}"
    elif typ == "gcp:secretmanager/secret:Secret":
        # The provider's `name` is the API resource name that clients read versions under.
        out["name"] = f"projects/{PROJECT}/secrets/{inputs.get('secretId', name)}"
    return out


def _alicloud_outputs(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    kind = typ.rsplit(":", 1)[-1]
    out: dict[str, Any] = {"id": f"{kind.lower()}-{name}"}
    if typ == "alicloud:vpc/network:Network":
        out["id"] = f"vpc-{_hex17(name)}"  # VPC and vSwitch ids carry their kind, as on EC2
    elif typ == "alicloud:vpc/switch:Switch":
        out["id"] = f"vsw-{_hex17(name)}"
    if kind == "ApplicationLoadBalancer":
        out["address"] = "198.51.100.20"
    elif typ == "alicloud:alb/loadBalancer:LoadBalancer":
        out["dnsName"] = f"alb-plan{name}.{region or 'us-west-1'}.alb.aliyuncs.com"
    elif typ == "alicloud:ecs/eipAddress:EipAddress":
        out["ipAddress"] = f"203.0.113.{int(_hex17(name), 16) % 250 + 1}"  # TEST-NET-3: documentation addresses
    elif kind == "Role":
        out["name"] = inputs.get("roleName") or inputs.get("name") or name
        out["arn"] = f"acs:ram::1234567890123456:role/{out['name']}"
    elif kind == "Policy":
        out["policyName"] = inputs.get("policyName") or name
    elif kind == "Bucket":
        out["bucket"] = inputs.get("bucket", name)
    elif kind == "RegistryEnterpriseInstance":
        out["id"] = "cri-plan0000000000"
    return out


def _plain(value: Any) -> Any:
    """Assets and archives (a function's code) as what they hold: the plan is a JSON document."""
    if isinstance(value, pulumi.FileAsset | pulumi.FileArchive):
        return {"file": str(value.path)}
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}
    if isinstance(value, pulumi.AssetArchive):
        return {"archive": {k: _plain(v) for k, v in sorted(value.assets.items())}}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class PlanMocks(pulumi.runtime.Mocks):
    """Placeholder outputs for resources and canned answers for the few lookups the program makes."""

    def __init__(self) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.outputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.provider_region: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ.startswith("pulumi:providers:"):
            self.provider_region[rid] = str(inputs.get("region", ""))
        region = str(inputs.get("region") or self.provider_region.get((args.provider or "").rsplit("::", 1)[-1], ""))
        if args.typ.startswith("aws:"):
            extra = _aws_outputs(args.typ, args.name, inputs, region or "us-east-1")
            rid = _aws_id(args.typ, args.name) or rid
        elif args.typ.startswith("gcp:"):
            extra = _gcp_outputs(args.typ, args.name, inputs)
        elif args.typ.startswith("alicloud:"):
            extra = _alicloud_outputs(args.typ, args.name, inputs, region)
            rid = extra["id"]
        else:
            extra = {}
        if args.typ == "random:index/randomPassword:RandomPassword":
            extra = {"result": "plan-placeholder-not-a-secret"}
        if args.typ == "random:index/randomString:RandomString":
            # Random as pulumi_random's is: two plans (two users of one example) never share a suffix.
            extra = {"result": secrets.token_hex(8)[: int(inputs.get("length", 6))]}
        self.inputs[(args.typ, args.name)] = {k: _plain(v) for k, v in inputs.items()}
        self.outputs[(args.typ, args.name)] = extra
        return rid, {**inputs, **extra}

    # The SDK accepts a plain dict (no failures) though its annotation names only the tuple.
    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": f"vpc-{_hex17('default')}", "cidrBlock": "172.31.0.0/16"}
        if args.token == "aws:ec2/getSubnets:getSubnets":
            zones: list[str] = []
            for f in args.args.get("filters", []):
                if f.get("name") == "availability-zone":
                    zones = list(f.get("values", []))
            return {"id": "subnets", "ids": [f"subnet-{_hex17(z)}" for z in zones]}
        if args.token == "alicloud:cs/getRegistryEnterpriseInstances:getRegistryEnterpriseInstances":
            ids = list(args.args.get("ids") or [])
            found = [{"id": i, "name": "plan-acr", "region": "us-west-1"} for i in ids]
            return {"id": "instances", "ids": ids, "instances": found}
        if args.token == "alicloud:ecs/getImages:getImages":
            # The region's newest system image matching the lookup (a name of the form Alibaba publishes).
            image = "ubuntu_22_04_x64_20G_alibase_20251120.vhd"
            return {"id": "images", "ids": [image], "images": [{"id": image, "name": image, "osType": "linux"}]}
        if args.token == "alicloud:vpc/getNetworks:getNetworks":
            ids = list(args.args.get("ids") or [])
            return {"id": "vpcs", "ids": ids, "vpcs": [{"id": i, "cidrBlock": "10.0.0.0/8"} for i in ids]}
        if args.token == "gcp:organizations/getProject:getProject":
            return {"id": f"projects/{PROJECT}", "projectId": PROJECT, "number": "123456789012", "name": PROJECT}
        if args.token == "alicloud:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "1234567890123456", "arn": "acs:ram::1234567890123456:root", "id": "plan"}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/plan", "userId": "plan"}
        return {}


class RecordingMonitor(pmocks.MockMonitor):
    """The stock mock monitor, remembering each resource's parent for the tree."""

    def __init__(self, mocks: PlanMocks) -> None:
        super().__init__(mocks)
        self.plan_mocks = mocks
        self.order: list[tuple[str, str, str, str, bool, str]] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != STACK_TYPE:
            self.order.append(
                (response.urn, request.type, request.name, request.parent, bool(request.custom), request.provider)
            )
        return response


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def config_values(config: dict[str, Any]) -> dict[str, str]:
    """Stack-file values as Pulumi hands them to a program: strings as-is, the rest as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            out[key] = "[secret]"  # ciphertext cannot be read offline; the program only passes it on
        else:
            out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def run_offline(
    program: Callable[[], None], config: dict[str, Any], project: str = "spotstack", stack: str = "dev"
) -> PlanRun:
    """Run `program` with `config` (stack-file keys) under the mock engine and return what it declared."""
    import asyncio

    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # a caller's asyncio.run() closed and unset this thread's loop; Pulumi's runtime needs one
        asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = PlanMocks()
    monitor = RecordingMonitor(mocks)
    logger = logging.getLogger(f"spotstack.plan.{stack}")
    logger.propagate = False
    collect = _Collect()
    logger.addHandler(collect)
    try:
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, logger=logger, monitor=monitor)
        pulumi.runtime.set_all_config(config_values(config))
        with _without_source_positions():
            _sync_await(run_pulumi_func(program))
    except BaseException:
        _cancel_pending()  # the program's other registrations: left pending, they print noise at exit
        raise
    finally:
        logger.removeHandler(collect)
    resources = [
        Declared(
            urn, typ, name, parent, custom, mocks.inputs.get((typ, name), {}), mocks.outputs.get((typ, name), {}), prov
        )
        for urn, typ, name, parent, custom, prov in monitor.order
    ]
    return PlanRun(resources, collect.messages)


@contextlib.contextmanager
def _without_source_positions() -> Iterator[None]:
    """Pulumi's SDK extracts and converts the whole Python stack at every resource it registers, for the source
    position the engine shows in its messages: a quarter of an offline plan's CPU (py-spy), and the mock monitor
    drops it. Skipped while a plan runs offline; `pulumi up` never comes here. An SDK without the hook plans as is."""
    from pulumi.runtime import resource as sdk
    from pulumi.runtime.proto import source_pb2

    real = getattr(sdk, "_get_stack_trace", None)
    if real is None:
        yield
        return
    sdk._get_stack_trace = source_pb2.StackTrace  # an empty trace: no frames, no source position
    try:
        yield
    finally:
        sdk._get_stack_trace = real


def _cancel_pending() -> None:
    import asyncio

    loop = asyncio.get_event_loop()
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending and not loop.is_running():
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    # Pulumi's runtime keeps them in its settings: a later run in this process would await them.
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()


def release_event_loop() -> None:
    """Close the event loop Pulumi's runtime left set for this thread.

    Left to the garbage collector at interpreter exit, its finaliser can run after its self-pipe is
    gone and print "Exception ignored in BaseEventLoop.__del__ ... Invalid file descriptor: -1".
    Call once the process is done planning (the CLI registers it with atexit), not between runs.
    """
    import asyncio
    import contextlib
    import warnings

    with warnings.catch_warnings(), contextlib.suppress(RuntimeError):
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.get_event_loop()
        if not loop.is_running() and not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    asyncio.set_event_loop(None)
