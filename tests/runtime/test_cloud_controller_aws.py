"""The cloud controller on AWS, end to end on moto: a fleet's groups, instances, target group health and state
store; a spot stockout makes it grow the fallback group, which shrinks only once spot has served for the hold.

Where moto falls short it is said next to the workaround: moto launches an Auto Scaling group's spot instances
without `InstanceLifecycle: spot` (a botocore after-call hook marks the main group's non-base instances, as AWS
would report them), and records no scaling activities (the refused launch arrives as its EventBridge event).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spotstack.runtime.controller.adaptors.aws import AwsFleet, DynamoStore
from spotstack.runtime.controller.aws_lambda import handle, policy_of
from spotstack.runtime.controller.package import HANDLER, lambda_files
from spotstack.runtime.controller.round import run_round
from spotstack.runtime.controller.state import ControllerState

T0 = 1_800_000_000.0
CFG: dict[str, Any] = {
    "fleet": "llm",
    "region": "us-east-1",
    "main_group": "llm-asg",
    "fallback_group": "llm-fallback-asg",
    "table": "llm-controller",
    "policy": {
        "spot_types": ["g6.xlarge", "g5.xlarge"],
        "on_demand_types": ["g6.xlarge"],
        "min": 3,
        "max": 6,
        "base_on_demand": 1,
        "on_demand_above_base_percent": 0,
        "dynamic_fallback": True,
    },
}


def deploy(ec2: Any, asg: Any, elb: Any, ddb: Any, main: str, fallback: str, table: str) -> str:
    """What `pulumi up` leaves for the controller: the two groups (main at 3, fallback at 0) behind one target
    group, and the memory table. Returns the target group's ARN."""
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = ",".join(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"][:2])
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"{main}-lt", LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "g6.xlarge"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    tg = str(
        elb.create_target_group(Name="tg", Protocol="HTTP", Port=8080, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    )
    for name, desired in ((main, 3), (fallback, 0)):
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=6,
            DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateId": lt, "Version": "$Latest"},
            VPCZoneIdentifier=subnets,
            TargetGroupARNs=[tg],
        )
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "fleet", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "fleet", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return tg


class Cloud:
    def __init__(self) -> None:
        self.ec2, self.asg = boto3.client("ec2"), boto3.client("autoscaling")
        self.elb, self.ddb = boto3.client("elbv2"), boto3.client("dynamodb")
        self.base: set[str] = set()
        self.ec2.meta.events.register("after-call.ec2.DescribeInstances", self._mark_spot)
        self.tg = deploy(self.ec2, self.asg, self.elb, self.ddb, "llm-asg", "llm-fallback-asg", "llm-controller")
        self.base = {self.members("llm-asg")[0]}  # the on-demand base
        clients = {"autoscaling": self.asg, "ec2": self.ec2, "elbv2": self.elb}
        self.fleet = AwsFleet("llm-asg", "llm-fallback-asg", self.tg, ("g6.xlarge", "g5.xlarge"), clients=clients)
        self.store = DynamoStore("llm-controller", "llm", client=self.ddb)

    def _mark_spot(self, parsed: dict[str, Any], **_: Any) -> None:
        main = set(self.members("llm-asg"))
        for res in parsed.get("Reservations", []):
            for inst in res["Instances"]:
                if inst["InstanceId"] in main - self.base:
                    inst["InstanceLifecycle"] = "spot"

    def members(self, group: str) -> list[str]:
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return sorted(i["InstanceId"] for i in g["Instances"])

    def desired(self, group: str) -> int:
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return int(g["DesiredCapacity"])

    def spot(self) -> list[str]:
        return [i for i in self.members("llm-asg") if i not in self.base]


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield Cloud()


def warning(instance: str, at: float) -> dict[str, Any]:
    when = __import__("datetime").datetime.fromtimestamp(at, tz=__import__("datetime").timezone.utc)
    return {
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "detail": {"instance-id": instance, "instance-action": "terminate"},
    }


def test_a_spot_stockout_grows_the_fallback_and_it_shrinks_only_after_the_hold(cloud: Cloud) -> None:
    # All serving: nothing to do.
    r = handle({"detail-type": "Scheduled Event"}, CFG, cloud.fleet, cloud.store, now=T0)
    assert r["acted"] and r["wanted"]["fallback"] == 0 and cloud.desired("llm-fallback-asg") == 0

    # Both spot instances get their notice; the events are handled within one invocation each.
    doomed = cloud.spot()
    assert len(doomed) == 2
    handle(warning(doomed[0], T0 + 60), CFG, cloud.fleet, cloud.store, now=T0 + 60)
    assert cloud.desired("llm-fallback-asg") == 1  # a stand-in for the noticed one, at once
    r = handle(warning(doomed[1], T0 + 61), CFG, cloud.fleet, cloud.store, now=T0 + 61)
    assert cloud.desired("llm-fallback-asg") == 2, r["reasons"]
    # A delivery twice (EventBridge is at-least-once) changes nothing.
    handle(warning(doomed[1], T0 + 61), CFG, cloud.fleet, cloud.store, now=T0 + 62)
    assert cloud.desired("llm-fallback-asg") == 2
    state = cloud.store.load()
    assert set(state.notices) == set(doomed) and state.notices[doomed[0]].deadline == T0 + 60 + 120
    assert sum(len(v) for v in state.preempted_at.values()) == 2

    # A refused spot launch (the Auto Scaling event) marks the spot types unobtainable.
    refused = {
        "detail-type": "EC2 Instance Launch Unsuccessful",
        "detail": {
            "AutoScalingGroupName": "llm-asg",
            "StatusMessage": "Could not launch Spot Instances. InsufficientInstanceCapacity - no g6.xlarge capacity",
        },
        "time": "2027-01-15T08:01:10Z",
    }
    handle(refused, CFG, cloud.fleet, cloud.store, now=T0 + 70)
    assert "g6.xlarge" in cloud.store.load().failed_at

    # The spot instances die; the main group replaces them (moto launches replacements at once, healthy).
    for i in doomed:
        cloud.asg.terminate_instance_in_auto_scaling_group(InstanceId=i, ShouldDecrementDesiredCapacity=False)
    fallback = cloud.members("llm-fallback-asg")
    assert len(fallback) == 2 and len(cloud.spot()) == 2
    # Spot serves again, but not yet for the hold (30 s): the fallback stays.
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 200)
    assert cloud.desired("llm-fallback-asg") == 2, r.as_dict()["reasons"]
    assert set(cloud.store.load().notices) == set()  # the dead instances' notices are forgotten
    # After the hold, exactly the fallback replicas go (targeted, the desired size decremented with each).
    r = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 240)
    assert sorted(r.decision.terminate) == fallback
    assert cloud.desired("llm-fallback-asg") == 0 and cloud.desired("llm-asg") == 3


