"""The boot's token fetch on GCP (Secret Manager) and Alibaba Cloud (OOS secret parameter), against loopback
servers that answer as the clouds document: the metadata server's token / STS credentials, then the secret
store, which refuses a request without the right credentials (or, for Alibaba, a wrong signature)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from spotstack.runtime.net import serve
from spotstack.runtime.secrets import SecretError, rpc_signature
from tests.clouds.alicloud_api import independent_signature

TOKEN = "peer-cache-token-0123456789abcdef"


@pytest.fixture
async def gcp_fake() -> AsyncIterator[str]:
    async def token(request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403)
        return web.json_response({"access_token": "ya29.node-sa", "expires_in": 3599, "token_type": "Bearer"})

    async def access(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer ya29.node-sa":
            return web.json_response({"error": {"code": 403, "status": "PERMISSION_DENIED"}}, status=403)
        if request.match_info["name"] != "projects/p1/secrets/spotstack-dev-llm-cache-token":
            return web.json_response({"error": {"code": 404}}, status=404)
        data = base64.b64encode(TOKEN.encode()).decode()
        return web.json_response({"name": "…/versions/1", "payload": {"data": data, "dataCrc32c": "0"}})

    app = web.Application()
    app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/token", token)
    app.router.add_get("/v1/{name:.+}/versions/latest:access", access)
    runner, port = await serve(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def fetch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "agent", "fetch-secret", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_gcp_secret_with_the_nodes_service_account(gcp_fake: str) -> None:
    import asyncio

    name = "projects/p1/secrets/spotstack-dev-llm-cache-token"
    r = await asyncio.to_thread(
        fetch, "--cloud", "gcp", "--name", name, "--metadata-url", gcp_fake, "--api-url", gcp_fake
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == TOKEN
    denied = await asyncio.to_thread(
        fetch,
        "--cloud",
        "gcp",
        "--name",
        "projects/p1/secrets/other",
        "--metadata-url",
        gcp_fake,
        "--api-url",
        gcp_fake,
    )
    assert denied.returncode == 1 and "HTTP 404" in denied.stderr and "Traceback" not in denied.stderr


@pytest.fixture
async def ali_fake() -> AsyncIterator[str]:
    creds = {"AccessKeyId": "STS.node", "AccessKeySecret": "s3cr3t/+=~ key", "SecurityToken": "tok", "Code": "Success"}

    async def roles(request: web.Request) -> web.Response:
        return web.Response(text="llm-node")

    async def role(request: web.Request) -> web.Response:
        return web.json_response(creds)

    async def oos(request: web.Request) -> web.Response:
        q = dict(request.query)
        if q.get("Signature") != independent_signature(q, creds["AccessKeySecret"]):
            return web.json_response({"Code": "IncompleteSignature"}, status=400)
        if q.get("SecurityToken") != "tok" or q.get("Action") != "GetSecretParameter":
            return web.json_response({"Code": "Forbidden.RAM"}, status=403)
        if q.get("WithDecryption") != "true" or q.get("Name") != "spotstack-dev-llm-cache-token":
            return web.json_response({"Code": "EntityNotExists.Parameter"}, status=404)
        return web.json_response({"RequestId": "x", "Parameter": {"Name": q["Name"], "Value": TOKEN}})

    app = web.Application()
    app.router.add_get("/latest/meta-data/ram/security-credentials/", roles)
    app.router.add_get("/latest/meta-data/ram/security-credentials/llm-node", role)
    app.router.add_get("/", oos)
    runner, port = await serve(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_alicloud_oos_secret_with_a_signed_request(ali_fake: str) -> None:
    import asyncio

    args = ["--cloud", "alicloud", "--name", "spotstack-dev-llm-cache-token", "--region", "us-west-1"]
    r = await asyncio.to_thread(fetch, *args, "--metadata-url", ali_fake, "--api-url", ali_fake)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == TOKEN


def test_signature_matches_the_documented_algorithm() -> None:
    params = {"Action": "DescribeRegions", "Format": "XML", "Name": "a b*c~d/é", "Timestamp": "2016-02-23T12:46:24Z"}
    assert rpc_signature("GET", params, "testsecret") == independent_signature(params, "testsecret")


def test_unreachable_store_is_a_secret_error() -> None:
    from spotstack.runtime.secrets import gcp_secret

    with pytest.raises(SecretError):
        gcp_secret("projects/p/secrets/s", metadata_url="http://127.0.0.1:9", api_url="http://127.0.0.1:9")


async def test_alicloud_registry_login_hands_docker_a_temporary_token(tmp_path: Path) -> None:
    """Finding 16: nodes log Docker in to the fleet's ACR EE instance with their RAM role before each start."""
    import asyncio
    import os

    from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
    from tests.clouds.alicloud_api import AcrFake

    async with AlicloudMetadataEmulator() as meta:
        acr = AcrFake("cri-acme0001", meta.credentials)  # type: ignore[attr-defined]
        app = web.Application()
        acr.routes(app)
        runner, port = await serve(app, "127.0.0.1", 0)
        docker = tmp_path / "docker"
        docker.write_text(f'#!/bin/sh\necho "$*" > {tmp_path}/args\ncat > {tmp_path}/stdin\n')
        docker.chmod(0o755)
        env = {**os.environ, "SPOTSTACK_AGENT__METADATA__BASE_URL": meta.url}
        env["SPOTSTACK_REGISTRY_API_URL"] = f"http://127.0.0.1:{port}"
        host = "acme-registry-vpc.us-west-1.cr.aliyuncs.com"
        args = ["--instance-id", "cri-acme0001", "--region", "us-west-1", "--registry", host, "--docker", str(docker)]
        cmd = [sys.executable, "-m", "spotstack.cli.main", "agent", "registry-login", *args]
        try:
            r = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert (tmp_path / "args").read_text().split() == [
                "login",
                "--username",
                "cr_temp_user",
                "--password-stdin",
                host,
            ]
            assert (tmp_path / "stdin").read_text() == acr.password  # on stdin, never on the command line
            bad = [*cmd[:-8], "--instance-id", "cri-other", *cmd[-6:]]
            r = await asyncio.to_thread(subprocess.run, bad, env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 1 and "HTTP 404" in r.stderr and "Traceback" not in r.stderr
        finally:
            await runner.cleanup()
