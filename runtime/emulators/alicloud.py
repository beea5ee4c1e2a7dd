"""Alibaba Cloud ECS metadata as documented: optional hardened mode (token required), 404 on
`instance/spot/termination-time` until the instance is to be reclaimed, then its UTC time."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from spotstack.runtime.emulators.server import CONTROL, EmulatorServer, iso_utc
from spotstack.runtime.emulators.tokens import TokenIssuer

META = "/latest/meta-data"


class AlicloudMetadataEmulator(EmulatorServer):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instance_id: str = "i-bp67acfmxazb4p",
        region: str = "us-west-1",
        zone: str = "us-west-1a",
        tokens_required: bool = False,
        ram_role: str | None = "spotstack-node",
    ) -> None:
        # The instance RAM role's STS credentials, as ECS serves them (rotated by the cloud; fixed here).
        self.ram_role = ram_role
        self.credentials = {
            "AccessKeyId": "STS.emulatedkey",
            "AccessKeySecret": "emulated-secret",
            "SecurityToken": "emulated-security-token",
            "Expiration": "2099-01-01T00:00:00Z",
            "LastUpdated": "2026-01-01T00:00:00Z",
            "Code": "Success",
        }
        self.instance_id, self.region, self.zone = instance_id, region, zone
        self.tokens_required = tokens_required
        self.issuer = TokenIssuer("X-aliyun-ecs-metadata-token-ttl-seconds", "X-aliyun-ecs-metadata-token")
        self.termination_time: str | None = None
        super().__init__(host, port)

    def reset(self) -> None:
        super().reset()
        self.termination_time = None

    def post_spot_notice(self, in_s: float = 300.0, at: float | None = None) -> float:
        when = at if at is not None else time.time() + in_s
        self.termination_time = iso_utc(when)
        return when

    def state(self) -> dict[str, Any]:
        return {"termination_time": self.termination_time, "tokens_issued": self.issuer.issued}

    def routes(self, app: web.Application) -> None:
        app.router.add_put("/latest/api/token", self.issuer.put_token)
        app.router.add_get(META + "/{path:.*}", self._meta)
        app.router.add_post(f"{CONTROL}/notice", self._ctl_notice)

    async def _meta(self, request: web.Request) -> web.Response:
        auth = self.issuer.check(request)
        if auth == "missing" and self.tokens_required:
            return web.Response(status=403, text="Forbidden: metadata token required (hardened mode)")
        if auth == "invalid":
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        creds = "ram/security-credentials/"
        if path.startswith(creds) and self.ram_role is not None:
            if path == creds:
                return web.Response(text=self.ram_role, content_type="text/plain")
            if path == creds + self.ram_role:
                return web.json_response(self.credentials)
        value = {
            "instance-id": self.instance_id,
            "region-id": self.region,
            "zone-id": self.zone,
            "private-ipv4": "127.0.0.1",
            "instance/spot/termination-time": self.termination_time,
        }.get(path)
        if value is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(text=value, content_type="text/plain")

    async def _ctl_notice(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        when = self.post_spot_notice(float(body.get("in_s", 300)), body.get("at"))
        return web.json_response({"time": iso_utc(when)})
