"""Where a task's result is kept by its id, so `spotstack job status|result|logs ID` finds it and duplicates
of work collapse into one record: `<results_url>/<id>.json`, through fsspec (s3://, gs://, oss://, a directory).

An object store's PUT is atomic (a reader sees the old object or the new one); a directory gets the same
by writing a temporary file and renaming it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from spotstack.runtime.jobs.task import Result


class ResultStore:
    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

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
            self.fs.pipe_file(path, data)

    def get(self, task_id: str) -> Result | None:
        self.fs.invalidate_cache(self.root)  # s3fs/gcsfs cache listings: a result written since must be seen
        try:
            data = self.fs.cat_file(self._path(task_id))
        except FileNotFoundError:
            return None
        return Result.model_validate_json(data)

    def ids(self) -> list[str]:
        self.fs.invalidate_cache(self.root)
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted(Path(n).stem for n in names if str(n).endswith(".json") and not Path(n).name.startswith("."))
