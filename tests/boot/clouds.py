"""Each cloud as a booting node sees it, on loopback: its metadata server, its secret store holding the
fleet's cache token, and its object store holding the model (with the manifest beside it)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from aiohttp import web

from spotstack.components import agent_wheel
from spotstack.runtime.cache.manifest import MANIFEST_NAME, Manifest
from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.net import free_port, serve
from tests.clouds.alicloud_api import AcrFake, EssFake, OosFake, OssFake
from tests.clouds.alicloud_fleet import AlicloudFleetFake
from tests.clouds.gcp_api import SecretManagerFake
from tests.clouds.gcp_compute import ComputeFake
from tests.waits import wait_for

TOKEN = "fleet-cache-token-0123456789abcdef0123"
REGISTRY_INSTANCE = "cri-acme0dev0registry"  # stacks/Pulumi.dev-alicloud.yaml
HOME_ALICLOUD = "us-west-1"
"""The Alibaba stacks' (home) region: the registry's and the model bucket's."""


def secret_name(fetch_command: str) -> str:
    m = re.search(r"--name ([^\s)]+)", fetch_command)
    assert m, f"no --name in the boot's secret fetch: {fetch_command}"
    return m.group(1)


def split_url(model_url: str) -> tuple[str, str]:
    bucket, _, prefix = model_url.split("://", 1)[1].partition("/")
    return bucket, prefix.rstrip("/")


class LatePermission:
    """The node's permission to read the token reaches the cloud's IAM `after_s` seconds after the node first asks
    (and is refused): the boot must retry, however long the node took to get there. 0: granted from the start."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.first_refused: float | None = None
        self.denied = 0

    @property
    def allowed_from(self) -> float:
        """When the permission arrived (infinity while the node has not asked yet)."""
        if self.after_s <= 0:
            return 0.0
        return float("inf") if self.first_refused is None else self.first_refused + self.after_s

    def refuse(self) -> bool:
        """Whether a read now is refused (counted)."""
        now = time.time()
        if now >= self.allowed_from:
            return False
        if self.first_refused is None:
            self.first_refused = now
        self.denied += 1
        return True


class Cloud(ABC):
    def __init__(
        self,
        model: dict[str, bytes],
        manifest: Manifest,
        model_url: str,
        secret: str,
        delay_s: float,
        region: str | None = None,
    ):
        """`region`: the node's, when it is not the fleet's home region (a fleet across regions)."""
        self.model, self.manifest, self.secret = model, manifest, secret
        self.region = region
        self.bucket, self.prefix = split_url(model_url)
        self.permission = LatePermission(delay_s)
        """When the node's permission to read the token reaches the cloud's IAM."""
        self._runners: list[web.AppRunner] = []

    def objects(self) -> dict[str, bytes]:
        keys = {f"{self.prefix}/{rel}": data for rel, data in self.model.items()}
        keys[f"{self.prefix}/{MANIFEST_NAME}"] = self.manifest.to_json().encode()
        # The agent's wheel, as the fleet publishes it beside the model (the node fetches it at first boot).
        wheel = agent_wheel.build()
        keys[wheel.key] = wheel.path.read_bytes()
        return keys

    async def serve(self, app: web.Application) -> str:
        runner, port = await serve(app, "127.0.0.1", 0)
        self._runners.append(runner)
        return f"http://127.0.0.1:{port}"

    @abstractmethod
    async def start(self) -> dict[str, str]:
        """Start the cloud's servers; return the node environment that points at them."""

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()

    def denied(self) -> int:
        """How many token reads the store refused (a delayed permission must have refused some)."""
        return self.permission.denied


class Aws(Cloud):
    """moto (SSM, S3, EC2) as one server process; IMDSv2 with tokens required and the instance profile."""

    async def start(self) -> dict[str, str]:
        port = free_port()
        self.moto = subprocess.Popen(  # noqa: ASYNC220 - starts at once; waited for below
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: asyncio.to_thread(_up, self.url + "/moto-api/"), 60, "moto server")
        import boto3

        kw: dict[str, Any] = {
            "endpoint_url": self.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        s3 = boto3.client("s3", **kw)  # the model bucket is the home region's, read from every region
        s3.create_bucket(Bucket=self.bucket)
        for key, data in self.objects().items():
            s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        region = self.region or "us-east-1"
        if region != "us-east-1":
            # The home region holds a token of its own under the same name: a node reading the wrong region's
            # parameter gets the wrong token (check_node compares).
            boto3.client("ssm", **kw).put_parameter(Name=self.secret, Value="home-regions-token", Type="SecureString")
        boto3.client("ssm", **{**kw, "region_name": region}).put_parameter(
            Name=self.secret, Value=TOKEN, Type="SecureString"
        )
        # moto cannot refuse a permission: the node's SSM calls go through a gate that refuses its reads until the
        # permission arrives (`AWS_ENDPOINT_URL_SSM`, botocore's per-service endpoint) and passes the rest to moto.
        gate = web.Application()
        gate.router.add_post("/", self._ssm_gate)
        ssm = await self.serve(gate)
        self.imds = AwsImdsEmulator(
            region=region, zone=f"{region}a", tags={"spotstack:fleet": "llm", "aws:autoscaling:groupName": "llm-spot"}
        )
        await self.imds.start()
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_SSM": ssm,
            # botocore reads the instance profile's credentials from IMDS, as on a node.
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds.url + "/",
            "SPOTSTACK_AGENT__METADATA__BASE_URL": self.imds.url,
        }

    async def _ssm_gate(self, request: web.Request) -> web.Response:
        import aiohttp

        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if target == "AmazonSSM.GetParameter" and self.permission.refuse():
            message = f"User is not authorized to perform: ssm:GetParameter on resource: {self.secret}"
            doc = {"__type": "AccessDeniedException", "message": message}
            return web.json_response(doc, status=400, content_type="application/x-amz-json-1.1")
        keep = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + "/", data=body, headers=keep) as r,
        ):
            return web.Response(body=await r.read(), status=r.status, content_type=r.content_type)

    async def stop(self) -> None:
        await self.imds.stop()
        self.moto.terminate()
        self.moto.wait(30)
        await super().stop()


