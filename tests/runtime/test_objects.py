"""Small objects (results, markers, manifests) are read in one S3 request: counted at botocore's send, against
moto's S3 on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from spotstack.runtime.objects import read_small
from tests.runtime.jobskit import moto_server


@pytest.fixture(scope="module")
def _moto_fs() -> Iterator[tuple[Any, list[str]]]:
    import boto3
    import s3fs

    with moto_server() as url:
        kw = {"region_name": "us-east-1", "aws_access_key_id": "t", "aws_secret_access_key": "t"}
        boto3.client("s3", endpoint_url=url, **kw).create_bucket(Bucket="bucket")
        fs = s3fs.S3FileSystem(
            endpoint_url=url, key="t", secret="t", client_kwargs={"region_name": "us-east-1"}, skip_instance_cache=True
        )
        fs.pipe_file("bucket/results/task-1.json", b'{"id": "task-1"}')
        sent: list[str] = []
        fs.s3.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
        yield fs, sent


@pytest.fixture
def s3(_moto_fs: tuple[Any, list[str]]) -> tuple[Any, list[str]]:
    """An s3fs filesystem on moto with a bucket, and the HTTP methods it sends from now on (one server per file)."""
    _moto_fs[1].clear()
    return _moto_fs


def test_a_small_object_is_one_get(s3: tuple[Any, list[str]]) -> None:
    fs, sent = s3
    assert read_small(fs, "bucket/results/task-1.json") == b'{"id": "task-1"}'
    assert sent == ["GET"]


def test_a_missing_object_is_one_request_and_file_not_found(s3: tuple[Any, list[str]]) -> None:
    fs, sent = s3
    with pytest.raises(FileNotFoundError):
        read_small(fs, "bucket/results/task-2.json")
    assert sent == ["GET"]


def test_s3fs_own_cat_file_asks_the_size_first(s3: tuple[Any, list[str]]) -> None:
    """Why read_small exists: if s3fs stops asking (a HEAD, then a listing for a missing object), it can go."""
    fs, sent = s3
    fs.cat_file("bucket/results/task-1.json")
    assert sent == ["HEAD", "GET"]
    sent.clear()
    with pytest.raises(FileNotFoundError):
        fs.cat_file("bucket/results/task-2.json")
    assert sent[0] == "HEAD" and len(sent) >= 2, sent


def test_the_result_store_reads_a_result_and_a_marker_in_one_request_each(s3: tuple[Any, list[str]]) -> None:
    from spotstack.runtime.jobs.store import ResultStore

    fs, sent = s3
    store = ResultStore("s3://bucket/results")
    store.fs = fs  # the fixture's filesystem (its endpoint, its counter)
    assert store.get("task-2") is None and store.running("task-2") is None
    assert sent == ["GET", "GET"]
