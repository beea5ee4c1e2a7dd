"""Fetch one object from the fleet's bucket with the node's own identity, and check its sha256: how a node gets the
agent's wheel at first boot, before anything but the image's `python3` is there (standard library only; the boot
document carries this file and runs it as a script).

    python3 objectget.py s3://bucket/key SHA256 DEST --region us-east-1

s3:// signs with the instance profile's credentials from IMDSv2 (SigV4), gs:// uses the service account's token
from the metadata server, oss:// signs with the instance RAM role's STS credentials (OSS Signature V4, the
region's VPC-internal endpoint). It retries for about 8 minutes (the node's permission may reach the cloud's IAM
after the node boots), writes DEST atomically and only with the expected content, and exits 1 if it never could.
Endpoints follow the agent's overrides (`SPOTSTACK_AGENT__METADATA__BASE_URL`, `AWS_ENDPOINT_URL`,
`STORAGE_EMULATOR_HOST`, `SPOTSTACK_AGENT__CACHE__ORIGIN_ENDPOINT`), so tests point them at loopback servers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

METADATA = {"s3": "http://169.254.169.254", "gs": "http://metadata.google.internal", "oss": "http://100.100.100.200"}
TIMEOUT_S = 30.0
TRIES = 60


class FetchError(Exception):
    pass


def _open(req: urllib.request.Request) -> bytes:
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{req.get_method()} {req.full_url.split('?')[0]}: HTTP {exc.code}") from None
    except OSError as exc:
        raise FetchError(f"{req.get_method()} {req.full_url.split('?')[0]}: {exc}") from None


def _metadata(scheme: str) -> str:
    return (os.environ.get("SPOTSTACK_AGENT__METADATA__BASE_URL") or METADATA[scheme]).rstrip("/")


def aws_credentials(base: str) -> dict[str, str]:
    """The instance profile's credentials through IMDSv2 (a session token first)."""
    token = _open(
        urllib.request.Request(
            f"{base}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
        )
    ).decode()
    head = {"X-aws-ec2-metadata-token": token}
    path = f"{base}/latest/meta-data/iam/security-credentials/"
    role = _open(urllib.request.Request(path, headers=head)).decode().split()
    if not role:
        raise FetchError("no instance profile on this instance")
    return dict(json.loads(_open(urllib.request.Request(path + role[0], headers=head))))


def s3_request(bucket: str, key: str, region: str, creds: dict[str, str], now: dt.datetime) -> urllib.request.Request:
    """A SigV4-signed GetObject (path-style on an endpoint override, virtual-hosted on AWS)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    quoted = urllib.parse.quote(key, safe="/-_.~")
    if endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        host, path, base = parts.netloc, f"/{bucket}/{quoted}", f"{parts.scheme}://{parts.netloc}"
    else:
        host, path = f"{bucket}.s3.{region}.amazonaws.com", f"/{quoted}"
        base = f"https://{host}"
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    if creds.get("Token"):
        headers["x-amz-security-token"] = creds["Token"]
    names = ";".join(sorted(headers))
    canonical = "\n".join(["GET", path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), names, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + creds["SecretAccessKey"]).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={creds['AccessKeyId']}/{scope}, SignedHeaders={names}, Signature={signature}"
    sent = {k: v for k, v in headers.items() if k != "host"}
    return urllib.request.Request(base + path, headers={**sent, "Authorization": auth})


def gcs_request(bucket: str, key: str, base: str) -> urllib.request.Request:
    token = json.loads(
        _open(
            urllib.request.Request(
                f"{base}/computeMetadata/v1/instance/service-accounts/default/token",
                headers={"Metadata-Flavor": "Google"},
            )
        )
    )["access_token"]
    api = os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com").rstrip("/")
    url = f"{api}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media"
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})


def _v4_quote(text: str, keep_slash: bool) -> str:
    """OSS V4's URI encoding: RFC 3986 unreserved characters kept (and `/` in the path), the rest %XX."""
    return urllib.parse.quote(text, safe="-_.~" + ("/" if keep_slash else ""))


