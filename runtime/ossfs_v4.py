"""fsspec's oss:// with OSS Signature V4: ossfs builds oss2's V1 `Auth`/`StsAuth` and no region, and OSS refuses V1
for buckets created since 1 September 2025 and accounts since 1 March 2025. `install()` registers a subclass that
signs with oss2's `ProviderAuthV4` (oss2 >= 2.18.4) and the bucket's region, taken from the filesystem's `region`
option or else its endpoint (`oss-<region>[-internal].aliyuncs.com`). Every oss:// reader of the node calls it
first: the model pull, the jobs' result store and checkpoints, `spotstack job`."""

from __future__ import annotations

import re
from typing import Any

_ENDPOINT_REGION = re.compile(r"oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com")
_installed = False


def region_of(endpoint: str | None) -> str | None:
    m = _ENDPOINT_REGION.search(endpoint or "")
    return m.group(1) if m else None


def install() -> None:
    """Make fsspec's oss:// sign with V4 (idempotent; a no-op where ossfs is not installed)."""
    global _installed
    if _installed:
        return
    try:
        import fsspec
        import oss2
        from ossfs import OSSFileSystem
    except ImportError:
        return

    class OSSFileSystemV4(OSSFileSystem):  # type: ignore[misc]
        def __init__(self, *args: Any, region: str | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._region = region or region_of(self._endpoint)
            key, secret, token = kwargs.get("key"), kwargs.get("secret"), kwargs.get("token")
            if key:
                provider = oss2.credentials.StaticCredentialsProvider(key, secret, token or None)
                self._auth = oss2.ProviderAuthV4(provider)

        def _get_bucket(self, bucket_name: str, connect_timeout: int | None = None) -> Any:
            if not self._endpoint:
                raise ValueError("endpoint is required")
            if self._region is None:
                raise ValueError(f"OSS Signature V4 needs the bucket's region: none in {self._endpoint!r}")
            try:
                return oss2.Bucket(
                    self._auth,
                    self._endpoint,
                    bucket_name,
                    session=self._session,
                    connect_timeout=connect_timeout,
                    app_name="ossfs",
                    region=self._region,
                )
            except oss2.exceptions.ClientError as err:
                raise FileNotFoundError(bucket_name) from err

    fsspec.register_implementation("oss", OSSFileSystemV4, clobber=True)
    _installed = True
