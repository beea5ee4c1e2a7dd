"""Placing a pulled model into --dest: verified store files hard-linked (or copied) under a temporary name and
renamed, so the model server never sees a partial file; a record of what was placed, so a node stopped and started
again keeps the files whose inode says the same; and the removal of temporary files a killed pull left behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

from spotstack.runtime.cache.assemble import PullError
from spotstack.runtime.cache.manifest import FileEntry, Manifest
from spotstack.runtime.cache.store import Store

TMP_MARK = ".spotstack-tmp-"
"""Temporary names in --dest: `.<name>.spotstack-tmp-<pid>`, renamed over <name> once complete."""
PLACED = ".spotstack-placed.json"
"""In dest: each file this pull placed and verified, with what its inode said then. A node stopped and started
again (a warm pool) finds its model on disk and keeps the files whose inode says the same, instead of
fetching the model again into a memory cache that the stop emptied."""


def same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _target(dest: Path, rel: str) -> Path:
    """dest/rel, creating its folders, never through a symbolic link: the file lands inside dest or nowhere."""
    parent = dest
    *dirs, name = rel.split("/")
    for part in dirs:
        parent = parent / part
        if parent.is_symlink():
            raise PullError(f"refusing to write {rel}: {parent} is a symbolic link")
        try:
            parent.mkdir(exist_ok=True)
        except FileExistsError:
            raise PullError(f"cannot write {rel}: {parent} exists and is not a folder") from None
    return parent / name


def materialize(store: Store, entry: FileEntry, dest: Path) -> None:
    """Put the verified store file at dest/<path>: a hard link when it can, else a copy; atomically."""
    src = store.file_path(entry.key)
    final = _target(dest, entry.path)
    tmp = final.parent / f".{final.name}{TMP_MARK}{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            with open(src, "rb") as fsrc, open(tmp, "wb") as fdst:
                left, off = entry.size, 0
                while left:
                    n = os.sendfile(fdst.fileno(), fsrc.fileno(), off, min(left, 64 << 20))
                    off += n
                    left -= n
                fdst.flush()
                os.fsync(fdst.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise PullError(
                f"destination {dest} is full writing {entry.path} ({entry.size / 1e9:.2f} GB): "
                f"{os.strerror(exc.errno)}; nothing partial was left there"
            ) from None
        raise PullError(f"cannot write {final}: {exc}") from None


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def placed_files(dest: Path, manifest: Manifest) -> set[str]:
    """Paths in dest placed by an earlier pull of these bytes and untouched since (size, mtime, inode the same)."""
    try:
        record = json.loads((dest / PLACED).read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    keep = set()
    for f in manifest.files:
        was = files.get(f.path) if isinstance(files, dict) else None
        if was is not None and was[0] == f.key and was[1:] == _stamp(_target(dest, f.path)):
            keep.add(f.path)
    return keep


def record_placed(dest: Path, manifest: Manifest) -> None:
    files = {f.path: [f.key, *(_stamp(_target(dest, f.path)) or [])] for f in manifest.files}
    tmp = dest / f".{PLACED}{TMP_MARK}{os.getpid()}"
    tmp.write_text(json.dumps({"model_id": manifest.model_id, "files": files}))
    os.replace(tmp, dest / PLACED)


def clean_leftovers(dest: Path) -> list[Path]:
    """Remove temporary files a killed pull left in dest (its pid is gone); returns what went."""
    gone: list[Path] = []
    if not dest.is_dir():
        return gone
    for p in dest.rglob(f".*{TMP_MARK}*"):
        try:
            pid = int(p.name.rsplit(TMP_MARK, 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and _alive(pid):
            continue  # another pull into the same dest is under way
        with contextlib.suppress(OSError):
            p.unlink()
            gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
