"""Fetching the fleet's peer-cache token at boot from the cloud's secret store, with the node's own identity.

The token never enters user data (anyone who may describe an instance reads that). Each cloud keeps it
where only the node's identity may read it:
- AWS: an SSM SecureString parameter, read with boto3 (the agent's own dependency) and the instance profile;
- GCP: a Secret Manager secret; the node's service account token from the metadata server authorises the
  `versions/latest:access` call;
- Alibaba Cloud: an OOS secret parameter (KMS-encrypted); the RAM role's STS credentials from the metadata
  server sign a `GetSecretParameter` call (RPC signature v1, HMAC-SHA1).

GCP and Alibaba use the standard library only; AWS uses boto3, which signs with the instance profile's
credentials (SigV4). The boot's background retry loop calls this through `spotstack agent fetch-secret` and
keeps trying until the agent is installed and the node's permission has reached the cloud's IAM. Base URLs are
parameters so tests point them at loopback servers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

from spotstack.runtime.clouds import ALICLOUD, GCP

GCP_METADATA = GCP.metadata_url
GCP_SECRETS_API = "https://secretmanager.googleapis.com"
ALICLOUD_METADATA = ALICLOUD.metadata_url
TIMEOUT_S = 5.0


class SecretError(Exception):
    """The secret could not be read (not yet permitted, not there, or the store did not answer)."""


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as exc:
        try:  # Alibaba's and Google's errors say why in the body: {"Code": ...} / {"error": {"status": ...}}
            doc = json.loads(exc.read(4096))
            why = f" {doc.get('Code') or doc.get('error', {}).get('status', '')}".rstrip()
        except (ValueError, AttributeError, OSError):
            why = ""
        raise SecretError(f"{url.split('?')[0]}: HTTP {exc.code}{why}") from None
    except OSError as exc:
        raise SecretError(f"{url.split('?')[0]}: {exc}") from None


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise SecretError(f"{what}: not JSON") from None


def gcp_metadata(path: str, metadata_url: str = GCP_METADATA) -> str:
    """One metadata value (`project/project-id`, `instance/name`)."""
    return _get(f"{metadata_url}/computeMetadata/v1/{path}", {"Metadata-Flavor": "Google"}).decode().strip()


def gcp_get(url: str, metadata_url: str = GCP_METADATA) -> Any:
    """A Google API GET with the node's service account token from the metadata server; the JSON answer."""
    tok = _json(
        _get(
            f"{metadata_url}/computeMetadata/v1/instance/service-accounts/default/token",
            {"Metadata-Flavor": "Google"},
        ),
        "metadata token",
    )
    return _json(_get(url, {"Authorization": f"Bearer {tok['access_token']}"}), url.split("?")[0])


def gcp_secret(name: str, metadata_url: str = GCP_METADATA, api_url: str = GCP_SECRETS_API) -> str:
    """The latest version of a Secret Manager secret (`projects/P/secrets/S`)."""
    tok = _json(
        _get(
            f"{metadata_url}/computeMetadata/v1/instance/service-accounts/default/token",
            {"Metadata-Flavor": "Google"},
        ),
        "metadata token",
    )
    body = _json(
        _get(f"{api_url}/v1/{name}/versions/latest:access", {"Authorization": f"Bearer {tok['access_token']}"}),
        "secret",
    )
    try:
        return base64.b64decode(body["payload"]["data"]).decode()
    except (KeyError, TypeError, ValueError):
        raise SecretError("secret: no payload.data in the answer") from None


def percent(s: str) -> str:
    """Alibaba's RPC encoding: RFC 3986 unreserved characters kept, everything else %XX (space is %20)."""
    return urllib.parse.quote(s, safe="-_.~")


