"""GCP: the cloud controller observes a fleet's regional managed instance groups and its backend service's health,
sizes the on-demand fallback group, and remembers in one GCS object written with a generation precondition.

Calls go through Google's client libraries (`google-cloud-compute`, `google-cloud-storage`), imported lazily;
the requests are the libraries' typed messages, so a misspelt field fails where it is built. The spot group is its
autoscaler's (the target is base + its target size); the base group is fixed; the fallback group is the
controller's. A replica's id is the VM's name (unique in a project's zone, and what the preemption log names).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from spotstack.runtime.clouds import GCP
from spotstack.runtime.controller.decide import Decision, Replica, Role
from spotstack.runtime.controller.regions import ON_DEMAND
from spotstack.runtime.controller.round import Seen, replica, size_fallback
from spotstack.runtime.controller.state import ControllerState

NOTICE_S = GCP.notice_s
"""GCP gives a spot VM 30 seconds."""
RETRY_S = 300.0
"""A machine type a zone refused is treated as unobtainable this long."""
STOCKOUT = re.compile(r"RESOURCE_POOL_EXHAUSTED|STOCKOUT|does not have enough resources|QUOTA_EXCEEDED", re.I)
STARTING_ACTIONS = {"CREATING", "CREATING_WITHOUT_RETRIES", "VERIFYING", "STARTING", "RESUMING"}
LEAVING_ACTIONS = {"DELETING", "ABANDONING", "RECREATING", "STOPPING", "SUSPENDING", "RESTARTING", "REFRESHING"}
PARKED = {"STOPPED", "SUSPENDED", "TERMINATED"}
"""A standby pool's VMs (or a dead one): not replicas."""


