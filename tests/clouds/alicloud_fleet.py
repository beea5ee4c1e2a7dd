"""The Alibaba Cloud APIs a fleet controller calls, as documented (RPC style, every call's signature checked with
the function's STS credentials): ESS 2014-08-28 `DescribeScalingGroups`, `DescribeScalingInstances`,
`DescribeScalingActivities`, `ModifyScalingGroup`, `RemoveInstances`; ECS 2014-05-26 `DescribeInstances`; ALB
2020-06-16 `ListServerGroupServers` (registration) and `GetListenerHealthStatus` (health: the servers that are not
healthy, listed per server group). One endpoint answers all three products (by `Version`).

The groups act only when told (`reconcile()`): the spot group fills its desired capacity with its first obtainable
type (a stocked-out type leaves a failed activity, `OperationDenied.NoStock`, as ESS records it); the fallback group
is in economical mode: `RemoveInstances` stops an instance into the group (`Stopped`, out of the server group) and
a scale-out starts stopped ones before creating any.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.clouds.alicloud_api import independent_signature

CREATED = "2027-01-15T07:00Z"


@dataclass
class Ecs:
    id: str
    type: str
    spot: bool
    life: str = "InService"
    healthy: bool = True
    warm_starts: int = 0
    config: str | None = None
    """Its scaling configuration's `spotstack:config` tag when it was launched."""
    recycling: bool = False
    """Its interruption notice sent: ECS locks it for recycling (`OperationLocks` names `Recycling`)."""


@dataclass
class Group:
    id: str
    types: list[str]
    spot: bool
    desired: int
    recycle: bool = False
    base: int = 0
    """On-demand instances first (`OnDemandBaseCapacity`), spot for the rest."""
    max_size: int = 10
    config: str | None = None
    """The active scaling configuration's `spotstack:config` tag (changed in place, as `pulumi up` does)."""
    members: dict[str, Ecs] = field(default_factory=dict)
    activities: list[dict[str, Any]] = field(default_factory=list)


