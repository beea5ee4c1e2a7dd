"""A bucket in OSS through the standard library, signed with Signature V4 (`runtime/objectget.oss_v4_headers`): the
four calls the controller's memory needs (list, get, create-once, delete). Function Compute's Python runtime ships
oss2 2.16, which signs V1 only, and OSS refuses V1 for buckets created since 1 September 2025."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable

from spotstack.runtime.objectget import oss_v4_headers

TIMEOUT_S = 10.0


class OssError(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"OSS {status} {code}{': ' + message if message else ''}")
        self.status, self.code = status, code


class OssBucket:
    def __init__(self, endpoint: str, bucket: str, region: str, credentials: Callable[[], dict[str, str]]) -> None:
        """`endpoint`: the region's (https://oss-<region>-internal.aliyuncs.com), or any address path-style.
        `credentials`: AccessKeyId, AccessKeySecret and, for STS, SecurityToken (called per request)."""
        self.endpoint, self.bucket_name, self.region, self._creds = endpoint.rstrip("/"), bucket, region, credentials
        host = urllib.parse.urlsplit(self.endpoint).hostname or ""
        self._virtual = host.endswith(".aliyuncs.com")  # OSS's own endpoints: bucket.host; anything else: path-style

    def _call(
        self,
        method: str,
        key: str = "",
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        signed = oss_v4_headers(
            method, self.bucket_name, key, self.region, self._creds(), dt.datetime.now(dt.timezone.utc), query, headers
        )
        path = urllib.parse.quote(key, safe="/")
        if self._virtual:
            parts = urllib.parse.urlsplit(self.endpoint)
            url = f"{parts.scheme}://{self.bucket_name}.{parts.netloc}/{path}"
        else:
            url = f"{self.endpoint}/{self.bucket_name}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        req = urllib.request.Request(url, data=body, method=method, headers=signed)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            code = message = ""
            try:
                root = ET.fromstring(text)
                code, message = root.findtext("Code") or "", root.findtext("Message") or ""
            except ET.ParseError:
                message = text[:200]
            raise OssError(exc.code, code or exc.reason, message) from None

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        marker = ""
        while True:
            query = {"prefix": prefix, "max-keys": "1000", **({"marker": marker} if marker else {})}
            root = ET.fromstring(self._call("GET", query=query))
            keys += [c.findtext("Key") or "" for c in root.findall("Contents")]
            if (root.findtext("IsTruncated") or "false") != "true" or not keys:
                return keys
            marker = root.findtext("NextMarker") or keys[-1]

    def get(self, key: str) -> bytes:
        return self._call("GET", key)

    def create(self, key: str, data: bytes, content_type: str = "application/json") -> bool:
        """Write `key` only if it does not exist (`x-oss-forbid-overwrite`); False if it did."""
        headers = {"Content-Type": content_type, "x-oss-forbid-overwrite": "true"}
        try:
            self._call("PUT", key, body=data, headers=headers)
        except OssError as exc:
            if exc.status == 409 and exc.code == "FileAlreadyExists":
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._call("DELETE", key)
