"""A model's manifest: its files, their sizes and sha256, and a cryptographic hash per fixed-size chunk.

Chunk size: 16 MiB. A request costs ~0.3 ms of overhead, under 5% of a 16 MiB transfer at
loopback speed; a 2 GB model still has ~128 chunks to spread over peers and connections; a
failed or corrupt chunk costs at most 16 MiB to fetch again; and 16 MiB ranged GETs are what
object stores serve best. Chunks never span files, so each chunk maps to one (file, offset).

Chunk hash (format version 2): BLAKE3-256. Cryptographic, so a verified chunk is the manifest's chunk whoever
sent it, and each chunk is hashed on its own (in parallel on the pull's worker threads: the binding releases
the GIL): a pull needs no per-file sha256, which had to run in file order on one core. The file sha256s stay in
the manifest for external tools and `spotstack cache verify`. Version 1 manifests (xxh3-128 chunks, not
cryptographic) are still read; a pull of one checks each file's sha256 as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import blake3
import xxhash
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from spotstack.runtime.objects import read_small

MANIFEST_NAME = "spotstack-manifest.json"
DEFAULT_CHUNK = 16 << 20
HASH_RE = r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$"
"""xxh3-128 (version 1) or BLAKE3-256 (version 2) hex digests."""
DIGEST_LEN = {"xxh3_128": 32, "blake3": 64}


def check_rel_path(path: str) -> str:
    """A manifest path must stay inside the destination: relative, normalised, plain characters.

    A manifest can come from a peer (when the origin is down), so its paths are untrusted input:
    anything that could name a place outside --dest is refused, whatever the file system would make of it.
    """
    if not path or len(path) > 1024:
        raise ValueError("must be 1 to 1024 characters")
    if "\x00" in path or "\\" in path:
        raise ValueError(f"{path!r}: NUL and backslash are not allowed")
    if path.startswith("/"):
        raise ValueError(f"{path!r}: must be relative")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{path!r}: must be normalised (no empty, '.' or '..' parts)")
    if any(ord(c) < 32 for c in path):
        raise ValueError(f"{path!r}: control characters are not allowed")
    return path


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    """Path relative to the model root, with forward slashes."""
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    chunks: list[Annotated[str, StringConstraints(pattern=HASH_RE)]]
    """The chunk hash of each chunk, in order; chunk i covers [i * chunk_size, min(size, (i+1) * chunk_size))."""

    @field_validator("path")
    @classmethod
    def _safe_path(cls, v: str) -> str:
        return check_rel_path(v)

    @cached_property
    def key(self) -> str:
        """The file's name in a store: something a pull has verified. With xxh3 chunks (version 1) its sha256,
        which such a pull checks; with BLAKE3 chunks a BLAKE3 over its size and chunk digests (the chunks prove
        the bytes; the sha256 is not checked, so a manifest that lies about it cannot alias another file)."""
        if self.size and len(self.chunks[0]) == DIGEST_LEN["xxh3_128"]:
            return self.sha256
        return "b3-" + str(blake3.blake3(f"{self.size}:{','.join(self.chunks)}".encode()).hexdigest())

    def chunk_span(self, i: int, chunk_size: int) -> tuple[int, int]:
        start = i * chunk_size
        return start, min(self.size, start + chunk_size) - start


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1, 2] = 2
    """Format version; a reader refuses versions it does not know rather than guess. 1: xxh3-128 chunks;
    2: BLAKE3 chunks."""
    chunk_size: int = Field(ge=1 << 20, le=64 << 20)
    chunk_hash: Literal["xxh3_128", "blake3"] = "blake3"
    files: list[FileEntry] = Field(min_length=1, max_length=1_000_000)
    """At least one: a manifest of nothing would "pull" an empty model and report it READY."""

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """The manifest as a whole: its version's chunk hash and digest length, every size matching its chunk
        list, no path twice or under another file."""
        want_hash = {1: "xxh3_128", 2: "blake3"}[self.version]
        if self.chunk_hash != want_hash:
            raise ValueError(f"a version {self.version} manifest hashes chunks with {want_hash}, not {self.chunk_hash}")
        paths: set[str] = set()
        width = DIGEST_LEN[self.chunk_hash]
        for f in self.files:
            if any(len(c) != width for c in f.chunks):
                raise ValueError(f"{f.path}: {self.chunk_hash} chunk digests are {width} hex digits")
            want = -(-f.size // self.chunk_size)
            if len(f.chunks) != want:
                raise ValueError(
                    f"{f.path}: size {f.size} needs {want} chunks of {self.chunk_size}, "
                    f"the manifest lists {len(f.chunks)}"
                )
            if f.path in paths:
                raise ValueError(f"{f.path}: listed twice")
            paths.add(f.path)
        for p in paths:
            parts = p.split("/")
            for k in range(1, len(parts)):
                if "/".join(parts[:k]) in paths:
                    raise ValueError(f"{p}: lies under {'/'.join(parts[:k])}, which is a file")
        return self

    @property
    def model_id(self) -> str:
        """Identifies the model by content: the same files give the same id wherever they live."""
        canon = json.dumps([[f.path, f.size, f.key] for f in sorted(self.files, key=lambda f: f.path)])
        return hashlib.sha256(canon.encode()).hexdigest()[:32]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest_hex(self) -> str:
        """The manifest's own BLAKE3 over its canonical JSON: pin it (`model_cache.manifest_digest`) and a manifest
        a peer serves while the origin is down is checked too, not only its chunks."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return str(blake3.blake3(canon.encode()).hexdigest())

    @property
    def cryptographic(self) -> bool:
        """Whether a verified chunk proves its bytes (BLAKE3), or only catches accidents (xxh3)."""
        return self.chunk_hash == "blake3"

    def digest(self, data: Any) -> str:
        return chunk_hash(data, self.chunk_hash)

    def hasher(self) -> Any:
        """An incremental chunk hasher (`update`, `hexdigest`): a chunk hashed as it arrives, while its bytes
        are still in the CPU's cache, instead of a second pass over 16 MiB."""
        if self.chunk_hash == "blake3":
            return blake3.blake3()
        return xxhash.xxh3_128()

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)


