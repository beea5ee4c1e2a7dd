"""Alibaba Cloud: the cloud controller observes a fleet's two ESS scaling groups, their ECS instances and the ALB
server group's health, sizes the on-demand fallback group (the one with the economical-mode warm pool), and
remembers in OSS.

Calls are RPC-style, signed (v1) with the function's STS credentials (`runtime.secrets.alicloud_call`): the
standard library only, so the Function Compute package needs no dependencies. The spot group is ESS's own (its
scaling rules and `compensate_with_on_demand`); the controller sizes the fallback group with `ModifyScalingGroup`
and ends exactly the instance decide() chose with `RemoveInstances` (desired capacity decreased with it; the group's
lifecycle hook lets the agent drain first).

Memory: OSS has no compare-and-swap on an object's content, but it refuses to overwrite when asked
(`x-oss-forbid-overwrite`): each save creates the next numbered object (`state-00000042.json`), so of two rounds
that read version 41 only one can create 42. Load reads the highest number; old ones are deleted.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import Any

from spotstack.runtime.clouds import ALICLOUD
from spotstack.runtime.controller import rollout
from spotstack.runtime.controller.adaptors.oss import OssBucket
from spotstack.runtime.controller.decide import Decision, Replica, Role
from spotstack.runtime.controller.regions import ON_DEMAND
from spotstack.runtime.controller.round import Seen, replica, size_fallback
from spotstack.runtime.controller.state import ControllerState
from spotstack.runtime.secrets import alicloud_call

NOTICE_S = ALICLOUD.notice_s
"""Alibaba gives a spot instance five minutes."""
RETRY_S = 300.0
ROUND_S = 60.0
"""The controller's timer: a round every minute."""
NO_STOCK = re.compile(r"NoStock|sold out|OutOfStock|InsufficientBalance|not enough (stock|resource)", re.I)
VERSIONS = {"ess": "2014-08-28", "ecs": "2014-05-26", "alb": "2020-06-16"}
STARTING = {"Pending", "Adding", "Pending:Wait"}
LEAVING = {"Removing", "Removing:Wait", "Detaching", "EnteringStandby", "Stopping"}
PARKED = {"Standby", "Stopped"}
"""The economical-mode pool's stopped instances (and a user's standby): not replicas."""
KEEP_VERSIONS = 5
CONFIG_TAG = "spotstack:config"
"""On each instance, from its scaling configuration's tags: a digest of what the node was launched with (image,
boot document, types). ESS changes a configuration in place, so its id cannot tell a stale instance."""


def credentials_from_env() -> dict[str, str]:
    """Function Compute hands a function its role's STS credentials in these variables."""
    return {
        "AccessKeyId": os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
        "AccessKeySecret": os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
        "SecurityToken": os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN", ""),
    }


def _ts(text: str, default: float) -> float:
    """ESS and ECS times: `2027-01-15T08:00Z` or with seconds."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return default


def _items(doc: dict[str, Any], outer: str, inner: str) -> list[dict[str, Any]]:
    """Alibaba's JSON lists: `{"ScalingInstances": {"ScalingInstance": [...]}}`."""
    return list((doc.get(outer) or {}).get(inner) or [])


class Api:
    """Signed calls to one region's ESS, ECS and ALB (endpoints overridable for tests)."""

    def __init__(self, region: str, creds: dict[str, str], endpoints: dict[str, str] | None = None) -> None:
        self.region, self.creds = region, creds
        self.endpoints = {
            "ess": f"https://ess.{region}.aliyuncs.com",
            "ecs": f"https://ecs.{region}.aliyuncs.com",
            "alb": f"https://alb.{region}.aliyuncs.com",
            **(endpoints or {}),
        }

    def __call__(self, product: str, action: str, **params: Any) -> dict[str, Any]:
        flat = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        out = alicloud_call(self.endpoints[product], action, VERSIONS[product], flat, self.region, self.creds)
        return dict(out)