class AlicloudFleetFake:
    def __init__(
        self, credentials: dict[str, str], region: str, server_group: str, listener: str, first_id: int = 0
    ) -> None:
        """`first_id`: where instance ids start (two fakes standing for two regions keep theirs apart)."""
        self.credentials, self.region, self.server_group, self.listener = credentials, region, server_group, listener
        self.groups: dict[str, Group] = {}
        self.stocked_out: set[str] = set()
        self.calls: list[str] = []
        self.versioned_calls: set[tuple[str, str]] = set()
        self.fail: dict[str, str] = {}
        """Action -> error code to answer with (a broken observation)."""
        self.launch_healthy = True
        """False: new instances fail the health check until a test says otherwise (a model still loading)."""
        self.on_demand_out = False
        """True: the region has no on-demand capacity either (a regional outage): on-demand launches fail too."""
        self._n = first_id

    def add_group(
        self,
        gid: str,
        types: list[str],
        spot: bool,
        desired: int,
        recycle: bool = False,
        base: int = 0,
        max_size: int = 10,
        config: str | None = None,
    ) -> None:
        self.groups[gid] = Group(gid, types, spot, desired, recycle, base, max_size, config)
        self.reconcile()

    def running(self, gid: str) -> list[str]:
        return sorted(i for i, e in self.groups[gid].members.items() if e.life == "InService")

    def reconcile(self) -> None:
        for g in self.groups.values():
            while (live := [e for e in g.members.values() if e.life != "Stopped"]) and len(live) > g.desired:
                g.members.pop(live[-1].id)
            while len([e for e in g.members.values() if e.life != "Stopped"]) < g.desired:
                stopped = [e for e in g.members.values() if e.life == "Stopped"]
                if stopped:  # economical mode: start a stopped instance first (its disk holds the model)
                    stopped[0].life, stopped[0].warm_starts = "InService", stopped[0].warm_starts + 1
                    continue
                self._n += 1
                if g.spot and sum(1 for e in g.members.values() if not e.spot) < g.base:
                    g.members[f"i-{self._n:04x}"] = self._launch(g, g.types[0], False)
                    continue
                t = next((t for t in g.types if not (t in self.stocked_out if g.spot else self.on_demand_out)), None)
                if t is None:
                    self._n += 1
                    g.activities.append(
                        {
                            "ScalingActivityId": f"asa-{self._n:04d}",
                            "ScalingGroupId": g.id,
                            "StatusCode": "Failed",
                            "StatusMessage": f"OperationDenied.NoStock: The resource of {g.types[0]} is out of "
                            "stock in the specified zone.",
                            "StartTime": f"2027-01-15T08:{len(g.activities):02d}Z",
                            "Cause": "A user requests to execute scaling rule",
                        }
                    )
                    break
                g.members[f"i-{self._n:04x}"] = self._launch(g, t, g.spot)

    def _launch(self, g: Group, instance_type: str, spot: bool) -> Ecs:
        return Ecs(f"i-{self._n:04x}", instance_type, spot, healthy=self.launch_healthy, config=g.config)

    def preempt(self, iid: str) -> None:
        for g in self.groups.values():
            g.members.pop(iid, None)

    def _find(self, iid: str) -> Ecs | None:
        return next((g.members[iid] for g in self.groups.values() if iid in g.members), None)

    # -- the API ---------------------------------------------------------------------------------------------
    async def rpc(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        if q.get("Signature") != independent_signature(q, self.credentials["AccessKeySecret"]):
            return web.json_response({"Code": "IncompleteSignature", "Message": "signature mismatch"}, status=400)
        if (
            q.get("AccessKeyId") != self.credentials["AccessKeyId"]
            or q.get("SecurityToken") != self.credentials["SecurityToken"]
        ):
            return web.json_response({"Code": "InvalidAccessKeyId.NotFound"}, status=404)
        if q.get("RegionId") != self.region:
            return web.json_response({"Code": "InvalidRegionId.NotFound"}, status=404)
        action = q.get("Action", "")
        self.calls.append(action)
        self.versioned_calls.add((q.get("Version", ""), action))
        if action in self.fail:
            return web.json_response({"Code": self.fail[action], "Message": "Request was denied."}, status=400)
        handler = {
            "2014-08-28": {
                "DescribeScalingGroups": self._groups,
                "DescribeScalingInstances": self._instances,
                "DescribeScalingActivities": self._activities,
                "ModifyScalingGroup": self._modify,
                "RemoveInstances": self._remove,
            },
            "2014-05-26": {"DescribeInstances": self._ecs},
            "2020-06-16": {"ListServerGroupServers": self._servers, "GetListenerHealthStatus": self._health},
        }.get(q.get("Version", ""), {}).get(action)
        if handler is None:
            return web.json_response({"Code": "InvalidAction.NotFound"}, status=404)
        status, body = handler(q)
        return web.json_response({"RequestId": "r", **body}, status=status)

    def _group(self, q: dict[str, str]) -> Group | None:
        return self.groups.get(q.get("ScalingGroupId", ""))

    def _groups(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        ids = [v for k, v in sorted(q.items()) if k.startswith("ScalingGroupId.")]
        found = [
            {
                "ScalingGroupId": g.id,
                "DesiredCapacity": g.desired,
                "MaxSize": g.max_size,
                "TotalCapacity": len(g.members),
                "ScalingPolicy": "recycle" if g.recycle else "release",
                "StoppedCapacity": sum(1 for e in g.members.values() if e.life == "Stopped"),
            }
            for g in self.groups.values()
            if g.id in ids
        ]
        return 200, {"ScalingGroups": {"ScalingGroup": found}, "TotalCount": len(found)}

    def _instances(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        g = self._group(q)
        if g is None:
            return 404, {"Code": "InvalidScalingGroupId.NotFound"}
        size, page = int(q.get("PageSize", 10)), int(q.get("PageNumber", 1))
        rows = [
            {
                "InstanceId": e.id,
                "ScalingGroupId": g.id,
                "LifecycleState": e.life,
                "HealthStatus": "Healthy" if e.life == "InService" else "Unhealthy",
                "CreationTime": CREATED,
                "CreationType": "AutoCreated",
                "SpotStrategy": "SpotAsPriceGo" if e.spot else "NoSpot",
            }
            for e in g.members.values()
        ]
        return 200, {
            "ScalingInstances": {"ScalingInstance": rows[(page - 1) * size : page * size]},
            "TotalCount": len(rows),
        }

    def _activities(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        g = self._group(q)
        if g is None:
            return 404, {"Code": "InvalidScalingGroupId.NotFound"}
        acts = list(reversed(g.activities))[: int(q.get("PageSize", 10))]
        return 200, {"ScalingActivities": {"ScalingActivity": acts}, "TotalCount": len(g.activities)}

    def _modify(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        g = self._group(q)
        if g is None:
            return 404, {"Code": "InvalidScalingGroupId.NotFound"}
        if "DesiredCapacity" not in q:
            return 400, {"Code": "MissingParameter"}
        if not 0 <= int(q["DesiredCapacity"]) <= g.max_size:
            return 400, {"Code": "InvalidParameter.Conflict", "Message": "DesiredCapacity out of [MinSize, MaxSize]"}
        g.desired = int(q["DesiredCapacity"])
        return 200, {}

    def _remove(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        g = self._group(q)
        ids = [v for k, v in q.items() if k.startswith("InstanceIds.")]
        if g is None or not ids or any(i not in g.members for i in ids):
            return 400, {"Code": "InvalidInstanceId.NotFound"}
        for i in ids:
            if g.recycle:
                g.members[i].life = "Stopped"  # economical mode: stopped, kept in the group, out of rotation
            else:
                g.members.pop(i)
        if q.get("DecreaseDesiredCapacity", "true") == "true":
            g.desired -= len(ids)
        return 200, {"ScalingActivityId": "asa-remove"}

    def _ecs(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if "InstanceIds" not in q:  # by tag (peer discovery): this fake's instances all carry spotstack:fleet=llm
            tagged = q.get("Tag.1.Key") == "spotstack:fleet" and q.get("Tag.1.Value") == "llm"
            running = [e.id for g in self.groups.values() for e in g.members.values() if e.life == "InService"]
            ids = running if tagged and q.get("Status", "Running") == "Running" else []
            size, page = int(q.get("PageSize", 10)), int(q.get("PageNumber", 1))
            ids = ids[(page - 1) * size : page * size]
        else:
            ids = json.loads(q.get("InstanceIds", "[]"))
        rows = [
            {
                "InstanceId": i,
                "InstanceType": e.type,
                "SpotStrategy": "SpotAsPriceGo" if e.spot else "NoSpot",
                "Status": "Stopped" if e.life == "Stopped" else "Running",
                "CreationTime": CREATED,
                "ZoneId": f"{self.region}a",
                "VpcAttributes": {"PrivateIpAddress": {"IpAddress": [f"172.16.0.{int(i[2:], 16)}"]}},
                "Tags": {"Tag": [{"TagKey": "spotstack:config", "TagValue": e.config}] if e.config else []},
                "OperationLocks": {"LockReason": [{"LockReason": "Recycling"}] if e.recycling else []},
            }
            for i in ids
            if (e := self._find(i)) is not None
        ]
        return 200, {"Instances": {"Instance": rows}, "TotalCount": len(rows)}

    def _servers(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if q.get("ServerGroupId") != self.server_group:
            return 404, {"Code": "ResourceNotFound.ServerGroup"}
        rows = [
            {"ServerId": e.id, "ServerType": "Ecs", "Port": 8080, "Weight": 100, "Status": "Available"}
            for g in self.groups.values()
            for e in g.members.values()
            if e.life == "InService"
        ]
        return 200, {"Servers": rows, "TotalCount": len(rows)}

    def _health(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if q.get("ListenerId") != self.listener:
            return 404, {"Code": "ResourceNotFound.Listener"}
        bad = [
            {"ServerId": e.id, "Port": 8080, "ServerIp": "10.0.0.9", "Status": "Unhealthy"}
            for g in self.groups.values()
            for e in g.members.values()
            if e.life == "InService" and not e.healthy
        ]
        info = {"ServerGroupId": self.server_group, "HealthCheckEnabled": "on", "ActionType": "ForwardGroup"}
        status = {"ListenerId": self.listener, "ListenerPort": 80, "ListenerProtocol": "HTTP"}
        groups = [{**info, "NonNormalServers": bad}]
        return 200, {"ListenerHealthStatus": [{**status, "ServerGroupInfos": groups}], "NextToken": ""}


class Threaded:
    """aiohttp applications served from a thread of their own, for callers that block (the function's urllib)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def serve(self, app: web.Application) -> str:
        async def start() -> str:
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            port = runner.addresses[0][1]
            return f"http://127.0.0.1:{port}"

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def stop(self) -> None:
        async def cleanup() -> None:
            for r in self._runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
