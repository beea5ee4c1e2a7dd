"""The parts of the Compute Engine REST API (v1) and the GCS JSON API a fleet controller calls, as documented, for
Google's own client libraries pointed at loopback: regional managed instance groups (get, listManagedInstances,
listErrors, resize, deleteInstances), instances (aggregated list, get: 404 once deleted), a backend service's
getHealth per group, and one bucket's objects with generation preconditions (412 on a mismatch).

A request the real API would refuse is refused here too (unknown path, a missing `size`, an instance URL that is
not the group's), so a wrong call fails the test rather than passing silently. The groups do not act on their own:
`reconcile()` launches what a target size asks for (or, for a stocked-out spot type, records the MIG's error).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API = "https://www.googleapis.com/compute/v1"
T_CREATED = "2027-01-15T07:00:00.000-00:00"


@dataclass
class Vm:
    name: str
    zone: str
    type: str
    spot: bool
    status: str = "RUNNING"
    action: str = "NONE"
    healthy: bool = True
    ip: str = "10.128.0.2"


@dataclass
class Mig:
    name: str
    types: list[str]
    spot: bool
    target: int
    vms: dict[str, Vm] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


class ComputeFake:
    def __init__(self, project: str, region: str, zones: list[str], backend: str) -> None:
        self.project, self.region, self.zones, self.backend = project, region, zones, backend
        self.migs: dict[str, Mig] = {}
        self.deleted: dict[str, Vm] = {}
        self.stocked_out: set[str] = set()
        self.on_demand_out = False
        """The region has no on-demand capacity either: on-demand groups fail to grow (a regional outage)."""
        self.objects: dict[str, tuple[bytes, int]] = {}
        self.calls: list[str] = []
        self.token: str | None = None
        self.label = "llm"
        """The fleet's `spotstack-fleet` label on every VM here."""
        """When set, instance listings need `Authorization: Bearer <token>` (a node's metadata token)."""
        self._auth = ""
        self._n = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    # -- the world -------------------------------------------------------------------------------------------
    def add_group(self, name: str, types: list[str], spot: bool, target: int) -> None:
        self.migs[name] = Mig(name, types, spot, target)
        self.reconcile()

    def vm_url(self, vm: Vm) -> str:
        return f"{API}/projects/{self.project}/zones/{vm.zone}/instances/{vm.name}"

    def reconcile(self) -> None:
        """What a MIG does in a while: launch up to its target size with its best-ranked obtainable type."""
        with self._lock:
            for mig in self.migs.values():
                while len(mig.vms) < mig.target:
                    out = self.stocked_out if mig.spot else (set(mig.types) if self.on_demand_out else set())
                    t = next((t for t in mig.types if t not in out), None)
                    if t is None:
                        mig.errors.append(
                            {
                                "timestamp": f"2027-01-15T08:{len(mig.errors):02d}:00.000-00:00",
                                "error": {
                                    "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                                    "message": f"The zone does not have enough resources to fulfill the request "
                                    f"for {mig.types[0]}",
                                },
                                "instanceActionDetails": {"action": "CREATING", "instance": ""},
                            }
                        )
                        break
                    self._n += 1
                    vm = Vm(f"{mig.name}-{self._n:04x}", self.zones[self._n % len(self.zones)], t, mig.spot)
                    vm.ip = f"10.128.0.{self._n + 1}"
                    mig.vms[vm.name] = vm

    def preempt(self, name: str) -> Vm:
        """The VM is gone (GCP deletes a spot VM 30 s after its notice); the MIG will replace it."""
        with self._lock:
            for mig in self.migs.values():
                if name in mig.vms:
                    vm = mig.vms.pop(name)
                    self.deleted[name] = vm
                    return vm
        raise KeyError(name)

    # -- the API ---------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(body).encode()
                self.send_response(status)
                if raw is not None:
                    self.send_header("x-goog-generation", str(fake.generation_of(raw)))
                self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _go(self, method: str) -> None:
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fake.calls.append(f"{method} {u.path}")
                with fake._lock:
                    fake._auth = self.headers.get("Authorization", "")
                    status, answer, raw = fake.answer(method, u.path, q, body, self.headers.get("Content-Type", ""))
                self._reply(status, answer, raw)

            def do_GET(self) -> None:
                self._go("GET")

            def do_POST(self) -> None:
                self._go("POST")

        return Handler

    def _error(self, status: int, reason: str, message: str) -> tuple[int, Any, None]:
        return status, {"error": {"code": status, "message": message, "errors": [{"reason": reason}]}}, None

    def _op(self, target: str) -> tuple[int, Any, None]:
        self._n += 1
        op = {"kind": "compute#operation", "name": f"operation-{self._n}", "status": "DONE", "targetLink": target}
        return 200, op, None

    def answer(self, method: str, path: str, q: dict[str, str], body: bytes, ctype: str) -> tuple[int, Any, Any]:
        p = f"/compute/v1/projects/{self.project}"
        m = re.fullmatch(rf"{p}/regions/{self.region}/instanceGroupManagers/([^/]+)(/\w+)?", path)
        if m:
            mig = self.migs.get(m.group(1))
            if mig is None:
                return self._error(404, "notFound", f"The resource 'instanceGroupManagers/{m.group(1)}' was not found")
            return self._mig(method, mig, m.group(2) or "", q, body)
        if method == "GET" and path == f"{p}/aggregated/instances":
            if self.token is not None and self._auth != f"Bearer {self.token}":
                return self._error(401, "authError", "Request is missing required authentication credential.")
            flt = q.get("filter", "")
            label = re.search(r'labels\.spotstack-fleet = "([^"]+)"', flt)
            if label and label.group(1) != self.label:
                return 200, {"kind": "compute#instanceAggregatedList", "items": {}}, None
            names = set(re.findall(r'\bname = "([^"]+)"', flt))
            items: dict[str, Any] = {}
            for mig in self.migs.values():
                for vm in mig.vms.values():
                    if names and vm.name not in names:
                        continue
                    items.setdefault(f"zones/{vm.zone}", {"instances": []})["instances"].append(self._vm(vm))
            return 200, {"kind": "compute#instanceAggregatedList", "items": items}, None
        m = re.fullmatch(rf"{p}/zones/([^/]+)/instances/([^/]+)", path)
        if method == "GET" and m:
            vm = next((v for g in self.migs.values() for v in g.vms.values() if v.name == m.group(2)), None)
            if vm is None or vm.zone != m.group(1):
                return self._error(404, "notFound", f"The resource 'instances/{m.group(2)}' was not found")
            return 200, self._vm(vm), None
        if method == "POST" and path == f"{p}/global/backendServices/{self.backend}/getHealth":
            group = json.loads(body).get("group", "")
            mig = next((g for g in self.migs.values() if group == self._group_url(g)), None)
            if mig is None:
                return self._error(400, "invalid", f"Invalid value for field 'resource.group': '{group}'")
            states = [
                {"instance": self.vm_url(v), "healthState": "HEALTHY" if v.healthy else "UNHEALTHY", "port": 8080}
                for v in mig.vms.values()
                if v.status == "RUNNING"
            ]
            return 200, {"kind": "compute#backendServiceGroupHealth", "healthStatus": states}, None
        return self._storage(method, path, q, body, ctype)

    def _group_url(self, mig: Mig) -> str:
        return f"{API}/projects/{self.project}/regions/{self.region}/instanceGroups/{mig.name}"

    def _vm(self, vm: Vm) -> dict[str, Any]:
        return {
            "kind": "compute#instance",
            "name": vm.name,
            "zone": f"{API}/projects/{self.project}/zones/{vm.zone}",
            "machineType": f"{API}/projects/{self.project}/zones/{vm.zone}/machineTypes/{vm.type}",
            "status": vm.status,
            "creationTimestamp": T_CREATED,
            "networkInterfaces": [{"name": "nic0", "networkIP": vm.ip}],
            "scheduling": {"provisioningModel": "SPOT" if vm.spot else "STANDARD"},
            "labels": {"spotstack-fleet": self.label},
        }

    def _mig(self, method: str, mig: Mig, verb: str, q: dict[str, str], body: bytes) -> tuple[int, Any, Any]:
        url = f"{API}/projects/{self.project}/regions/{self.region}/instanceGroupManagers/{mig.name}"
        if method == "GET" and verb == "":
            return (
                200,
                {
                    "kind": "compute#instanceGroupManager",
                    "name": mig.name,
                    "targetSize": mig.target,
                    "instanceGroup": self._group_url(mig),
                    "selfLink": url,
                },
                None,
            )
        if method == "POST" and verb == "/listManagedInstances":
            items = [
                {
                    "instance": self.vm_url(v),
                    "instanceStatus": v.status,
                    "currentAction": v.action,
                    "propertiesFromFlexibilityPolicy": {"machineType": v.type},
                }
                for v in mig.vms.values()
            ]
            return 200, {"managedInstances": items}, None
        if method == "GET" and verb == "/listErrors":
            return 200, {"items": mig.errors[-int(q.get("maxResults", 500)) :]}, None
        if method == "POST" and verb == "/resize":
            if "size" not in q or int(q["size"]) < 0:
                return self._error(400, "required", "Required field 'size' not specified")
            mig.target = int(q["size"])
            return self._op(url)
        if method == "POST" and verb == "/deleteInstances":
            urls = json.loads(body).get("instances", [])
            names = [u.rsplit("/", 1)[-1] for u in urls]
            members = {self.vm_url(v) for v in mig.vms.values()}
            if not urls or any(u not in members for u in urls):
                return self._error(400, "invalid", f"Instances {urls} are not members of {mig.name}")
            for n in names:
                self.deleted[n] = mig.vms.pop(n)
            mig.target -= len(names)  # deleteInstances reduces the target size by as many
            return self._op(url)
        return self._error(404, "notFound", f"no such method {method} {verb}")

    # -- GCS: GET metadata / ?alt=media, multipart upload with ifGenerationMatch ---------------------------
    def _storage(self, method: str, path: str, q: dict[str, str], body: bytes, ctype: str) -> tuple[int, Any, Any]:
        m = re.fullmatch(r"(?:/download)?/storage/v1/b/([^/]+)/o/(.+)", path)
        if method == "GET" and m:
            from urllib.parse import unquote

            key = f"{m.group(1)}/{unquote(m.group(2))}"
            if key not in self.objects:
                return self._error(404, "notFound", "No such object")
            data, gen = self.objects[key]
            if q.get("alt") == "media":
                if "ifGenerationMatch" in q and int(q["ifGenerationMatch"]) != gen:
                    return self._error(412, "conditionNotMet", "At least one of the pre-conditions did not hold.")
                return 200, None, data
            return 200, self._meta(key, data, gen), None
        m = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", path)
        if method == "POST" and m and q.get("uploadType") == "multipart":
            msg = message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            parts = [p.get_payload(decode=True) for p in msg.get_payload()]  # type: ignore[union-attr]
            meta, data = json.loads(parts[0]), parts[1]
            key = f"{m.group(1)}/{meta['name']}"
            current = self.objects.get(key, (b"", 0))[1]
            if "ifGenerationMatch" in q and int(q["ifGenerationMatch"]) != current:
                return self._error(412, "conditionNotMet", "At least one of the pre-conditions did not hold.")
            self.objects[key] = (data, current + 1 if current else 1_700_000_000_000_001)
            return 200, self._meta(key, data, self.objects[key][1]), None
        return self._error(404, "notFound", f"no such path {method} {path}")

    def generation_of(self, data: bytes) -> int:
        return next((g for d, g in self.objects.values() if d == data), 0)

    @staticmethod
    def _meta(key: str, data: bytes, gen: int) -> dict[str, Any]:
        bucket, name = key.split("/", 1)
        meta = {"kind": "storage#object", "bucket": bucket, "name": name}
        return {**meta, "generation": str(gen), "size": str(len(data))}