def chunk_hash(data: Any, algorithm: str = "blake3") -> str:
    """A chunk's hex digest. BLAKE3 releases the GIL on large buffers, so pull workers hash in parallel."""
    if algorithm == "blake3":
        return str(blake3.blake3(data).hexdigest())
    return xxhash.xxh3_128_hexdigest(data)


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def build_manifest(
    url: str, chunk_size: int = DEFAULT_CHUNK, progress: Callable[[int], None] = lambda n: None
) -> Manifest:
    """Read every file under `url` (s3://, gs://, oss://, or a directory) and hash it."""
    fs, root = _fs(url)
    entries: list[FileEntry] = []
    paths = sorted(p for p in fs.find(root) if not p.endswith("/" + MANIFEST_NAME) and p != MANIFEST_NAME)
    if not paths:
        raise FileNotFoundError(f"no files under {url}")
    for path in paths:
        rel = path[len(root) :].lstrip("/") if root else path
        sha = hashlib.sha256()
        chunks: list[str] = []
        size = 0
        with fs.open(path, "rb", block_size=chunk_size) as f:
            while True:
                data = f.read(chunk_size)
                if not data:
                    break
                sha.update(data)
                chunks.append(chunk_hash(data))
                size += len(data)
                progress(len(data))
        entries.append(FileEntry(path=rel, size=size, sha256=sha.hexdigest(), chunks=chunks))
    return Manifest(chunk_size=chunk_size, files=entries)


def verify_tree(root: Path, manifest: Manifest, progress: Callable[[int], None] = lambda n: None) -> list[str]:
    """Check the files under `root` against `manifest`: size, every chunk digest and the file's sha256 (the
    end-to-end check a pull leaves out with BLAKE3 chunks). The problems found; empty when all match."""
    problems: list[str] = []
    for f in manifest.files:
        path = root / f.path
        try:
            size = path.stat().st_size
        except OSError as exc:
            problems.append(f"{f.path}: {exc.strerror or exc}")
            continue
        if size != f.size:
            problems.append(f"{f.path}: {size} bytes, the manifest says {f.size}")
            continue
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for i, want in enumerate(f.chunks):
                data = fh.read(manifest.chunk_size)
                sha.update(data)
                progress(len(data))
                if manifest.digest(data) != want:
                    problems.append(f"{f.path}: chunk {i} does not match its {manifest.chunk_hash} digest")
        if sha.hexdigest() != f.sha256:
            problems.append(f"{f.path}: sha256 {sha.hexdigest()} is not the manifest's {f.sha256}")
    return problems


def write_manifest(url: str, manifest: Manifest) -> str:
    """Write the manifest next to the model, atomically: rename locally, one PUT on object stores."""
    fs, root = _fs(url)
    target = f"{root}/{MANIFEST_NAME}"
    data = manifest.to_json().encode()
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        fs.pipe_file(target, data)
    return target


def read_manifest(url: str) -> Manifest:
    fs, root = _fs(url)
    return Manifest.model_validate_json(read_small(fs, f"{root}/{MANIFEST_NAME}"))
