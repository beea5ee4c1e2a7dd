"""Where a task's result is kept by its id, so `spotstack job status|result|logs ID` finds it and duplicates
of work collapse into one record: `<results_url>/<id>.json`, through fsspec (s3://, gs://, oss://, a directory).

An object store's PUT is atomic (a reader sees the old object or the new one); a directory gets the same
by writing a temporary file and renaming it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spotstack.runtime.jobs.task import Result

REFRESH_S = 600.0
"""How often a store with a credentials hook renews them (STS credentials last hours; renewed well before)."""


class ResultStore:
    def __init__(self, url: str, refresh: Callable[[], None] | None = None) -> None:
        """`refresh`: sets fsspec's credentials for the URL's scheme (oss://: the node's RAM role); called before
        the first use and every REFRESH_S, each time with a filesystem made afresh."""
        import fsspec

        self.url = url.rstrip("/")
        self._refresh, self._refreshed = refresh, -REFRESH_S
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

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
        data = result.model_dump_json().encode()
        path = self._path(result.id)
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self._current().pipe_file(path, data)

    def get(self, task_id: str) -> Result | None:
        fs = self._current()
        fs.invalidate_cache(self.root)  # s3fs/gcsfs cache listings: a result written since must be seen
        try:
            data = fs.cat_file(self._path(task_id))
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
