"""Alibaba Cloud APIs a node calls, as documented, checking the caller's signature with the STS credentials
the metadata server handed out: OOS `GetSecretParameter` (RPC style, signature v1 HMAC-SHA1) and the OSS
object API (ListObjects v1, HeadObject/GetObjectMeta, ranged GetObject, PutObject with `x-oss-forbid-overwrite`
(409 FileAlreadyExists), DeleteObject; Signature V4 only, `OSS4-HMAC-SHA256` with `x-oss-security-token`).
Path-style addressing, which OSS SDKs use when the endpoint is an IP address."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable
from xml.sax.saxutils import escape

from aiohttp import web


def independent_signature(query: dict[str, str], secret: str) -> str:
    """The RPC signature, written out step by step from Alibaba's documentation (not the code under test)."""

    def enc(s: str) -> str:
        return urllib.parse.quote(s, safe="~").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")

    pairs = sorted((enc(k), enc(v)) for k, v in query.items() if k != "Signature")
    canonical = "&".join(f"{k}={v}" for k, v in pairs)
    string_to_sign = "GET&" + enc("/") + "&" + enc(canonical)
    return base64.b64encode(hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()


class RpcFake:
    """One RPC-style API on `/`: the caller's signature and STS credentials are checked, then `answer`."""

    action = ""
    version = ""

    def __init__(self, credentials: dict[str, str]) -> None:
        self.credentials = credentials

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._rpc)

    async def _rpc(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        if q.get("Signature") != independent_signature(q, self.credentials["AccessKeySecret"]):
            return web.json_response({"Code": "IncompleteSignature"}, status=400)
        if (
            q.get("AccessKeyId") != self.credentials["AccessKeyId"]
            or q.get("SecurityToken") != self.credentials["SecurityToken"]
        ):
            return web.json_response({"Code": "InvalidAccessKeyId.NotFound"}, status=404)
        if q.get("Action") != self.action or q.get("Version") != self.version:
            return web.json_response({"Code": "InvalidAction.NotFound"}, status=404)
        return self.answer(q)

    def answer(self, q: dict[str, str]) -> web.Response:
        raise NotImplementedError


class OosFake(RpcFake):
    """OOS `GetSecretParameter` (2019-06-01): 403 until the node's permission has arrived."""

    action, version = "GetSecretParameter", "2019-06-01"

    def __init__(
        self,
        parameters: dict[str, str],
        credentials: dict[str, str],
        *,
        refuse: Callable[[], bool] = lambda: False,
        region: str = "us-west-1",
    ) -> None:
        """`region`: where the parameters are (OOS is regional: another region's endpoint does not have them)."""
        super().__init__(credentials)
        self.parameters = parameters
        self.refuse = refuse
        """Whether the node's role lacks the permission now (RAM not yet propagated)."""
        self.region = region
        self.denied = 0

    def answer(self, q: dict[str, str]) -> web.Response:
        if q.get("RegionId") != self.region:
            return web.json_response({"Code": "EntityNotExists.Parameter", "Message": "not in this region"}, status=404)
        if self.refuse():
            self.denied += 1
            return web.json_response({"Code": "Forbidden.RAM", "Message": "User not authorized"}, status=403)
        if q.get("WithDecryption") != "true" or q.get("Name") not in self.parameters:
            return web.json_response({"Code": "EntityNotExists.Parameter"}, status=404)
        value = self.parameters[q["Name"]]
        return web.json_response({"RequestId": "r", "Parameter": {"Name": q["Name"], "Value": value}})


class AcrFake(RpcFake):
    """Container Registry's `GetAuthorizationToken` (2018-12-01): a temporary login for one EE instance."""

    action, version = "GetAuthorizationToken", "2018-12-01"

    def __init__(self, instance_id: str, credentials: dict[str, str], region: str = "us-west-1") -> None:
        """`region`: the instance's (asked of another region, the instance does not exist)."""
        super().__init__(credentials)
        self.instance_id = instance_id
        self.region = region
        self.password = "temp-registry-password-0123"

    def answer(self, q: dict[str, str]) -> web.Response:
        if q.get("InstanceId") != self.instance_id or q.get("RegionId") != self.region:
            return web.json_response({"Code": "INSTANCE_NOT_EXIST"}, status=404)
        body = {"TempUsername": "cr_temp_user", "AuthorizationToken": self.password, "IsSuccess": True}
        return web.json_response({**body, "ExpireTime": 1795450000000, "Code": "success", "RequestId": "r"})


class EssFake(RpcFake):
    """Auto Scaling's `DescribeScalingInstances` (2014-08-28): each instance's lifecycle state."""

    action, version = "DescribeScalingInstances", "2014-08-28"

    def __init__(self, states: dict[str, str], credentials: dict[str, str]) -> None:
        super().__init__(credentials)
        self.states = states
        self.calls = 0

    def answer(self, q: dict[str, str]) -> web.Response:
        self.calls += 1
        wanted = [v for k, v in q.items() if k.startswith("InstanceIds.")]
        found = [{"InstanceId": i, "LifecycleState": self.states[i]} for i in wanted if i in self.states]
        return web.json_response({"ScalingInstances": {"ScalingInstance": found}, "TotalCount": len(found)})


# OSS signs these query parameters (sub-resources); the rest (prefix, marker, ...) are not signed.
SIGNED_SUBRESOURCES = {"acl", "bucketInfo", "location", "objectMeta", "security-token", "tagging", "uploadId"}


V4_AUTH = re.compile(
    r"OSS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/oss/aliyun_v4_request, "
    r"Signature=([0-9a-f]{64})(?:, AdditionalHeaders=([a-z0-9;-]+))?"
)


class OssFake:
    def __init__(
        self, buckets: dict[str, dict[str, bytes]], credentials: dict[str, str], region: str = "us-west-1"
    ) -> None:
        self.buckets = buckets
        self.credentials = credentials
        self.region = region
        self.reads = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{bucket}/{key:.*}", self._object)
        app.router.add_route("*", "/{bucket}", self._object)

    @staticmethod
    def _error(status: int, code: str) -> web.Response:
        body = f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code><Message>{code}</Message>"
        body += "<RequestId>r</RequestId><HostId>oss.emulated</HostId></Error>"
        return web.Response(status=status, body=body.encode(), content_type="application/xml", headers=_rid())

    def _signed(self, request: web.Request, bucket: str, key: str) -> bool:
        """Signature V4 only (OSS4-HMAC-SHA256, as OSS demands of buckets created since September 2025): V1's
        `OSS id:signature` is refused. An implementation of its own, from OSS's documentation (the node's signer is
        checked against Alibaba's SDK in tests/runtime/test_oss_v4.py)."""
        auth = request.headers.get("Authorization", "")
        m = V4_AUTH.fullmatch(auth)
        if m is None:
            return False
        key_id, date, region, signature = m.group(1), m.group(2), m.group(3), m.group(4)
        stamp = request.headers.get("x-oss-date", "")
        if key_id != self.credentials["AccessKeyId"] or region != self.region or stamp[:8] != date:
            return False
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            return False
        if abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) > 900:
            return False  # OSS's 15-minute window
        # An STS credential's token must come along; a plain AccessKey has none.
        if request.headers.get("x-oss-security-token", "") != (self.credentials.get("SecurityToken") or ""):
            return False
        additional = sorted(filter(None, (m.group(5) or "").split(";")))

        def enc(text: str, slash: bool) -> str:
            return urllib.parse.quote(text, safe="-_.~" + ("/" if slash else ""))

        signed = sorted(
            (k.lower(), v)
            for k, v in request.headers.items()
            if k.lower().startswith("x-oss-") or k.lower() in ("content-type", "content-md5") or k.lower() in additional
        )
        query = urllib.parse.parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
        canonical = "\n".join(
            [
                request.method,
                enc(f"/{bucket}/{key}", True),
                "&".join(f"{enc(k, False)}={enc(v, False)}" if v else enc(k, False) for k, v in sorted(query)),
                "".join(f"{k}:{v}\n" for k, v in signed),
                ";".join(additional),
                request.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
            ]
        )
        scope = f"{date}/{region}/oss/aliyun_v4_request"
        to_sign = f"OSS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        k = f"aliyun_v4{self.credentials['AccessKeySecret']}".encode()
        for part in (date, region, "oss", "aliyun_v4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        return hmac.compare_digest(hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest(), signature)

    async def _object(self, request: web.Request) -> web.Response:
        bucket, key = request.match_info["bucket"], request.match_info.get("key", "")
        if not self._signed(request, bucket, key):
            return self._error(403, "SignatureDoesNotMatch")
        if bucket not in self.buckets:
            return self._error(404, "NoSuchBucket")
        objects = self.buckets[bucket]
        if request.method == "GET" and not key:
            return self._list(bucket, objects, request.query)
        if request.method == "PUT" and key:
            data = await request.read()
            if key in objects and request.headers.get("x-oss-forbid-overwrite", "").lower() == "true":
                return self._error(409, "FileAlreadyExists")
            objects[key] = data
            return web.Response(headers={"ETag": f'"{hashlib.md5(data).hexdigest().upper()}"', **_rid()})
        if request.method == "DELETE" and key:
            objects.pop(key, None)
            return web.Response(status=204, headers=_rid())
        if key not in objects:
            return self._error(404, "NoSuchKey")
        data = objects[key]
        head = {
            "ETag": f'"{hashlib.md5(data).hexdigest().upper()}"',
            "Last-Modified": email.utils.formatdate(usegmt=True),
            "x-oss-object-type": "Normal",
            **_rid(),
        }
        if request.method == "HEAD":
            return web.Response(headers={**head, "Content-Length": str(len(data))})
        if request.method != "GET":
            return self._error(405, "MethodNotAllowed")
        self.reads += 1
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes="):
            lo, _, hi = rng[6:].partition("-")
            start, end = int(lo), min(int(hi) if hi else len(data) - 1, len(data) - 1)
            part = data[start : end + 1]
            head["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return web.Response(status=206, body=part, headers=head, content_type="application/octet-stream")
        return web.Response(body=data, headers=head, content_type="application/octet-stream")

    @staticmethod
    def _list(bucket: str, objects: dict[str, bytes], q: dict[str, str]) -> web.Response:
        prefix, delim, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
        url = q.get("encoding-type") == "url"

        def enc(s: str) -> str:
            return escape(urllib.parse.quote(s) if url else s)

        keys, prefixes = [], set()
        for k in sorted(objects):
            if not k.startswith(prefix) or k <= marker:
                continue
            rest = k[len(prefix) :]
            if delim and delim in rest:
                prefixes.add(prefix + rest.split(delim, 1)[0] + delim)
            else:
                keys.append(k)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        parts = [
            "<?xml version='1.0' encoding='UTF-8'?>\n<ListBucketResult>",
            f"<Name>{bucket}</Name><Prefix>{enc(prefix)}</Prefix><Marker>{enc(marker)}</Marker>",
            f"<MaxKeys>{q.get('max-keys', '100')}</MaxKeys><Delimiter>{enc(delim)}</Delimiter>",
            "<EncodingType>url</EncodingType>" if url else "",
            "<IsTruncated>false</IsTruncated>",
        ]
        for k in keys:
            etag = hashlib.md5(objects[k]).hexdigest().upper()
            parts.append(
                f'<Contents><Key>{enc(k)}</Key><LastModified>{stamp}</LastModified><ETag>"{etag}"</ETag>'
                f"<Type>Normal</Type><Size>{len(objects[k])}</Size><StorageClass>Standard</StorageClass>"
                "<Owner><ID>1</ID><DisplayName>1</DisplayName></Owner></Contents>"
            )
        parts += [f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in sorted(prefixes)]
        parts.append("</ListBucketResult>")
        return web.Response(body="".join(parts).encode(), content_type="application/xml", headers=_rid())


def _rid() -> dict[str, str]:
    return {"x-oss-request-id": "5C3D9A0C3B0E4B3F8D7E6A51"}
