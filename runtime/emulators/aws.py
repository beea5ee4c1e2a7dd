"""AWS instance metadata (IMDSv2) as documented: token flow, 401 without a valid token when
tokens are required, 404 until a notice exists, the notice bodies AWS serves."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from spotstack.runtime.emulators.server import CONTROL, EmulatorServer, iso_utc
from spotstack.runtime.emulators.tokens import TokenIssuer

META = "/latest/meta-data"


class AwsImdsEmulator(EmulatorServer):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instance_id: str = "i-0123456789abcdef0",
        region: str = "us-east-1",
        zone: str = "us-east-1a",
        tokens_required: bool = True,
        tags: dict[str, str] | None = None,
        instance_profile_role: str | None = "spotstack-node",
    ) -> None:
        # The instance profile's role and the temporary credentials IMDS serves for it (SDKs read them here).
        self.role = instance_profile_role
        self.credentials = {
            "Code": "Success",
            "LastUpdated": "2026-01-01T00:00:00Z",
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAEMULATEDNODEKEY0",
            "SecretAccessKey": "emulated-node-secret",
            "Token": "emulated-session-token",
            "Expiration": "2099-01-01T00:00:00Z",
        }
        self.instance_id, self.region, self.zone = instance_id, region, zone
        self.tokens_required = tokens_required
        self.tags = dict(tags or {})
        self.issuer = TokenIssuer("X-aws-ec2-metadata-token-ttl-seconds", "X-aws-ec2-metadata-token")
        self._initial()
        super().__init__(host, port)

    def _initial(self) -> None:
        self.instance_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.lifecycle_state = "InService"
        self.scheduled: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self._initial()

    # -- what a test or the market simulator does -------------------------------------------
    def post_spot_notice(self, in_s: float = 120.0, action: str = "terminate", at: float | None = None) -> float:
        when = at if at is not None else time.time() + in_s
        self.instance_action = {"action": action, "time": iso_utc(when)}
        return when

    def post_rebalance(self) -> None:
        self.rebalance = {"noticeTime": iso_utc(time.time())}

    def set_lifecycle_state(self, state: str) -> None:
        self.lifecycle_state = state

    def add_scheduled_event(self, code: str, not_before: float, event_id: str = "instance-event-0abc") -> None:
        fmt = "%d %b %Y %H:%M:%S GMT"
        self.scheduled.append(
            {
                "NotBefore": time.strftime(fmt, time.gmtime(not_before)),
                "Code": code,
                "Description": f"scheduled {code}",
                "EventId": event_id,
                "NotAfter": time.strftime(fmt, time.gmtime(not_before + 7200)),
                "State": "active",
            }
        )

    def reschedule_event(self, event_id: str, not_before: float) -> None:
        """AWS lets the owner move a scheduled event to a later window: its EventId stays, NotBefore changes."""
        fmt = "%d %b %Y %H:%M:%S GMT"
        for ev in self.scheduled:
            if ev["EventId"] == event_id:
                ev["NotBefore"] = time.strftime(fmt, time.gmtime(not_before))
                ev["NotAfter"] = time.strftime(fmt, time.gmtime(not_before + 7200))

    def cancel_event(self, event_id: str) -> None:
        """A canceled event stays listed for a while with State "canceled" (the IMDS documentation)."""
        for ev in self.scheduled:
            if ev["EventId"] == event_id:
                ev["State"] = "canceled"

    def withdraw_rebalance(self) -> None:
        """The recommendation path answers 404 again (the risk passed, or the instance was replaced)."""
        self.rebalance = None

    def state(self) -> dict[str, Any]:
        return {
            "instance_action": self.instance_action,
            "rebalance": self.rebalance,
            "lifecycle_state": self.lifecycle_state,
            "tokens_issued": self.issuer.issued,
        }

    # -- HTTP ------------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_put("/latest/api/token", self.issuer.put_token)
        app.router.add_get(META + "/{path:.*}", self._meta)
        app.router.add_post(f"{CONTROL}/notice", self._ctl_notice)
        app.router.add_post(f"{CONTROL}/rebalance", self._ctl_rebalance)
        app.router.add_post(f"{CONTROL}/lifecycle", self._ctl_lifecycle)
        app.router.add_post(f"{CONTROL}/scheduled", self._ctl_scheduled)

    def _value(self, path: str) -> str | None:
        if path == "instance-id":
            return self.instance_id
        if path == "placement/region":
            return self.region
        if path == "placement/availability-zone":
            return self.zone
        if path == "local-ipv4":
            return "127.0.0.1"
        if path == "spot/instance-action":
            return None if self.instance_action is None else json.dumps(self.instance_action)
        if path == "events/recommendations/rebalance":
            return None if self.rebalance is None else json.dumps(self.rebalance)
        if path == "autoscaling/target-lifecycle-state":
            return self.lifecycle_state
        if path == "events/maintenance/scheduled":
            return json.dumps(self.scheduled)
        if path.startswith("tags/instance/"):
            return self.tags.get(path[len("tags/instance/") :])
        if path == "tags/instance":
            return "\n".join(sorted(self.tags)) or None
        creds = "iam/security-credentials/"
        if self.role is not None and path in (creds, creds.rstrip("/")):
            return self.role
        if self.role is not None and path == creds + self.role:
            return json.dumps(self.credentials)
        return None

    async def _meta(self, request: web.Request) -> web.Response:
        auth = self.issuer.check(request)
        if auth == "invalid" or (auth == "missing" and self.tokens_required):
            return web.Response(status=401, text="Unauthorized")
        value = self._value(request.match_info["path"])
        if value is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(text=value, content_type="text/plain")

    async def _ctl_notice(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        when = self.post_spot_notice(float(body.get("in_s", 120)), str(body.get("action", "terminate")), body.get("at"))
        return web.json_response({"time": iso_utc(when)})

    async def _ctl_rebalance(self, request: web.Request) -> web.Response:
        self.post_rebalance()
        return web.json_response({"ok": True})

    async def _ctl_lifecycle(self, request: web.Request) -> web.Response:
        self.set_lifecycle_state(str((await request.json())["state"]))
        return web.json_response({"ok": True})

    async def _ctl_scheduled(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.add_scheduled_event(
            str(body["code"]), float(body["not_before"]), str(body.get("event_id", "instance-event-0abc"))
        )
        return web.json_response({"ok": True})