def test_every_call_a_round_makes_is_one_its_role_allows(cloud: Cloud) -> None:
    """The component's IAM policy against the calls the scenario's rounds actually make (botocore's own names)."""
    from spotstack.components.aws.controller import controller_policy

    made: set[str] = set()
    recording = [True]

    def record(model: Any, **_: Any) -> None:
        if recording[0]:
            made.add(f"{model.service_model.signing_name}:{model.name}")

    for client in (cloud.asg, cloud.ec2, cloud.elb):
        client.meta.events.register("before-call", record)
    doomed = cloud.spot()
    handle(warning(doomed[0], T0), CFG, cloud.fleet, cloud.store, now=T0)
    recording[0] = False  # the spot instance's death is the cloud's doing, not the round's
    cloud.asg.terminate_instance_in_auto_scaling_group(InstanceId=doomed[0], ShouldDecrementDesiredCapacity=False)
    recording[0] = True
    for at in (T0 + 400, T0 + 440):
        run_round(cloud.fleet, cloud.store, policy_of(CFG), at)
    assert {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"} <= made
    doc = controller_policy("us-east-1", "llm-fallback-asg", "arn:table", "arn:logs")
    allowed = {a for st in doc["Statement"] for a in st["Action"]}
    assert made <= allowed, made - allowed


def test_another_fleets_interruption_is_not_ours(cloud: Cloud) -> None:
    """The interruption rule is account-wide: a warning for an instance of no group of this fleet changes nothing."""
    vpc_subnet = cloud.ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    other = cloud.ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=vpc_subnet)
    iid = other["Instances"][0]["InstanceId"]
    r = handle(warning(iid, T0), CFG, cloud.fleet, cloud.store, now=T0)
    assert cloud.store.load().notices == {} and cloud.store.load().preempted_at == {}
    assert r["wanted"]["fallback"] == 0 and cloud.desired("llm-fallback-asg") == 0


def test_a_broken_observation_scales_nothing_down(cloud: Cloud) -> None:
    handle(warning(cloud.spot()[0], T0), CFG, cloud.fleet, cloud.store, now=T0)
    assert cloud.desired("llm-fallback-asg") == 1

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "DescribeTargetHealth")

    service = cloud.elb.meta.service_model.service_id.hyphenize()
    cloud.elb.meta.events.register(f"before-call.{service}.DescribeTargetHealth", throttled)
    with pytest.raises(ClientError):
        run_round(cloud.fleet, cloud.store, policy_of(CFG), T0 + 600)
    assert cloud.desired("llm-fallback-asg") == 1  # untouched: the Lambda errors, its alarm fires


def test_of_two_overlapping_rounds_only_one_acts(cloud: Cloud) -> None:
    first, second = cloud.store.load(), cloud.store.load()
    a = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0, state=first)
    b = run_round(cloud.fleet, cloud.store, policy_of(CFG), T0, state=second)
    assert a.acted and a.saved and not b.acted and not b.saved
    assert "lost the state store race" in " ".join(b.as_dict()["reasons"])