def last(url: str) -> str:
    """The name at the end of a resource URL (`.../zones/z/instances/NAME`, `.../machineTypes/TYPE`)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def _ts(text: str, default: float) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


class GcpFleet:
    def __init__(
        self,
        project: str,
        region: str,
        groups: dict[str, str],
        backend_service: str,
        spot_types: tuple[str, ...],
        *,
        clients: dict[str, Any] | None = None,
        client_options: dict[str, Any] | None = None,
        credentials: Any = None,
        pool_prefix: str = "",
    ) -> None:
        """`groups`: role ("base", "spot", "fallback") -> MIG name; any may be absent. `pool_prefix`: one region of
        a fleet across regions names its pools `<region>/<type>` (runtime/controller/regions.py)."""
        from google.cloud import compute_v1

        self.c = compute_v1
        self.project, self.region, self.groups, self.backend = project, region, groups, backend_service
        self.spot_types = spot_types
        self.prefix = pool_prefix
        if clients is None:
            kw = {"client_options": client_options, "credentials": credentials}
            clients = {
                "migs": compute_v1.RegionInstanceGroupManagersClient(**kw),
                "instances": compute_v1.InstancesClient(**kw),
                "backends": compute_v1.BackendServicesClient(**kw),
            }
        self.migs, self.instances, self.backends = clients["migs"], clients["instances"], clients["backends"]
        self._urls: dict[str, str] = {}
        """VM name -> its URL, as the last observation listed it (deleteInstances takes URLs)."""

    @property
    def fallback_group(self) -> str | None:
        return self.groups.get("fallback")

    def _mig(self, name: str) -> dict[str, str]:
        return {"project": self.project, "region": self.region, "instance_group_manager": name}

    # -- observe ---------------------------------------------------------------------------------------------
    def observe(self, state: ControllerState, now: float) -> Seen:
        c = self.c
        migs = {
            role: self.migs.get(request=c.GetRegionInstanceGroupManagerRequest(**self._mig(name)))
            for role, name in self.groups.items()
        }
        members: list[tuple[Role, Any]] = []
        for role, name in self.groups.items():
            req = c.ListManagedInstancesRegionInstanceGroupManagersRequest(**self._mig(name))
            members += [(role, m) for m in self.migs.list_managed_instances(request=req)]  # type: ignore[misc]
        details = {}
        if members:
            names = " OR ".join(f'(name = "{last(m.instance)}")' for _, m in members)
            req = c.AggregatedListInstancesRequest(project=self.project, filter=names)
            for _, scoped in self.instances.aggregated_list(request=req):
                details.update({i.name: i for i in scoped.instances})
        health: dict[str, str] = {}
        for mig in migs.values():
            req = c.GetHealthBackendServiceRequest(
                project=self.project,
                backend_service=self.backend,
                resource_group_reference_resource=c.ResourceGroupReference(group=mig.instance_group),
            )
            health.update(
                {last(h.instance): h.health_state for h in self.backends.get_health(request=req).health_status}
            )
        notes = self._refusals(state, now)
        replicas: list[Replica] = []
        for role, m in members:
            name = last(m.instance)
            self._urls[name] = m.instance
            vm = details.get(name)
            status = m.instance_status or (vm.status if vm else "")
            if status in PARKED or m.target_status in PARKED:
                continue
            pool = m.properties_from_flexibility_policy.machine_type or (last(vm.machine_type) if vm else "unknown")
            launched = _ts(vm.creation_timestamp, now) if vm else now
            replicas.append(
                replica(
                    state,
                    now,
                    name,
                    role,
                    self.prefix + last(pool),
                    launched,
                    leaving=m.current_action in LEAVING_ACTIONS or status == "STOPPING",
                    starting=m.current_action in STARTING_ACTIONS or status in ("PROVISIONING", "STAGING", ""),
                    healthy=health.get(name) == "HEALTHY",
                )
            )
        sizes = {self.groups[role]: int(mig.target_size) for role, mig in migs.items()}
        target = sum(int(migs[r].target_size) for r in ("base", "spot") if r in migs)
        obtainable = state.obtainable(tuple(self.prefix + t for t in self.spot_types), now, RETRY_S)
        return Seen(tuple(replicas), target, obtainable, sizes, tuple(notes))

    def _refusals(self, state: ControllerState, now: float) -> list[str]:
        """The spot group's recent errors (`listErrors`): stockouts recorded once against the machine type; in a
        region of a fleet across regions, the fallback group's too (as `<region>/on-demand`: the controller sends
        the fallback elsewhere while that region refuses it)."""
        roles = [r for r in ["spot"] + (["fallback"] if self.prefix else []) if r in self.groups]
        if not roles:
            return []
        key = f"errors:{self.prefix}" if self.prefix else "errors"
        seen = set(state.last.get(key, []))
        notes = []
        for role in roles:
            req = self.c.ListErrorsRegionInstanceGroupManagersRequest(**self._mig(self.groups[role]), max_results=50)
            for e in self.migs.list_errors(request=req):
                mark = f"{e.timestamp}|{e.instance_action_details.instance}"
                text = f"{e.error.code}: {e.error.message}"
                if mark in seen:
                    continue
                seen.add(mark)
                if not STOCKOUT.search(text):
                    continue
                if role == "fallback":
                    pools = [self.prefix + ON_DEMAND]
                else:
                    # A zone's stockout names the type only sometimes: unnamed, every ranked type is refused there.
                    pools = [self.prefix + t for t in [t for t in self.spot_types if t in text] or self.spot_types]
                for p in pools:
                    state.failed(p, _ts(e.timestamp, now))
                notes.append(f"refused launch: {text[:160]}")
        state.last[key] = sorted(seen)[-100:]
        return notes

    def record_preemption(self, state: ControllerState, resource: str, at: float) -> bool:
        """A `compute.instances.preempted` log entry (`projects/P/zones/Z/instances/NAME`): pool and deadline."""
        parts = resource.split("/")
        name, zone = parts[-1], parts[parts.index("zones") + 1] if "zones" in parts else ""
        pool = "unknown"
        if zone:
            from google.api_core.exceptions import NotFound

            try:
                vm = self.instances.get(
                    request=self.c.GetInstanceRequest(project=self.project, zone=zone, instance=name)
                )
                pool = last(vm.machine_type)
            except NotFound:  # deleted already (a spot VM goes 30 s after its notice): the pool stays unknown
                pass
        return state.preempted(name, self.prefix + pool, at, at + NOTICE_S)

    # -- act -------------------------------------------------------------------------------------------------
    def act(self, d: Decision, seen: Seen, max_launches: int) -> dict[str, int]:
        """Size the fallback group (the spot group is its autoscaler's, the base fixed)."""
        if "fallback" not in self.groups:
            return dict(seen.sizes)
        c, name = self.c, self.groups["fallback"]

        def set_size(n: int) -> None:
            self.migs.resize(request=c.ResizeRegionInstanceGroupManagerRequest(**self._mig(name), size=n))

        def end(instance: str) -> None:
            # deleteInstances takes the group's target size down with it: the group does not replace it.
            body = c.RegionInstanceGroupManagersDeleteInstancesRequest(instances=[self._urls[instance]])
            self.migs.delete_instances(
                request=c.DeleteInstancesRegionInstanceGroupManagerRequest(
                    **self._mig(name), region_instance_group_managers_delete_instances_request_resource=body
                )
            )

        return size_fallback(d, seen, name, max_launches, set_size, end)


class GcsStore:
    """The controller's memory: one GCS object, written only if its generation is the one read (0: absent)."""

    def __init__(self, bucket: str, name: str, *, client: Any = None) -> None:
        if client is None:
            import google.cloud.storage as storage

            client = storage.Client()
        self.blob_name = name
        self.bucket = client.bucket(bucket)

    def load(self) -> ControllerState:
        blob = self.bucket.get_blob(self.blob_name)
        if blob is None:
            return ControllerState()
        generation = int(blob.generation)
        # The text of exactly that generation: a write between the two calls makes this read fail, not mix.
        try:
            text = blob.download_as_text(if_generation_match=generation)
        except UnicodeDecodeError:
            text = "\x00"  # not text: unreadable, said as such below
        where = f"gs://{self.bucket.name}/{self.blob_name}"
        return ControllerState.from_json(text, generation, where)

    def save(self, state: ControllerState) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self.blob_name)
        try:
            blob.upload_from_string(state.to_json(), content_type="application/json", if_generation_match=state.version)
        except PreconditionFailed:
            return False
        state.version = int(blob.generation)
        return True