def rpc_signature(method: str, params: dict[str, str], secret: str) -> str:
    """Alibaba Cloud RPC signature v1: HMAC-SHA1 over METHOD&%2F&encode(sorted, encoded query), keyed secret&."""
    canonical = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{percent('/')}&{percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def aws_parameter(name: str, region: str, endpoint: str | None = None) -> str:
    """An SSM SecureString parameter's decrypted value (the instance profile's credentials, from IMDS)."""
    import boto3
    import botocore.exceptions

    try:
        client = boto3.client("ssm", region_name=region, endpoint_url=endpoint)
        answer = client.get_parameter(Name=name, WithDecryption=True)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SecretError(f"SSM parameter {name}: {exc}") from None
    return str(answer["Parameter"]["Value"])


def alicloud_ram_credentials(metadata_url: str = ALICLOUD_METADATA) -> dict[str, str]:
    """The instance RAM role's STS credentials (AccessKeyId, AccessKeySecret, SecurityToken) from metadata."""
    base = f"{metadata_url}/latest/meta-data/ram/security-credentials/"
    role = _get(base).decode().strip().splitlines()[0:1]
    if not role:
        raise SecretError("no RAM role is attached to this instance")
    creds = _json(_get(base + role[0]), "RAM role credentials")
    try:
        return {k: str(creds[k]) for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken")}
    except (KeyError, TypeError):
        raise SecretError("RAM role credentials: AccessKeyId/AccessKeySecret/SecurityToken missing") from None


def alicloud_rpc(
    base: str, action: str, version: str, params: dict[str, str], region: str, metadata_url: str = ALICLOUD_METADATA
) -> Any:
    """One signed RPC-style API call with the instance RAM role's STS credentials; the JSON answer."""
    return alicloud_call(base, action, version, params, region, alicloud_ram_credentials(metadata_url))


def alicloud_call(
    base: str, action: str, version: str, params: dict[str, str], region: str, creds: dict[str, str]
) -> Any:
    """One RPC-style call signed (v1, HMAC-SHA1) with `creds` (AccessKeyId, AccessKeySecret, SecurityToken)."""
    query = {
        "Action": action,
        **params,
        "RegionId": region,
        "Format": "JSON",
        "Version": version,
        "AccessKeyId": creds["AccessKeyId"],
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if creds.get("SecurityToken"):
        query["SecurityToken"] = creds["SecurityToken"]
    query["Signature"] = rpc_signature("GET", query, creds["AccessKeySecret"])
    return _json(_get(f"{base}/?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"), f"{action} answer")


def alicloud_oos_secret(
    name: str, region: str, metadata_url: str = ALICLOUD_METADATA, endpoint: str | None = None
) -> str:
    """An OOS secret parameter's decrypted value, read with the instance RAM role's STS credentials."""
    base = endpoint or f"https://oos.{region}.aliyuncs.com"
    params = {"Name": name, "WithDecryption": "true"}
    body = alicloud_rpc(base, "GetSecretParameter", "2019-06-01", params, region, metadata_url)
    try:
        return str(body["Parameter"]["Value"])
    except (KeyError, TypeError):
        raise SecretError(f"OOS answer has no Parameter.Value: {str(body)[:200]}") from None


def alicloud_registry_login(
    instance_id: str, region: str, metadata_url: str = ALICLOUD_METADATA, endpoint: str | None = None
) -> tuple[str, str]:
    """A temporary (username, password) for an ACR Enterprise Edition instance (GetAuthorizationToken)."""
    base = endpoint or f"https://cr.{region}.aliyuncs.com"
    body = alicloud_rpc(base, "GetAuthorizationToken", "2018-12-01", {"InstanceId": instance_id}, region, metadata_url)
    try:
        return str(body["TempUsername"]), str(body["AuthorizationToken"])
    except (KeyError, TypeError):
        raise SecretError(f"ACR answer has no TempUsername/AuthorizationToken: {str(body)[:200]}") from None


def aws_registry_login(region: str, endpoint: str | None = None) -> tuple[str, str]:
    """ECR: a 12-hour Docker login for the instance profile (GetAuthorizationToken), as `aws ecr get-login-password`
    gives, without the AWS CLI (a custom AMI may lack it)."""
    import boto3
    import botocore.exceptions

    try:
        answer = boto3.client("ecr", region_name=region, endpoint_url=endpoint).get_authorization_token()
        token = answer["authorizationData"][0]["authorizationToken"]
        user, _, password = base64.b64decode(token).decode().partition(":")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SecretError(f"ECR authorization token: {exc}") from None
    except (KeyError, IndexError, ValueError) as exc:
        raise SecretError(f"ECR authorization token: unexpected answer ({exc})") from None
    return user, password


def gcp_registry_login(metadata_url: str = GCP_METADATA) -> tuple[str, str]:
    """Artifact Registry: the node's service account token as Docker's password (user `oauth2accesstoken`), as
    Google documents for hosts without gcloud's credential helper."""
    tok = _json(
        _get(
            f"{metadata_url}/computeMetadata/v1/instance/service-accounts/default/token",
            {"Metadata-Flavor": "Google"},
        ),
        "metadata token",
    )
    try:
        return "oauth2accesstoken", str(tok["access_token"])
    except (KeyError, TypeError):
        raise SecretError("metadata token: no access_token in the answer") from None
