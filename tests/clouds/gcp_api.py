"""GCP's Secret Manager `versions/latest:access`, as documented: a bearer token from the metadata server's
service account, 403 PERMISSION_DENIED without the accessor role, 404 for an unknown secret."""

from __future__ import annotations

import base64
from collections.abc import Callable

from aiohttp import web


class SecretManagerFake:
    def __init__(
        self, secrets: dict[str, str], access_token: str, *, refuse: Callable[[], bool] = lambda: False
    ) -> None:
        self.secrets = secrets
        self.access_token = access_token
        self.refuse = refuse
        """Whether the node's account lacks the role now (IAM not yet propagated)."""
        self.denied = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/{name:.+}/versions/latest:access", self._access)

    async def _access(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if request.headers.get("Authorization") != f"Bearer {self.access_token}" or self.refuse():
            self.denied += 1
            msg = f"Permission 'secretmanager.versions.access' denied for resource '{name}/versions/latest'"
            error = {"code": 403, "message": msg, "status": "PERMISSION_DENIED"}
            return web.json_response({"error": error}, status=403)
        if name not in self.secrets:
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        data = base64.b64encode(self.secrets[name].encode()).decode()
        return web.json_response({"name": f"{name}/versions/1", "payload": {"data": data}})