class Gcp(Cloud):
    """The metadata server (service-account token), Secret Manager, and GCS (gcp-storage-emulator)."""

    async def start(self) -> dict[str, str]:
        from gcp_storage_emulator.server import create_server

        region = self.region or "us-central1"
        self.meta = GcpMetadataEmulator(zone=f"{region}-a")
        await self.meta.start()
        self.secrets = SecretManagerFake({self.secret: TOKEN}, self.meta.access_token, refuse=self.permission.refuse)
        app = web.Application()
        self.secrets.routes(app)
        api = await self.serve(app)
        port = free_port()
        self.gcs = create_server("127.0.0.1", port, in_memory=True, default_bucket=self.bucket)
        self.gcs.start()
        gcs = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(self._upload, gcs)
        host = self.meta.url.removeprefix("http://")
        # Peer discovery lists the fleet's VMs through the Compute API with the node's token.
        self.compute = ComputeFake("acme-ml", region, [f"{region}-a"], "backend")
        self.compute.token = self.meta.access_token
        return {
            "SPOTSTACK_AGENT__METADATA__BASE_URL": self.meta.url,
            "SPOTSTACK_AGENT__CACHE__DISCOVERY_ENDPOINT": self.compute.url,
            "SPOTSTACK_SECRETS_API_URL": api,
            "STORAGE_EMULATOR_HOST": gcs,
            # google-auth finds the node's service account through these (gcsfs's credentials).
            "GCE_METADATA_HOST": host,
            "GCE_METADATA_IP": host,
            # gcsfs's newer client asks for the bucket type over gRPC, which the emulator does not speak.
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def _upload(self, gcs: str) -> None:
        import urllib.parse

        for key, data in self.objects().items():
            q = urllib.parse.urlencode({"uploadType": "media", "name": key})
            req = urllib.request.Request(f"{gcs}/upload/storage/v1/b/{self.bucket}/o?{q}", data=data, method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200

    async def stop(self) -> None:
        self.compute.stop()
        self.gcs.stop()
        await self.meta.stop()
        await super().stop()


class Alicloud(Cloud):
    """ECS metadata (the RAM role's STS credentials), OOS (secret parameter) and OSS, both checking signatures."""

    async def start(self) -> dict[str, str]:
        region = self.region or HOME_ALICLOUD
        self.meta = AlicloudMetadataEmulator(region=region, zone=f"{region}a")
        await self.meta.start()
        creds = self.meta.credentials
        # The token is the node's own region's parameter; the bucket and the registry are the home region's.
        self.oos = OosFake({self.secret: TOKEN}, creds, refuse=self.permission.refuse, region=region)
        self.oss = OssFake({self.bucket: self.objects()}, creds, region=HOME_ALICLOUD)
        self.acr = AcrFake(REGISTRY_INSTANCE, creds, region=HOME_ALICLOUD)
        self.ess = EssFake({self.meta.instance_id: "InService"}, creds)
        apps = oos_app, oss_app, acr_app, ess_app = [web.Application() for _ in range(4)]
        for fake, app in zip((self.oos, self.oss, self.acr, self.ess), apps, strict=True):
            fake.routes(app)
        # Peer discovery: ECS DescribeInstances by the fleet tag, signed with the node role's STS credentials.
        ecs_creds = {k: creds[k] for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken")}
        self.ecs = AlicloudFleetFake(ecs_creds, self.meta.region, "sgp", "lsn")
        ecs_app = web.Application()
        ecs_app.router.add_get("/", self.ecs.rpc)
        return {
            "SPOTSTACK_AGENT__CACHE__DISCOVERY_ENDPOINT": await self.serve(ecs_app),
            "SPOTSTACK_AGENT__METADATA__BASE_URL": self.meta.url,
            "SPOTSTACK_SECRETS_API_URL": await self.serve(oos_app),
            "SPOTSTACK_AGENT__CACHE__ORIGIN_ENDPOINT": await self.serve(oss_app),
            "SPOTSTACK_REGISTRY_API_URL": await self.serve(acr_app),
            "SPOTSTACK_AGENT__LIFECYCLE__ENDPOINT_URL": await self.serve(ess_app),
        }

    async def stop(self) -> None:
        await self.meta.stop()
        await super().stop()


CLOUDS: dict[str, type[Cloud]] = {"aws": Aws, "gcp": Gcp, "alicloud": Alicloud}


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def model_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