class AlicloudFleet:
    def __init__(
        self,
        main_group: str,
        fallback_group: str | None,
        server_group: str,
        listener: str,
        spot_types: tuple[str, ...],
        api: Api,
        config_tag: str | None = None,
        *,
        pool_prefix: str = "",
    ) -> None:
        """Groups by scaling group id; `server_group`: the ALB server group both register in, behind `listener`;
        `config_tag`: the deployed configuration's digest (the main group's instances without it are rolled);
        `pool_prefix`: one region of a fleet across regions names its pools `<region>/<type>`."""
        self.main_group, self.fallback_group, self.server_group = main_group, fallback_group, server_group
        self.listener = listener
        self.spot_types, self.api, self.config_tag = spot_types, api, config_tag
        self.prefix = pool_prefix

    # -- observe ---------------------------------------------------------------------------------------------
    def observe(self, state: ControllerState, now: float) -> Seen:
        ids = [g for g in (self.main_group, self.fallback_group) if g]
        params = {f"ScalingGroupId.{i + 1}": g for i, g in enumerate(ids)}
        groups = {
            g["ScalingGroupId"]: g
            for g in _items(self.api("ess", "DescribeScalingGroups", **params), "ScalingGroups", "ScalingGroup")
        }
        missing = [g for g in ids if g not in groups]
        if missing:
            raise LookupError(f"scaling groups not found: {', '.join(missing)}")
        members: list[tuple[str, dict[str, Any]]] = []
        for g in ids:
            page = 1
            while True:
                doc = self.api("ess", "DescribeScalingInstances", ScalingGroupId=g, PageSize=50, PageNumber=page)
                batch = _items(doc, "ScalingInstances", "ScalingInstance")
                members += [(g, i) for i in batch]
                if len(batch) < 50:
                    break
                page += 1
        details: dict[str, dict[str, Any]] = {}
        ids_ = [i["InstanceId"] for _, i in members]
        for k in range(0, len(ids_), 100):
            doc = self.api("ecs", "DescribeInstances", InstanceIds=json.dumps(ids_[k : k + 100]), PageSize=100)
            details.update({x["InstanceId"]: x for x in _items(doc, "Instances", "Instance")})
        servers = self.api("alb", "ListServerGroupServers", ServerGroupId=self.server_group, MaxResults=100)
        available = {s["ServerId"] for s in servers.get("Servers", []) if s.get("Status") == "Available"}
        # ALB lists only the servers that are not healthy, per listener and server group.
        health = self.api("alb", "GetListenerHealthStatus", ListenerId=self.listener)
        unhealthy = {
            bad["ServerId"]
            for lsn in health.get("ListenerHealthStatus", [])
            for sg in lsn.get("ServerGroupInfos", [])
            if sg.get("ServerGroupId") == self.server_group
            for bad in sg.get("NonNormalServers", [])
        }
        notes = self._refusals(state, now)
        self._recycling(state, now, details)
        replicas: list[Replica] = []
        current: dict[str, bool] = {}
        for group, inst in members:
            iid, life = inst["InstanceId"], inst.get("LifecycleState", "")
            if life in PARKED:
                continue
            ecs = details.get(iid, {})
            spot = ecs.get("SpotStrategy", inst.get("SpotStrategy", "NoSpot")) != "NoSpot"
            role: Role = "fallback" if group == self.fallback_group else ("spot" if spot else "base")
            replicas.append(
                replica(
                    state,
                    now,
                    iid,
                    role,
                    self.prefix + ecs.get("InstanceType", "unknown"),
                    _ts(ecs.get("CreationTime") or inst.get("CreationTime", ""), now),
                    leaving=life in LEAVING or ecs.get("Status") == "Stopping",
                    starting=life in STARTING or ecs.get("Status") in ("Pending", "Starting"),
                    # Registered in the server group and its health check passing.
                    healthy=iid in available and iid not in unhealthy,
                )
            )
            if group == self.main_group:
                tags = _items(ecs, "Tags", "Tag")
                current[iid] = any(t.get("TagKey") == CONFIG_TAG and t.get("TagValue") == self.config_tag for t in tags)
        sizes = {g: int(groups[g].get("DesiredCapacity", groups[g].get("TotalCapacity", 0))) for g in ids}
        obtainable = state.obtainable(tuple(self.prefix + t for t in self.spot_types), now, RETRY_S)
        # A surge asked for in an earlier round is in the desired size but is not what the autoscaler wants:
        # decide() must not stand in a fallback for its instance while it loads.
        surged = 1 if rollout.Surge.from_json(state.last.get("roll")) is not None else 0
        roll = self._roll(state, now, replicas, current, sizes[self.main_group], groups[self.main_group])
        if roll is not None:
            notes.append(roll.reason)
        target = max(0, sizes[self.main_group] - surged)
        return Seen(tuple(replicas), target, obtainable, sizes, tuple(notes), roll=roll)

    def _roll(
        self,
        state: ControllerState,
        now: float,
        replicas: list[Replica],
        current: dict[str, bool],
        desired: int,
        group: dict[str, Any],
    ) -> rollout.Step | None:
        """The main group's rolling replacement (the fallback group's instances restart as they were stopped:
        rolling them would only stop them into its pool). Its memory is saved with the round, before acting."""
        if self.config_tag is None:
            return None
        members = [
            rollout.Member(r.id, current[r.id], r.state, r.launched_at, r.ready_since)
            for r in replicas
            if r.id in current
        ]
        max_size = int(group.get("MaxSize", desired))
        step, surge = rollout.step(members, desired, max_size, rollout.Surge.from_json(state.last.get("roll")), now)
        if surge is None:
            state.last.pop("roll", None)
        else:
            state.last["roll"] = surge.to_json()
        return step

    def _refusals(self, state: ControllerState, now: float) -> list[str]:
        """The spot group's failed scaling activities (`NoStock` and the like), each recorded once; in a region of a
        fleet across regions, the fallback group's too (as the pool `<region>/on-demand`: the controller sends the
        fallback elsewhere while that region refuses it)."""
        key = f"activities:{self.prefix}" if self.prefix else "activities"
        seen = set(state.last.get(key, []))
        notes = []
        groups = [self.main_group] + ([self.fallback_group] if self.prefix and self.fallback_group else [])
        for group in groups:
            doc = self.api("ess", "DescribeScalingActivities", ScalingGroupId=group, PageSize=20)
            for a in _items(doc, "ScalingActivities", "ScalingActivity"):
                if a["ScalingActivityId"] in seen:
                    continue
                seen.add(a["ScalingActivityId"])
                text = " ".join(str(a.get(k, "")) for k in ("StatusMessage", "Cause", "Description"))
                if a.get("StatusCode") not in ("Failed", "Warning") or not NO_STOCK.search(text):
                    continue
                if group == self.main_group:
                    pools = [self.prefix + t for t in [t for t in self.spot_types if t in text] or self.spot_types]
                else:
                    pools = [self.prefix + ON_DEMAND]
                for p in pools:
                    state.failed(p, _ts(str(a.get("StartTime", "")), now))
                notes.append(f"refused launch: {text.strip()[:160]}")
        state.last[key] = sorted(seen)[-50:]
        return notes

    def _recycling(self, state: ControllerState, now: float, details: dict[str, dict[str, Any]]) -> None:
        """Spot instances ECS has locked for recycling (`OperationLocks` with `LockReason: Recycling`, set when the
        interruption notice is sent): remembered as noticed, once. Another region's interruption events do not
        reach the home region's EventBridge trigger; this sees them within a round, and any the trigger missed."""
        for iid, ecs in details.items():
            locks = _items(ecs, "OperationLocks", "LockReason")
            if any(lock.get("LockReason") == "Recycling" for lock in locks) and iid not in state.notices:
                pool = self.prefix + str(ecs.get("InstanceType", "unknown"))
                # The notice came at most a round ago: credit the node with the least it may have left.
                state.preempted(iid, pool, now, now + NOTICE_S - ROUND_S)

    def record_interruption(self, state: ControllerState, instance: str, at: float) -> bool:
        """An `ecs:Instance:PreemptibleInstanceInterruption` event: the instance's pool and deadline, once."""
        # The EventBridge rule is account-wide (the event names no group): another fleet's notice is not ours.
        member = self.api(
            "ess", "DescribeScalingInstances", ScalingGroupId=self.main_group, **{"InstanceIds.1": instance}
        )
        if not _items(member, "ScalingInstances", "ScalingInstance"):
            return False
        doc = self.api("ecs", "DescribeInstances", InstanceIds=json.dumps([instance]))
        found = _items(doc, "Instances", "Instance")
        pool = self.prefix + (found[0]["InstanceType"] if found else "unknown")
        return state.preempted(instance, pool, at, at + NOTICE_S)

    # -- act -------------------------------------------------------------------------------------------------
    def act(self, d: Decision, seen: Seen, max_launches: int) -> dict[str, int]:
        sizes = self._act_roll(seen.roll, dict(seen.sizes))
        if self.fallback_group is None:
            return sizes
        fb = self.fallback_group
        out = size_fallback(
            d,
            seen,
            fb,
            max_launches,
            lambda n: self.api("ess", "ModifyScalingGroup", ScalingGroupId=fb, DesiredCapacity=n),
            lambda i: self.api(
                "ess", "RemoveInstances", ScalingGroupId=fb, **{"InstanceIds.1": i}, DecreaseDesiredCapacity=True
            ),
        )
        out[self.main_group] = sizes[self.main_group]
        return out

    def _act_roll(self, roll: rollout.Step | None, sizes: dict[str, int]) -> dict[str, int]:
        main = self.main_group
        if roll is None or not roll.acts:
            return sizes
        if roll.surge:
            sizes[main] += roll.surge
            self.api("ess", "ModifyScalingGroup", ScalingGroupId=main, DesiredCapacity=sizes[main])
        if roll.remove is not None:
            self.api(
                "ess",
                "RemoveInstances",
                ScalingGroupId=main,
                DecreaseDesiredCapacity=roll.decrease,
                **{"InstanceIds.1": roll.remove},
            )
            sizes[main] -= 1 if roll.decrease else 0
        return sizes


