"""moto's S3 server in its own process, holding a model: the origin the cache benchmarks read from."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from spotstack.runtime.local import motoserver
from spotstack.runtime.net import free_port


def start_s3(model: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server, point boto3/s3fs at it (environment), upload `model` under s3://models/m; the process
    (terminate it when done) and the model's URL."""
    port = free_port()
    proc = subprocess.Popen(
        motoserver.argv(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    end = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except OSError:
            if time.monotonic() > end:
                proc.terminate()
                raise
            time.sleep(0.1)
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    for p in model.iterdir():
        s3.upload_file(str(p), "models", f"m/{p.name}")
    return proc, "s3://models/m"
