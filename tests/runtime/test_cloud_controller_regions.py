"""The controller of a fleet across two regions, end to end on moto (each region its own groups, instances, target
group): a whole-region stockout moves the fallback to the other region and back when spot returns; a region whose
API fails is left as it is while the other is acted on; another region's events, forwarded to the home bus, count
against that region's pools. Moto's gaps are the single-region test's (test_cloud_controller_aws.py): spot
instances are marked by a botocore hook; target health is moto's ("healthy" once registered), so a region's outage
is a hook reporting its replacements unhealthy until spot returns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spotstack.runtime.controller.adaptors.aws import AwsFleet, DynamoStore
from spotstack.runtime.controller.aws_lambda import fleet_and_store, handle, policy_of
from spotstack.runtime.controller.regions import Region, Regions, Standing, fallback_shares
from tests.runtime.test_cloud_controller_aws import deploy, warning

T0 = 1_800_000_000.0
HOME, OTHER = "us-east-1", "us-west-2"
POOLS = [f"{HOME}/g6.xlarge", f"{OTHER}/g6.xlarge"]
CFG: dict[str, Any] = {
    "fleet": "llm",
    "region": HOME,
    "main_group": "llm-asg",
    "fallback_group": "llm-fallback-asg",
    "table": "llm-controller",
    "policy": {
        "spot_types": POOLS,
        "on_demand_types": ["g6.xlarge"],
        "min": 6,
        "max": 8,
        "dynamic_fallback": True,
    },
}


class Side:
    """One region's groups, and a say over what its target group reports."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.ec2, self.asg = boto3.client("ec2", region_name=region), boto3.client("autoscaling", region_name=region)
        self.elb = boto3.client("elbv2", region_name=region)
        self.unhealthy: set[str] = set()
        self.hidden: set[str] = set()
        """Instances the region's groups do not show (launches that never came)."""
        self.ec2.meta.events.register("after-call.ec2.DescribeInstances", self._mark_spot)
        self.asg.meta.events.register("after-call.auto-scaling.DescribeAutoScalingGroups", self._hide)
        self.elb.meta.events.register("after-call.elastic-load-balancing-v2.DescribeTargetHealth", self._health)
        ddb = boto3.client("dynamodb", region_name=region)
        self.tg = deploy(self.ec2, self.asg, self.elb, ddb, "llm-asg", "llm-fallback-asg", "llm-controller")
        self.fleet = AwsFleet(
            "llm-asg",
            "llm-fallback-asg",
            self.tg,
            ("g6.xlarge",),
            clients={"autoscaling": self.asg, "ec2": self.ec2, "elbv2": self.elb},
            pool_prefix=f"{region}/",
        )

    def _mark_spot(self, parsed: dict[str, Any], **_: Any) -> None:
        main = set(self.members("llm-asg"))
        for res in parsed.get("Reservations", []):
            for inst in res["Instances"]:
                if inst["InstanceId"] in main:
                    inst["InstanceLifecycle"] = "spot"

    def _hide(self, parsed: dict[str, Any], **_: Any) -> None:
        for g in parsed.get("AutoScalingGroups", []):
            g["Instances"] = [i for i in g["Instances"] if i["InstanceId"] not in self.hidden]

    def _health(self, parsed: dict[str, Any], **_: Any) -> None:
        for d in parsed.get("TargetHealthDescriptions", []):
            if d["Target"]["Id"] in self.unhealthy:
                d["TargetHealth"]["State"] = "unhealthy"

    def members(self, group: str) -> list[str]:
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return sorted(i["InstanceId"] for i in g["Instances"])

    def desired(self, group: str = "llm-fallback-asg") -> int:
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return int(g["DesiredCapacity"])


class TwoRegions:
    def __init__(self) -> None:
        self.home, self.other = Side(HOME), Side(OTHER)
        self.store = DynamoStore("llm-controller", "llm", client=boto3.client("dynamodb", region_name=HOME))
        parts = [
            Region(HOME, self.home.fleet, (POOLS[0],), on_demand_price=0.8048, bounds=(3, 4, 0)),
            Region(OTHER, self.other.fleet, (POOLS[1],), on_demand_price=0.8048, bounds=(3, 4, 0)),
        ]
        self.fleet = Regions(parts, HOME)

    def round(self, at: float, event: dict[str, Any] | None = None) -> dict[str, Any]:
        return handle(event or {"detail-type": "Scheduled Event"}, CFG, self.fleet, self.store, now=at)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoRegions]:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": HOME}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield TwoRegions()


