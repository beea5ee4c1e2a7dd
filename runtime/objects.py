"""Reading small objects (a manifest, a task's result or marker, a checkpoint's marker) through fsspec in one
request.

s3fs's `cat_file` asks an object's size before it reads (to split objects over 50 MB into concurrent range
reads): a HEAD, and when the object is missing a listing too (is it a folder?). For the small documents these
modules read, that is two requests where one does: a queue worker reads a task's result and marker at every
delivery (the jobs demo made 16 S3 requests per task, 10 with this). With `max_concurrency=1` s3fs reads in one
GET (a missing object is one 404, raised as FileNotFoundError). gcsfs and ossfs already read in one request.
"""

from __future__ import annotations

from typing import Any


def protocols(fs: Any) -> tuple[str, ...]:
    """The fsspec filesystem's protocol names (a string or a tuple of them, depending on the backend)."""
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (str(p),)


def read_small(fs: Any, path: str) -> bytes:
    """The whole object at `path` in one request (FileNotFoundError when there is none). Large objects (a
    checkpoint's data) are read with the filesystem's own `cat_file`, which may split them."""
    if "s3" in protocols(fs):
        return bytes(fs.cat_file(path, max_concurrency=1))
    return bytes(fs.cat_file(path))
