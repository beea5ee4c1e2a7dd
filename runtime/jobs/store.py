"""Where a task's result is kept by its id, so `spotstack job status|result|logs ID` finds it and duplicates
of work collapse into one record: `<results_url>/<id>.json`, through fsspec (s3://, gs://, oss://, a directory).

An object store's PUT is atomic (a reader sees the old object or the new one); a directory gets the same
by writing a temporary file and renaming it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spotstack.runtime.files import write_atomic
from spotstack.runtime.jobs.claims import Marker
from spotstack.runtime.jobs.task import Result
from spotstack.runtime.objects import protocols, read_small

RUNNING = ".running"
"""Beside the results: `<id>.json` markers of tasks running now (a dot folder: `ids()` lists results only)."""

REFRESH_S = 600.0
"""How often a store with a credentials hook renews them (STS credentials last hours; renewed well before)."""


class ResultStore:
    def __init__(self, url: str, refresh: Callable[[], None] | None = None) -> None:
        """`refresh`: sets fsspec's credentials for the URL's scheme (oss://: the node's RAM role); called before
        the first use and every REFRESH_S, each time with a filesystem made afresh."""
        if url.startswith("oss://"):
            from spotstack.runtime import ossfs_v4

            ossfs_v4.install()  # Signature V4: new buckets refuse V1
        import fsspec

        self.url = url.rstrip("/")
        self._refresh, self._refreshed = refresh, -REFRESH_S
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in protocols(self.fs)

    def _current(self) -> Any:
        if self._refresh is not None and time.monotonic() - self._refreshed >= REFRESH_S:
            import fsspec

            self._refresh()
            self.fs, self.root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
            self._refreshed = time.monotonic()
        return self.fs

    def _path(self, task_id: str) -> str:
        return f"{self.root.rstrip('/')}/{task_id}.json"

    def put(self, result: Result) -> None:
        self._write(self._path(result.id), result.model_dump_json().encode())

    def _write(self, path: str, data: bytes) -> None:
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)  # a failed write leaves no temporary file behind
        else:
            self._current().pipe_file(path, data)

    # -- running markers (claims.py): which node runs a task, until when ---------------------------------
    def _marker_path(self, task_id: str) -> str:
        return f"{self.root.rstrip('/')}/{RUNNING}/{task_id}.json"

    def claim(self, task_id: str, node: str, until: float) -> None:
        self._write(self._marker_path(task_id), json.dumps({"node": node, "until": until}).encode())

    def running(self, task_id: str) -> Marker | None:
        try:
            doc = json.loads(read_small(self._current(), self._marker_path(task_id)))
            return Marker(str(doc["node"]), float(doc["until"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a torn marker says nothing; the queue's lease still holds

    def release(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._current().rm_file(self._marker_path(task_id))

    def get(self, task_id: str) -> Result | None:
        fs = self._current()
        fs.invalidate_cache(self.root)  # s3fs/gcsfs cache listings: a result written since must be seen
        try:
            data = read_small(fs, self._path(task_id))
        except FileNotFoundError:
            return None
        return Result.model_validate_json(data)

    def ids(self) -> list[str]:
        fs = self._current()
        fs.invalidate_cache(self.root)
        try:
            names = fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted(Path(n).stem for n in names if str(n).endswith(".json") and not Path(n).name.startswith("."))
