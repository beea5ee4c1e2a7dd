"""SQS on loopback for the jobs tests: moto's server in this process (its own thread), stopped by the test."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from spotstack.runtime.net import free_port


@contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from spotstack.runtime.local.motoserver import patch

    patch()  # SQS DeleteMessage beside concurrent sends (motoserver.py): one lost, the suite flakes
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps its state per process, not per server: start each test from nothing.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    try:
        yield url
    finally:
        server.stop()


def sqs_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t"
    )


def drain_queue(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message now visible in a queue (received and deleted), as dicts with body and attributes."""
    from spotstack.runtime.jobs.sqs import drain

    return [{"body": json.loads(m["Body"]), "attrs": m.get("MessageAttributes", {})} for m in drain(sqs, url)]


def depth(sqs: Any, url: str) -> tuple[int, int]:
    """(waiting, in flight) messages of a queue; waiting includes those sent with a delay."""
    from spotstack.runtime.jobs.sqs import depth as queue_depth

    d = queue_depth(sqs, url)
    return d["visible"] + d["delayed"], d["in_flight"]