class OssStore:
    """The controller's memory in OSS: numbered objects, each created once (see the module's docstring)."""

    def __init__(self, bucket: OssBucket, prefix: str) -> None:
        """`bucket`: the standard library's V4-signed client (`adaptors/oss.py`)."""
        self.bucket, self.prefix = bucket, prefix.rstrip("/") + "/"

    def _versions(self) -> list[tuple[int, str]]:
        out = []
        for key in self.bucket.list_keys(self.prefix + "state-"):
            m = re.fullmatch(re.escape(self.prefix) + r"state-(\d+)\.json", key)
            if m:
                out.append((int(m.group(1)), key))
        return sorted(out)

    def load(self) -> ControllerState:
        versions = self._versions()
        if not versions:
            return ControllerState()
        version, key = versions[-1]
        raw: bytes = self.bucket.get(key)
        where = f"oss://{self.bucket.bucket_name}/{key}"
        return ControllerState.from_json(raw.decode(errors="replace"), version, where)

    def save(self, state: ControllerState) -> bool:
        key = f"{self.prefix}state-{state.version + 1:08d}.json"
        if not self.bucket.create(key, state.to_json().encode()):
            return False
        versions = self._versions()
        if versions[-1][0] > state.version + 1:
            # Read so long ago that its number had been pruned and was free again: a newer state exists, so
            # this round lost all the same (its object is never read: load takes the highest).
            return False
        state.version += 1
        for _, old in versions[:-KEEP_VERSIONS]:
            self.bucket.delete(old)
        return True
