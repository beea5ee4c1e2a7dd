"""The agent's wheel, built from the spotstack that deploys the fleet, for the components to publish to the fleet's
bucket: nodes install exactly the code that deployed them, and never fetch `spotstack` by name from a package index
(it is not published there, and whoever held the name would run as root on every node).

The wheel is made from the installed package's own files (a regular or an editable install alike) and its metadata
(dependencies and extras as `pyproject.toml` declares them). It is reproducible: files sorted, fixed times, so the
same code gives the same bytes and `pulumi up` uploads nothing new until the code changes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import io
import os
import zipfile
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

PACKAGES = ("components", "runtime", "cli")
DATA = (".py", ".service", ".yaml", ".json")
"""The file kinds `pyproject.toml` installs (modules and package data)."""
KEY_PREFIX = "spotstack-agent/"
"""Where in a fleet's bucket the wheels go (nodes may read this prefix)."""
WHEEL_TAG = "py3-none-any"
DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str
    version: str

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def key(self) -> str:
        """The object key: by content, so fleets and stacks sharing a bucket never overwrite each other's."""
        return f"{KEY_PREFIX}{self.sha256[:16]}/{self.filename}"


def _files() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for pkg in PACKAGES:
        root = Path(importlib.import_module(f"spotstack.{pkg}").__path__[0])
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if "__pycache__" in rel.parts or not path.is_file():
                continue
            if not (path.suffix in DATA or path.name == "py.typed"):
                continue
            if any(not (root / Path(*rel.parts[:i]) / "__init__.py").exists() for i in range(1, len(rel.parts))):
                continue  # a folder that is not a package (no __init__.py) is not installed
            out.append((f"spotstack/{pkg}/{rel.as_posix()}", path.read_bytes()))
    return out


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_bytes() -> tuple[bytes, str]:
    """The wheel's bytes and the version it carries."""
    dist = distribution("spotstack")
    version = dist.version
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if not metadata:
        raise RuntimeError("spotstack's installed metadata is missing: reinstall it (pip install -e . or a wheel)")
    info = f"spotstack-{version}.dist-info"
    entries = [
        *_files(),
        (f"{info}/METADATA", metadata.encode()),
        (
            f"{info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: spotstack\nRoot-Is-Purelib: true\nTag: {WHEEL_TAG}\n".encode(),
        ),
        (f"{info}/entry_points.txt", b"[console_scripts]\nspotstack = spotstack.cli.main:main\n"),
    ]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [*entries, (f"{info}/RECORD", record.encode())]:
            zi = zipfile.ZipInfo(name, date_time=DATE)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return buf.getvalue(), version


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spotstack" / "wheels"


@functools.lru_cache(maxsize=1)
def build() -> Wheel:
    """The wheel on disk (where `pulumi up` reads the asset), written once per content (atomically)."""
    data, version = wheel_bytes()
    digest = hashlib.sha256(data).hexdigest()
    path = cache_dir() / digest[:16] / f"spotstack-{version}-{WHEEL_TAG}.whl"
    if not (path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return Wheel(path, digest, version)