def refused(region: str, group: str, at: str) -> dict[str, Any]:
    return {
        "detail-type": "EC2 Instance Launch Unsuccessful",
        "region": region,
        "time": at,
        "detail": {
            "AutoScalingGroupName": group,
            "StatusMessage": "Could not launch Spot Instances. InsufficientInstanceCapacity - no g6.xlarge capacity",
        },
    }


def test_a_whole_region_stockout_moves_the_fallback_to_the_other_region_and_back(cloud: TwoRegions) -> None:
    r = cloud.round(T0)
    assert r["acted"] and r["wanted"]["fallback"] == 0 and r["target"] == 6  # 3 spot in each region

    # us-east-1's spot replicas get their notices (the events are us-east-1's, forwarded to the home bus). Nothing
    # says yet that the region is out: the stand-ins go to the home region (prices equal).
    doomed = cloud.home.members("llm-asg")
    for i, iid in enumerate(doomed):
        r = cloud.round(T0 + 60 + i, {**warning(iid, T0 + 60), "region": HOME})
    assert r["wanted"]["fallback"] == 3 and cloud.home.desired() == 3 and cloud.other.desired() == 0

    # us-east-1 is out of everything: its spot launches and its on-demand stand-ins are refused (they never come).
    cloud.home.hidden = set(cloud.home.members("llm-fallback-asg"))
    cloud.round(T0 + 70, refused(HOME, "llm-asg", "2027-01-15T08:01:10Z"))
    r = cloud.round(T0 + 71, refused(HOME, "llm-fallback-asg", "2027-01-15T08:01:11Z"))
    state = cloud.store.load()
    assert set(state.notices) == set(doomed) and POOLS[0] in state.preempted_at and POOLS[0] in state.failed_at
    assert f"{HOME}/on-demand" in state.failed_at and r["wanted"]["fallback"] == 3
    # The stand-ins move to the region that has capacity, none is left asked for in the one that refuses.
    assert cloud.other.desired() == 3 and cloud.home.desired() == 0, r["reasons"]

    # The noticed replicas die; us-east-1's replacements do not serve while the outage lasts.
    for iid in doomed:
        cloud.home.asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=False)
    cloud.home.unhealthy = set(cloud.home.members("llm-asg"))
    for at in (T0 + 200, T0 + 400, T0 + 600):
        r = cloud.round(at)
        assert cloud.other.desired() == 3 and cloud.home.desired() == 0, r["reasons"]
    fallback = cloud.other.members("llm-fallback-asg")
    assert len(fallback) == 3

    # Spot returns in us-east-1: once its replicas have served for the hold, exactly the stand-ins go.
    cloud.home.unhealthy = set()
    r = cloud.round(T0 + 700)
    assert cloud.other.desired() == 3, r["reasons"]  # not yet READY for the hold
    r = cloud.round(T0 + 760)
    assert r["wanted"]["fallback"] == 0 and sorted(r["terminate"]) == fallback
    assert cloud.other.desired() == 0 and cloud.home.desired() == 0
    assert cloud.home.desired("llm-asg") == 3 and cloud.other.desired("llm-asg") == 3


def test_a_region_whose_api_fails_is_left_as_it_is(cloud: TwoRegions) -> None:
    # A noticed replica in us-west-2; its stand-in runs in the home region (prices equal).
    noticed = cloud.other.members("llm-asg")[0]
    r = cloud.round(T0, {**warning(noticed, T0), "region": OTHER})
    assert cloud.home.desired() == 1 and cloud.other.desired() == 0, r["reasons"]

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "DescribeTargetHealth")

    cloud.home.elb.meta.events.register("before-call.elastic-load-balancing-v2.DescribeTargetHealth", throttled)
    # us-east-1 cannot be seen: its stand-in is neither counted nor ended, its groups keep their sizes, and
    # us-west-2 is decided for alone, within its share: its noticed replica is gone and its replacement serves, not
    # yet for the hold, so it gets a stand-in of its own (availability first; us-east-1's is not known to run).
    cloud.other.asg.terminate_instance_in_auto_scaling_group(InstanceId=noticed, ShouldDecrementDesiredCapacity=False)
    r = cloud.round(T0 + 600)
    assert r["acted"] and r["target"] == 3 and cloud.home.desired() == 1 and cloud.other.desired() == 1
    assert any(n.startswith(f"{HOME}: unknown") for n in r["reasons"]), r["reasons"]
    assert set(r["sizes_after"]) == {f"{OTHER}/llm-asg", f"{OTHER}/llm-fallback-asg"}

    # Neither region answering: the round fails before acting on anything (the function's alarm fires).
    cloud.other.elb.meta.events.register("before-call.elastic-load-balancing-v2.DescribeTargetHealth", throttled)
    with pytest.raises(RuntimeError, match="no region answered"):
        cloud.round(T0 + 660)
    assert cloud.home.desired() == 1 and cloud.other.desired() == 1

    # Both answer again, us-west-2's replacement has served for the hold: both stand-ins go.
    cloud.home.elb.meta.events.unregister("before-call.elastic-load-balancing-v2.DescribeTargetHealth", throttled)
    cloud.other.elb.meta.events.unregister("before-call.elastic-load-balancing-v2.DescribeTargetHealth", throttled)
    r = cloud.round(T0 + 720)
    assert r["wanted"]["fallback"] == 0 and cloud.home.desired() == 0 and cloud.other.desired() == 0, r["reasons"]


