"""AWS: a decision becomes the desired sizes of the fleet's two Auto Scaling groups (`AsgAdaptor`), and the
cloud controller observes, sizes and remembers a fleet (`AwsFleet`, `DynamoStore`).

The main group's mixed-instances policy already keeps the base and the percentage on-demand and
picks spot types in priority order, so it gets base + share + spot; the fallback group (100%
on-demand) gets the fallback count. boto3 is imported lazily.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from spotstack.runtime.clouds import AWS
from spotstack.runtime.controller.decide import Decision, Role
from spotstack.runtime.controller.regions import ON_DEMAND
from spotstack.runtime.controller.round import Seen, replica, size_fallback
from spotstack.runtime.controller.state import ControllerState


class AsgAdaptor:
    def __init__(
        self,
        main_group: str,
        fallback_group: str | None,
        region: str | None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.main_group, self.fallback_group = main_group, fallback_group
        if client is None:
            import boto3

            client = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)
        self._client = client

    def sizes(self, d: Decision) -> dict[str, int]:
        main = d.wanted_on_demand - d.wanted_fallback + d.wanted_spot
        out = {self.main_group: main}
        if self.fallback_group is not None:
            out[self.fallback_group] = d.wanted_fallback
        return out

    async def apply(self, d: Decision) -> dict[str, int]:
        sizes = self.sizes(d)
        for group, size in sizes.items():
            # HonorCooldown=False: the controller acts on spot events, which do not wait for cooldowns.
            await asyncio.to_thread(
                self._client.set_desired_capacity, AutoScalingGroupName=group, DesiredCapacity=size, HonorCooldown=False
            )
        return sizes


# -- the cloud controller's AWS side: observe the fleet, act on the fallback group, remember in DynamoDB ---------
PENDING = ("Pending", "Pending:Wait", "Pending:Proceed")
FAILED_LAUNCH = re.compile(
    r"InsufficientInstanceCapacity|SpotMaxPriceTooLow|MaxSpotInstanceCountExceeded|capacity", re.I
)
NOTICE_S = AWS.notice_s
"""AWS gives a spot instance two minutes."""
RETRY_S = 300.0
"""A spot type that refused a launch is treated as unobtainable this long."""


class AwsFleet:
    """One fleet's two groups and target group, as the controller sees and sizes them.

    The main group (mixed instances: base, percentage and spot in priority order) is sized by its own scaling
    policies and schedules, and replaces what spot takes; its desired size is the target. The controller owns
    the fallback group: it grows it for the READY shortfall (the warm pool, when declared, starts those in
    seconds) and shrinks it instance by instance once spot serves (`TerminateInstanceInAutoScalingGroup` with the
    desired size decremented, so the group removes exactly the replica decide() chose, never one still needed).
    """

    def __init__(
        self,
        main_group: str,
        fallback_group: str | None,
        target_group_arn: str,
        spot_types: tuple[str, ...],
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        clients: dict[str, Any] | None = None,
        pool_prefix: str = "",
    ) -> None:
        self.main_group, self.fallback_group, self.tg = main_group, fallback_group, target_group_arn
        self.spot_types = spot_types
        # One region of a fleet across regions names its pools `<region>/<type>` (runtime/controller/regions.py).
        self.prefix = pool_prefix
        if clients is None:
            import boto3

            clients = {
                k: boto3.client(k, region_name=region, endpoint_url=endpoint_url)
                for k in ("autoscaling", "ec2", "elbv2")
            }
        self.asg, self.ec2, self.elb = clients["autoscaling"], clients["ec2"], clients["elbv2"]

    # -- observe ---------------------------------------------------------------------------------------------
    def observe(self, state: ControllerState, now: float) -> Seen:
        names = [g for g in (self.main_group, self.fallback_group) if g]
        groups = {
            g["AutoScalingGroupName"]: g
            for g in self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=names)["AutoScalingGroups"]
        }
        missing = [g for g in names if g not in groups]
        if missing:
            raise LookupError(f"Auto Scaling groups not found: {', '.join(missing)}")
        members = [(name, i) for name in names for i in groups[name]["Instances"]]
        ids = [i["InstanceId"] for _, i in members]
        details: dict[str, dict[str, Any]] = {}
        if ids:
            for page in self.ec2.get_paginator("describe_instances").paginate(InstanceIds=ids):
                for res in page["Reservations"]:
                    details.update({x["InstanceId"]: x for x in res["Instances"]})
        health = {
            d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in self.elb.describe_target_health(TargetGroupArn=self.tg)["TargetHealthDescriptions"]
        }
        notes = self._failed_launches(state, now)
        replicas = []
        for group, inst in members:
            iid = inst["InstanceId"]
            ec2 = details.get(iid, {})
            spot = ec2.get("InstanceLifecycle") == "spot"
            role: Role = "fallback" if group == self.fallback_group else ("spot" if spot else "base")
            launched = ec2["LaunchTime"].timestamp() if "LaunchTime" in ec2 else now
            life = inst["LifecycleState"]
            replicas.append(
                replica(
                    state,
                    now,
                    iid,
                    role,
                    self.prefix + inst["InstanceType"],
                    launched,
                    leaving=life.startswith("Terminating") or health.get(iid) == "draining",
                    starting=life in PENDING,
                    healthy=health.get(iid) == "healthy",
                    busy=bool(inst.get("ProtectedFromScaleIn")),  # the node's worker protects itself while busy
                )
            )
        obtainable = state.obtainable(tuple(self.prefix + t for t in self.spot_types), now, RETRY_S)
        sizes = {g: int(groups[g]["DesiredCapacity"]) for g in names}
        return Seen(tuple(replicas), sizes[self.main_group], obtainable, sizes, tuple(notes))

    def _failed_launches(self, state: ControllerState, now: float) -> list[str]:
        """Refused spot launches from the main group's recent scaling activities, each recorded once; in a region of
        a fleet across regions, refused fallback launches too (as the pool `<region>/on-demand`: the controller
        sends the fallback elsewhere while that region refuses it)."""
        key = f"activities:{self.prefix}" if self.prefix else "activities"
        seen = set(state.last.get(key, []))
        notes = []
        groups = [self.main_group] + ([self.fallback_group] if self.prefix and self.fallback_group else [])
        for group in groups:
            acts = self.asg.describe_scaling_activities(AutoScalingGroupName=group, MaxRecords=20)["Activities"]
            for a in acts:
                if a["ActivityId"] in seen or a.get("StatusCode") != "Failed":
                    continue
                seen.add(a["ActivityId"])
                message = a.get("StatusMessage", "")
                if not FAILED_LAUNCH.search(message):
                    continue
                at = a["StartTime"].timestamp() if hasattr(a.get("StartTime"), "timestamp") else now
                for t in self.refused(group, message):
                    state.failed(t, at)
                notes.append(f"refused launch: {message[:160]}")
        state.last[key] = sorted(seen)[-50:]
        return notes

    def refused(self, group: str, message: str) -> list[str]:
        """The pools a refused launch of one of the fleet's groups counts against: the main group's, the spot pools
        its message names; a region's fallback group's, `<region>/on-demand` (none in a fleet in one region)."""
        if group == self.main_group:
            return self.failed_types(message)
        if group == self.fallback_group and self.prefix:
            return [self.prefix + ON_DEMAND]
        return []

    def failed_types(self, message: str) -> list[str]:
        """The spot pools a failure message names; none named: all of them (AWS often does not say)."""
        named = [t for t in self.spot_types if t in message]
        return [self.prefix + t for t in named or self.spot_types]

    def record_interruption(self, state: ControllerState, instance: str, at: float) -> bool:
        """An EC2 Spot Instance Interruption Warning for one of this fleet's instances: its pool and deadline,
        remembered once. False for a notice seen before or for an instance of no group of this fleet."""
        # The EventBridge rule is account-wide (the warning names no group): another fleet's notice is not ours.
        found = self.asg.describe_auto_scaling_instances(InstanceIds=[instance])["AutoScalingInstances"]
        if not found or found[0]["AutoScalingGroupName"] not in (self.main_group, self.fallback_group):
            return False
        res = self.ec2.describe_instances(InstanceIds=[instance])["Reservations"]
        pool = res[0]["Instances"][0]["InstanceType"] if res and res[0]["Instances"] else "unknown"
        return state.preempted(instance, self.prefix + pool, at, at + NOTICE_S)

    # -- act -------------------------------------------------------------------------------------------------
    def act(self, d: Decision, seen: Seen, max_launches: int) -> dict[str, int]:
        """Size the fallback group only (the main group is its scaling policies'): grow by at most
        `max_launches` a round; shrink by ending exactly the fallback replicas decide() chose."""
        if self.fallback_group is None:
            return dict(seen.sizes)
        fb = self.fallback_group
        return size_fallback(
            d,
            seen,
            fb,
            max_launches,
            # HonorCooldown=False: the controller acts on spot events, which do not wait for cooldowns.
            lambda n: self.asg.set_desired_capacity(AutoScalingGroupName=fb, DesiredCapacity=n, HonorCooldown=False),
            lambda i: self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=i, ShouldDecrementDesiredCapacity=True
            ),
        )


class DynamoStore:
    """The controller's memory: one DynamoDB item per fleet, written only if its version is unchanged."""

    def __init__(
        self, table: str, fleet: str, *, region: str | None = None, endpoint_url: str | None = None, client: Any = None
    ) -> None:
        self.table, self.fleet = table, fleet
        if client is None:
            import boto3

            client = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)
        self._c = client

    def load(self) -> ControllerState:
        item = self._c.get_item(TableName=self.table, Key={"fleet": {"S": self.fleet}}, ConsistentRead=True).get("Item")
        if not item:
            return ControllerState()
        where = f"DynamoDB table {self.table}, item fleet={self.fleet}, attribute 'state'"
        try:
            version = int(item["version"]["N"])
        except (KeyError, TypeError, ValueError):
            # No version to write against: the conditional write could never succeed. Start again from 0.
            self._c.delete_item(TableName=self.table, Key={"fleet": {"S": self.fleet}})
            return ControllerState.unreadable(0, where.replace("'state'", "'version'"), "no number; deleted")
        text = item.get("state", {}).get("S")
        return ControllerState.from_json("" if text is None else text, version, where)

    def save(self, state: ControllerState) -> bool:
        try:
            self._c.put_item(
                TableName=self.table,
                Item={
                    "fleet": {"S": self.fleet},
                    "version": {"N": str(state.version + 1)},
                    "state": {"S": state.to_json()},
                },
                ConditionExpression="attribute_not_exists(fleet) OR version = :v",
                ExpressionAttributeValues={":v": {"N": str(state.version)}},
            )
        except self._c.exceptions.ConditionalCheckFailedException:
            return False
        state.version += 1
        return True
