"""The worker as the agent's config describes it: the queue adaptor, the result store, the handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from spotstack.runtime.config import AgentConfig
from spotstack.runtime.jobs.protection import Protection
from spotstack.runtime.jobs.worker import Worker
from spotstack.runtime.jobs.worker_state import WorkerSettings


def build_worker(
    cfg: AgentConfig,
    node: str,
    session: aiohttp.ClientSession,
    ready: Callable[[], Awaitable[bool]],
    protection: Protection | None = None,
    sqs_client: Any = None,
) -> Worker:
    j = cfg.jobs
    assert j.enabled and j.input_url and j.output_url
    tasks: Any
    results: Any
    if j.queue == "pubsub":
        from spotstack.runtime.jobs.pubsub import PubSubApi, PubSubResults, PubSubTasks

        assert j.input_topic
        api = PubSubApi(cfg.metadata_url, j.endpoint_url)
        tasks = PubSubTasks(j.input_url, j.input_topic, j.dead_letter_url, api)
        results = PubSubResults(j.output_url, api)
    elif j.queue == "mns":
        from spotstack.runtime.jobs.mns import MnsResults, MnsTasks, api_for
        from spotstack.runtime.secrets import alicloud_ram_credentials

        mns = api_for(j.input_url, lambda: alicloud_ram_credentials(cfg.metadata_url), j.endpoint_url)
        tasks = MnsTasks(j.input_url, j.dead_letter_url, mns)
        results = MnsResults(j.output_url, mns)
    else:
        from spotstack.runtime.jobs import sqs

        client = sqs_client or sqs.client(j.region or cfg.region, j.endpoint_url)
        tasks = sqs.SqsTasks(j.input_url, j.dead_letter_url, client)
        results = sqs.SqsResults(j.output_url, client)
    store = None
    auth = _object_store_auth(cfg)
    if j.results_url:
        from spotstack.runtime.jobs.store import ResultStore

        store = ResultStore(j.results_url, refresh=auth)
    settings = WorkerSettings(
        node=node,
        http_url=None if j.command or j.http_path is None else f"http://127.0.0.1:{cfg.workload.port}{j.http_path}",
        command=j.command,
        task_commands=j.task_commands,
        concurrency=j.concurrency,
        lease_s=j.lease_s,
        task_timeout_s=j.task_timeout_s,
        max_attempts=j.max_attempts,
        wait_s=j.wait_s,
        retry_delay_s=j.retry_delay_s,
        checkpoint_url=j.checkpoint_url,
        resume_command=j.resume_command,
        workdir=Path(j.workdir),
    )
    return Worker(
        tasks,
        results,
        store,
        settings,
        ready=ready,
        session=session,
        protection=protection,
    )


def _object_store_auth(cfg: AgentConfig) -> Callable[[], None] | None:
    """For oss:// results and checkpoints: set the node's RAM role credentials as fsspec's oss:// defaults (ossfs
    reads anonymously otherwise); s3:// and gs:// find the node's identity on their own."""
    j = cfg.jobs
    urls = [u for u in (j.results_url, j.checkpoint_url) if u and u.startswith("oss://")]
    if not urls:
        return None

    def configure() -> None:
        from spotstack.runtime.cache import origin_auth

        region = j.region or cfg.region
        origin_auth.configure(urls[0], region=region, metadata_url=cfg.metadata_url, endpoint=j.store_endpoint)

    return configure