def oss_v4_headers(
    method: str,
    bucket: str,
    key: str,
    region: str,
    creds: dict[str, str],
    now: dt.datetime,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The headers that sign an OSS request with Signature V4 (OSS4-HMAC-SHA256, the region in its scope): OSS
    refuses V1 for buckets created since 1 September 2025 and for accounts created since 1 March 2025. `creds`:
    AccessKeyId, AccessKeySecret and an optional SecurityToken (STS). The payload is not signed (UNSIGNED-PAYLOAD);
    `headers` given (Content-Type, x-oss-*) are signed with the rest and returned with them."""
    stamp = now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = dict(headers or {})
    out["x-oss-date"] = stamp
    out["x-oss-content-sha256"] = "UNSIGNED-PAYLOAD"
    if creds.get("SecurityToken"):
        out["x-oss-security-token"] = creds["SecurityToken"]
    signed = sorted(
        (k.lower(), v) for k, v in out.items() if k.lower().startswith("x-oss-") or k.lower() in V4_DEFAULT_SIGNED
    )
    canonical = "\n".join(
        [
            method,
            _v4_quote(f"/{bucket}/{key}" if bucket else "/", True),
            "&".join(
                f"{_v4_quote(k, False)}={_v4_quote(v, False)}" if v else _v4_quote(k, False)
                for k, v in sorted((query or {}).items())
            ),
            "".join(f"{k}:{v}\n" for k, v in signed),
            "",  # no additional signed headers
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = f"{stamp[:8]}/{region}/oss/aliyun_v4_request"
    to_sign = f"OSS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key_bytes = f"aliyun_v4{creds['AccessKeySecret']}".encode()
    for part in (stamp[:8], region, "oss", "aliyun_v4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = f"OSS4-HMAC-SHA256 Credential={creds['AccessKeyId']}/{scope}, Signature={signature}"
    return out


V4_DEFAULT_SIGNED = ("content-type", "content-md5")
"""Headers OSS V4 signs whenever a request carries them (besides every x-oss-* header)."""


def oss_request(bucket: str, key: str, region: str, base: str, now: dt.datetime) -> urllib.request.Request:
    """A GetObject signed (V4) with the RAM role's STS credentials."""
    path = f"{base}/latest/meta-data/ram/security-credentials/"
    role = _open(urllib.request.Request(path)).decode().split()
    if not role:
        raise FetchError("no RAM role on this instance")
    creds = json.loads(_open(urllib.request.Request(path + role[0])))
    endpoint = os.environ.get("SPOTSTACK_AGENT__CACHE__ORIGIN_ENDPOINT")
    quoted = urllib.parse.quote(key, safe="/")
    if endpoint:
        url = f"{endpoint.rstrip('/')}/{bucket}/{quoted}"
    else:
        # The VPC-internal endpoint serves its own region only: a node of another region (a fleet across regions
        # reads the home region's bucket) goes by the public one.
        here = _open(urllib.request.Request(f"{base}/latest/meta-data/region-id")).decode().strip()
        internal = "-internal" if here == region else ""
        url = f"https://{bucket}.oss-{region}{internal}.aliyuncs.com/{quoted}"
    return urllib.request.Request(url, headers=oss_v4_headers("GET", bucket, key, region, creds, now))


def request_for(url: str, region: str | None) -> urllib.request.Request:
    parts = urllib.parse.urlsplit(url)
    scheme, bucket, key = parts.scheme, parts.netloc, parts.path.lstrip("/")
    if scheme not in METADATA or not bucket or not key:
        raise FetchError(f"{url}: expected s3://, gs:// or oss:// with a bucket and a key")
    if scheme in ("s3", "oss") and not region:
        raise FetchError(f"{url}: --region is required for {scheme}://")
    now = dt.datetime.now(dt.timezone.utc)
    if scheme == "s3":
        return s3_request(bucket, key, str(region), aws_credentials(_metadata("s3")), now)
    if scheme == "gs":
        return gcs_request(bucket, key, _metadata("gs"))
    return oss_request(bucket, key, str(region), _metadata("oss"), now)


def fetch(
    url: str,
    sha256: str,
    dest: str,
    region: str | None,
    tries: int = TRIES,
    pause: Callable[[int], float] | None = None,
) -> None:
    """Fetch until the content matches `sha256` (a wrong one is an error at once: retrying would not change it)."""
    wait = pause or (lambda i: float(min(i, 10)))
    last = ""
    for i in range(1, tries + 1):
        try:
            data = _open(request_for(url, region))
        except FetchError as exc:
            last = str(exc)
            print(f"objectget: try {i}: {last}", file=sys.stderr)
            if i < tries:
                time.sleep(wait(i))
            continue
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise FetchError(f"{url}: sha256 {got}, expected {sha256}: not the object this node was deployed with")
        tmp = f"{dest}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        return
    raise FetchError(f"{url}: gave up after {tries} tries: {last}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fetch one object with this node's identity and check its sha256.")
    p.add_argument("url", help="s3://, gs:// or oss://bucket/key")
    p.add_argument("sha256", help="the object's expected sha256 (hex)")
    p.add_argument("dest", help="where to write it (atomically)")
    p.add_argument("--region", help="the bucket's region (s3://, oss://)")
    p.add_argument("--tries", type=int, default=TRIES)
    a = p.parse_args(argv)
    try:
        fetch(a.url, a.sha256.lower(), a.dest, a.region, a.tries)
    except FetchError as exc:
        print(f"objectget: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