def test_the_configuration_document_builds_an_adaptor_per_region(monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials from the environment: without them botocore asks the instance metadata service (off loopback).
    for k, v in {"AWS_DEFAULT_REGION": HOME, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(k, v)
    regions = [
        {"region": r, "main_group": "llm-asg", "fallback_group": "llm-fallback-asg", "target_group_arn": f"arn:{r}"}
        for r in (HOME, OTHER)
    ]
    fleet, store = fleet_and_store({**CFG, "regions": regions})
    assert isinstance(fleet, Regions) and fleet.home == HOME and store.table == "llm-controller"
    west = fleet.regions[OTHER]
    assert isinstance(west.fleet, AwsFleet) and west.fleet.spot_types == ("g6.xlarge",) and west.pools == (POOLS[1],)
    assert west.fleet.asg.meta.region_name == OTHER and policy_of(CFG).spot_types == tuple(POOLS)


def _standing(**kw: Any) -> Standing:
    base: dict[str, Any] = {
        "asked": 0,
        "alive": 0,
        "ending": 0,
        "refusing": False,
        "spot_short": False,
        "price": 1.0,
        "home": False,
    }
    return Standing(**{**base, **kw})


def test_new_fallback_goes_to_the_best_region_and_what_runs_stays() -> None:
    home = _standing(home=True)
    assert fallback_shares(2, {"a": home, "b": _standing()}) == {"a": 2, "b": 0}  # equal: home
    assert fallback_shares(2, {"a": home, "b": _standing(price=0.9)}) == {"a": 0, "b": 2}  # cheaper
    assert fallback_shares(2, {"a": _standing(home=True, spot_short=True), "b": _standing(price=2)}) == {"a": 0, "b": 2}
    assert fallback_shares(1, {"a": _standing(refusing=True, price=0.1), "b": _standing(spot_short=True)}) == {
        "a": 0,
        "b": 1,
    }
    # What a region runs stays there; only growth goes to the best region.
    assert fallback_shares(3, {"a": _standing(asked=2, alive=2), "b": _standing(price=0.1)}) == {"a": 2, "b": 1}
    # Shrinking: the replicas decide() ends leave their region; launches that never came go before any that run.
    ending = {"a": _standing(asked=2, alive=2, ending=1), "b": _standing(asked=1, alive=1, price=0.1)}
    assert fallback_shares(2, ending) == {"a": 1, "b": 1}
    never = {"a": _standing(asked=2, alive=2), "b": _standing(asked=2, alive=0, price=0.1)}
    assert fallback_shares(2, never) == {"a": 2, "b": 0}


def test_controller_once_reads_a_stack_across_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    """`spotstack controller once --stack dev-multiregion`: every region's groups, found where `pulumi up` put them,
    in one round (its pools `<region>/<type>`), its memory in the home region."""
    from typer.testing import CliRunner

    from spotstack.cli.main import app
    from spotstack.components.aws.controller import names
    from spotstack.components.plan.stackfile import config_value, load_stack
    from spotstack.components.validate import validate_fleets
    from tests.conftest import ROOT

    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": HOME}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)
    sf = load_stack(ROOT, "dev-multiregion")
    spec = validate_fleets(config_value(sf.config))[0][0]
    n = names(spec, sf.project, "dev-multiregion")
    with mock_aws():
        for region in (HOME, OTHER):
            clients = [boto3.client(s, region_name=region) for s in ("ec2", "autoscaling", "elbv2", "dynamodb")]
            deploy(*clients, n["main_group"], n["fallback_group"], n["table"])
        out = CliRunner().invoke(app, ["controller", "once", "--stack", "dev-multiregion", "--dry-run", "--json"])
        assert out.exit_code == 0, out.output
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        assert doc["target"] == 6 and len(doc["replicas"]) == 6  # 3 in each region's main group
        assert {r["pool"].split("/")[0] for r in doc["replicas"]} == {HOME, OTHER}
        assert set(doc["sizes_before"]) == {
            f"{r}/{g}" for r in (HOME, OTHER) for g in (n["main_group"], n["fallback_group"])
        }