def test_growth_is_bounded_per_round(cloud: Cloud) -> None:
    cfg = {**CFG, "max_launches": 1}
    state = cloud.store.load()
    for i, iid in enumerate(cloud.spot()):
        state.preempted(iid, "g6.xlarge", T0 + i, T0 + i + 120)
    cloud.store.save(state)
    handle({}, cfg, cloud.fleet, cloud.store, now=T0 + 5)
    assert cloud.desired("llm-fallback-asg") == 1
    handle({}, cfg, cloud.fleet, cloud.store, now=T0 + 65)
    assert cloud.desired("llm-fallback-asg") == 2


def test_state_round_trips_and_a_corrupt_document_is_reported() -> None:
    s = ControllerState(3)
    s.preempted("i-1", "g6.xlarge", 10.0, 130.0)
    s.failed("g5.xlarge", 20.0)
    s.seen_ready("i-2", 50.0, 0.0, spot=True)
    back = ControllerState.from_json(s.to_json(), 3)
    assert back == s and back.history()["g6.xlarge"].preempted_at == (10.0,)
    assert not back.preempted("i-1", "g6.xlarge", 11.0, 131.0)  # once per instance
    corrupt = ControllerState.from_json("[1, 2]", 1)  # reported, never a crash (test_controller_state.py)
    assert corrupt.problem and "not a JSON object" in corrupt.problem and corrupt.version == 1


def test_the_function_package_imports_as_lambda_would(tmp_path: Path) -> None:
    """A fresh interpreter with only the archive and boto3 (and its own dependencies) on the path: the handler
    imports, and nothing else of this project or its dependencies is loaded."""
    archive = tmp_path / "controller.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, path in lambda_files().items():
            z.write(path, name)
    code = tmp_path / "code"
    zipfile.ZipFile(archive).extractall(code)
    deps = tmp_path / "runtime-deps"  # what the Lambda Python runtime ships
    deps.mkdir()
    import boto3 as b3
    import botocore
    import dateutil
    import jmespath
    import s3transfer
    import urllib3

    for mod in (b3, botocore, dateutil, jmespath, s3transfer, urllib3):
        assert mod.__file__ is not None
        (deps / Path(mod.__file__).parent.name).symlink_to(Path(mod.__file__).parent)
    for single in ("six.py",):
        found = [Path(p) / single for p in sys.path if (Path(p) / single).is_file()]
        if found:
            (deps / single).symlink_to(found[0])
    module, func = HANDLER.rsplit(".", 1)
    probe = (
        f"import sys; sys.path[:0] = [{str(code)!r}, {str(deps)!r}]; import importlib; "
        f"m = importlib.import_module({module!r}); assert callable(getattr(m, {func!r})); "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('pydantic', 'aiohttp', 'typer', 'pulumi', 'yaml')]; "
        "assert not bad, bad; print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    out = subprocess.run([sys.executable, "-S", "-I", "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    names = zipfile.ZipFile(archive).namelist()
    assert "spotstack/__init__.py" not in names and all(n.startswith("spotstack/runtime/") for n in names)
    json.dumps(names)


def test_controller_once_reads_the_stack_and_explains_its_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """`spotstack controller once --stack dev`: the names come from the stack as `pulumi up` made them."""
    from typer.testing import CliRunner

    from spotstack.cli.main import app
    from spotstack.components.aws.controller import names
    from spotstack.components.plan.stackfile import load_stack
    from spotstack.components.program import config_value
    from spotstack.components.validate import validate_fleets
    from tests.conftest import ROOT

    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)
    sf = load_stack(ROOT, "dev")
    spec = validate_fleets(config_value(sf.config))[0][0]
    n = names(spec, sf.project, "dev")
    with mock_aws():
        ec2, asg, elb = (boto3.client(s, region_name=spec.region) for s in ("ec2", "autoscaling", "elbv2"))
        ddb = boto3.client("dynamodb", region_name=spec.region)
        deploy(ec2, asg, elb, ddb, n["main_group"], n["fallback_group"], n["table"])
        runner = CliRunner()
        dry = runner.invoke(app, ["controller", "once", "--stack", "dev", "--dry-run", "--json"])
        assert dry.exit_code == 0, dry.output
        doc = json.loads(dry.stdout.strip().splitlines()[-1])
        assert doc["target"] == 3 and len(doc["replicas"]) == 3 and not doc["acted"]
        assert "Item" not in ddb.get_item(TableName=n["table"], Key={"fleet": {"S": spec.name}})  # nothing saved
        real = runner.invoke(app, ["controller", "once", "--stack", "dev"])
        assert real.exit_code == 0 and "wanted" in real.stdout, real.output
        assert "Item" in ddb.get_item(TableName=n["table"], Key={"fleet": {"S": spec.name}})
        gcp = runner.invoke(app, ["controller", "once", "--stack", "dev-gcp"])
        assert gcp.exit_code == 2 and "drives AWS fleets" in gcp.output
