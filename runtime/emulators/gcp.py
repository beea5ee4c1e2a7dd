"""GCP's metadata server as documented: `Metadata-Flavor: Google` required (403 without),
values with ETags, and `?wait_for_change=true` long-polls that return when the value changes
(at once if `last_etag` is already stale) or after `timeout_sec` with the current value."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from aiohttp import web

from spotstack.runtime.emulators.server import CONTROL, EmulatorServer

PREFIX = "/computeMetadata/v1"


def etag(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()[:16]


class GcpMetadataEmulator(EmulatorServer):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instance_id: str = "4567890123456789012",
        name: str = "spot-node-1",
        zone: str = "us-central1-a",
        project_number: str = "123456789012",
        service_account: str = "spotstack-node@acme-ml.iam.gserviceaccount.com",
        project_id: str = "acme-ml",
    ) -> None:
        self.project = {"project-id": project_id, "numeric-project-id": project_number}
        self.service_account = service_account
        self.access_token = "ya29.emulated-node-token"
        self.values: dict[str, str] = {}
        self.meta = {
            "id": instance_id,
            "name": name,
            "zone": f"projects/{project_number}/zones/{zone}",
            "network-interfaces/0/ip": "127.0.0.1",
        }
        self._changed: asyncio.Condition | None = None
        self._closing = False
        self._initial()
        super().__init__(host, port)

    def _initial(self) -> None:
        self.values = {"preempted": "FALSE", "maintenance-event": "NONE"}

    def reset(self) -> None:
        super().reset()
        self._initial()
        self._notify()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _notify(self) -> None:
        cond = self._changed
        if cond is None:
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        asyncio.get_running_loop().create_task(wake())

    def closing(self) -> None:
        self._closing = True
        self._notify()

    def set_value(self, key: str, value: str) -> None:
        self.values[key] = value
        self._notify()

    def preempt(self) -> None:
        self.set_value("preempted", "TRUE")

    def state(self) -> dict[str, Any]:
        return dict(self.values)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get(PREFIX + "/instance/service-accounts/{account}/{what:.*}", self._account)
        app.router.add_get(PREFIX + "/instance/{path:.*}", self._instance)
        app.router.add_get(PREFIX + "/project/{path}", self._project)
        app.router.add_post(f"{CONTROL}/notice", self._ctl_notice)
        app.router.add_post(f"{CONTROL}/maintenance", self._ctl_maintenance)

    async def _root(self, request: web.Request) -> web.Response:
        # Client libraries (google-auth) probe the server's root and look for this header.
        return web.Response(text="computeMetadata/\n", headers={"Metadata-Flavor": "Google"})

    async def _account(self, request: web.Request) -> web.Response:
        """The node's service account: its info (`?recursive=true`), email, and an OAuth access token."""
        if request.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        if request.match_info["account"] not in ("default", self.service_account):
            return web.Response(status=404, text="Not Found", headers={"Metadata-Flavor": "Google"})
        what = request.match_info["what"].rstrip("/")
        scopes = ["https://www.googleapis.com/auth/cloud-platform"]
        if what == "token":
            body = {"access_token": self.access_token, "expires_in": 3599, "token_type": "Bearer"}
            return web.json_response(body, headers={"Metadata-Flavor": "Google"})
        if what == "" and request.query.get("recursive") == "true":
            info = {"aliases": ["default"], "email": self.service_account, "scopes": scopes}
            return web.json_response(info, headers={"Metadata-Flavor": "Google"})
        if what == "email":
            return self._answer(self.service_account)
        if what == "scopes":
            return self._answer("\n".join(scopes))
        return web.Response(status=404, text="Not Found", headers={"Metadata-Flavor": "Google"})

    async def _project(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        value = self.project.get(request.match_info["path"])
        if value is None:
            return web.Response(status=404, text="Not Found", headers={"Metadata-Flavor": "Google"})
        return self._answer(value)

    async def _instance(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        path = request.match_info["path"]
        if path in self.meta:
            return self._answer(self.meta[path])
        if path not in self.values:
            return web.Response(status=404, text="Not Found", headers={"Metadata-Flavor": "Google"})
        if request.query.get("wait_for_change") == "true":
            timeout = float(request.query.get("timeout_sec", "300"))
            last = request.query.get("last_etag")
            start = self.values[path]
            cond = self._condition()

            def changed() -> bool:
                if self._closing:
                    return True
                current = self.values[path]
                return current != start if last is None else etag(current) != last

            async with cond:
                with contextlib.suppress(asyncio.TimeoutError):  # timeout_sec passed: answer the current value
                    await asyncio.wait_for(cond.wait_for(changed), timeout)
        return self._answer(self.values[path])

    @staticmethod
    def _answer(value: str) -> web.Response:
        return web.Response(
            text=value, content_type="application/text", headers={"Metadata-Flavor": "Google", "ETag": etag(value)}
        )

    async def _ctl_notice(self, request: web.Request) -> web.Response:
        self.preempt()
        return web.json_response({"ok": True})

    async def _ctl_maintenance(self, request: web.Request) -> web.Response:
        self.set_value("maintenance-event", str((await request.json())["value"]))
        return web.json_response({"ok": True})
