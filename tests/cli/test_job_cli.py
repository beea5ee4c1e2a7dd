"""`spotstack job` against an AWS stack: the queues found by the names the components give them (moto's server on
loopback), tasks submitted, then status, result, logs and list read from the result store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from spotstack.components import node
from spotstack.components.validate import validate_fleets
from spotstack.runtime.jobs.sqs import SqsTasks
from spotstack.runtime.jobs.store import ResultStore
from spotstack.runtime.jobs.task import Result
from tests.conftest import ROOT, base_fleet
from tests.runtime.jobskit import moto_server


@pytest.mark.slow
def test_submit_then_status_result_logs_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = {**base_fleet(), "jobs": {"bucket": "acme-jobs", "task_commands": True}}
    (tmp_path / "Pulumi.yaml").write_text("name: acme\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": {"spotstack:fleets": [fleet]}}))
    spec = validate_fleets([fleet])[0][0]
    with moto_server() as endpoint:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "PYTHONPATH": str(ROOT.parent),
        }
        for k, v in env.items():
            if k.startswith("AWS_"):  # for this test only: later tests' moto must not see this endpoint
                monkeypatch.setenv(k, v)
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
        urls = {
            r: sqs.create_queue(QueueName=node.job_queue_name(spec, r, "acme", "dev"))["QueueUrl"]
            for r in ("input", "output", "dead")
        }
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="acme-jobs")

        def job(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "spotstack.cli.main", "job", *args, "--stack", "dev"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        (tmp_path / "body.json").write_text(json.dumps([{"n": 1}, {"n": 2}]))
        sub = job("submit", "--json-file", "body.json", "--id", "batch")
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.split() == ["batch-0", "batch-1"]
        got = SqsTasks(urls["input"], urls["dead"], sqs).receive(10, 1, 30)
        assert sorted((d.task.id, d.task.body["n"]) for d in got if d.task) == [("batch-0", 1), ("batch-1", 2)]

        missing = job("status", "batch-0")
        assert missing.returncode == 1 and "queued or running" in missing.stderr
        store = ResultStore("s3://acme-jobs/jobs/results")
        store.put(Result(id="batch-0", status="done", output={"double": 2}, log_tail="did it\n", node="i-1"))
        store.put(Result(id="batch-1", status="failed", error="HTTP 500", attempt=3, node="i-2"))
        st = job("status", "batch-0")
        assert st.returncode == 0 and "batch-0: done (attempt 1, 0 preemption(s), on i-1)" in st.stdout
        assert json.loads(job("result", "batch-0").stdout) == {"double": 2}
        assert job("logs", "batch-0").stdout == "did it\n"
        failed = job("result", "batch-1")
        assert failed.returncode == 1 and "failed: HTTP 500" in failed.stderr
        listed = json.loads(job("list", "--json").stdout)
        assert [t["id"] for t in listed["tasks"]] == ["batch-0", "batch-1"]
        assert set(listed["queues"]) == {"input", "output", "dead"}
        both = job("submit", "--json-file", "body.json", "--", "echo", "hi")
        assert both.returncode == 2 and "one of them" in both.stderr


@pytest.mark.slow
async def test_gcp_submit_publishes_to_the_fleets_topic_and_reads_results_from_gcs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On GCP: tasks are published to the input topic the components name (in the stack's gcp:project), with the
    user's token; results are read from the jobs bucket (gcp-storage-emulator); `list` says Pub/Sub reports no
    depth through its API."""
    import asyncio
    import socket

    from gcp_storage_emulator.server import create_server

    from spotstack.runtime.net import serve
    from tests.clouds.pubsub import TOKEN, PubSubFake
    from tests.components.test_gcp_alicloud import as_cloud

    fleet = {**as_cloud("gcp"), "jobs": {"bucket": "acme-jobs"}}
    (tmp_path / "Pulumi.yaml").write_text("name: acme\nruntime: python\n")
    config = {"gcp:project": "acme-ml", "spotstack:fleets": [fleet]}
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": config}))
    fake = PubSubFake()
    topic = f"projects/acme-ml/topics/{node.stack_name('llm-jobs-input', 255, 'acme', 'dev')}"
    fake.subscription("tasks", fake.topic(topic))
    runner, port = await serve(fake.app(), "127.0.0.1", 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gcs_port = s.getsockname()[1]
    gcs = create_server("127.0.0.1", gcs_port, in_memory=True, default_bucket="acme-jobs")
    gcs.start()
    env = {
        **os.environ,
        "GOOGLE_OAUTH_ACCESS_TOKEN": TOKEN,
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "True",  # google-auth would ask the GCE metadata server (off loopback) for credentials
        "PYTHONPATH": str(ROOT.parent),
    }

    async def job(*args: str) -> subprocess.CompletedProcess[str]:
        return await run_job(tmp_path, env, f"http://127.0.0.1:{port}", *args)

    try:
        (tmp_path / "body.json").write_text(json.dumps({"n": 7}))
        sub = await job("submit", "--json-file", "body.json", "--id", "t-1")
        assert sub.returncode == 0, sub.stderr
        ((body, _attrs),) = fake.bodies("tasks")
        assert json.loads(body)["id"] == "t-1" and json.loads(body)["body"] == {"n": 7}
        for k in ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"):  # the node's side, in this test
            monkeypatch.setenv(k, env[k])
        # google-auth read NO_GCE_CHECK when this process imported it: the flag it keeps, set as the variable would.
        monkeypatch.setattr("google.auth.compute_engine._metadata._NO_GCE_CHECK", True)
        store = ResultStore("gs://acme-jobs/jobs/results")
        await asyncio.to_thread(store.put, Result(id="t-1", status="done", output={"n": 14}, node="vm-1"))
        assert json.loads((await job("result", "t-1")).stdout) == {"n": 14}
        listed = await job("list")
        assert listed.returncode == 0 and "depth in Cloud Monitoring" in listed.stdout and "t-1" in listed.stdout
        env["GOOGLE_OAUTH_ACCESS_TOKEN"] = "not-the-token"
        refused = await job("submit", "--json-file", "body.json")
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    finally:
        gcs.stop()
        await runner.cleanup()


@pytest.mark.slow
async def test_alicloud_submit_sends_to_the_fleets_mns_queue_and_reads_results_from_oss(tmp_path: Path) -> None:
    """On Alibaba Cloud: tasks go to the input queue the components name, signed with the user's AccessKey from the
    environment; results are read from OSS with the same key; `list` reads the queues' depths."""

    from aiohttp import web

    from spotstack.runtime.net import serve
    from tests.clouds.alicloud_api import OssFake
    from tests.clouds.mns import MnsFake
    from tests.components.test_gcp_alicloud import as_cloud

    creds = {"AccessKeyId": "LTAIuser", "AccessKeySecret": "user-secret", "SecurityToken": ""}
    fleet = {**as_cloud("alicloud"), "jobs": {"bucket": "acme-jobs"}}
    (tmp_path / "Pulumi.yaml").write_text("name: acme\nruntime: python\n")
    config = {"alicloud:region": "us-west-1", "spotstack:fleets": [fleet]}
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": config}))
    mns = MnsFake(creds["AccessKeyId"], creds["AccessKeySecret"], "")
    names = {r: node.stack_name(f"llm-jobs-{r}", 120, "acme", "dev") for r in ("input", "output", "dead")}
    for n in names.values():
        mns.queue(n)
    result = Result(id="a-1", status="done", output={"n": 10}, node="i-1")
    oss = OssFake({"acme-jobs": {"jobs/results/a-1.json": result.model_dump_json().encode()}}, creds)
    oss_app = web.Application()
    oss.routes(oss_app)
    mns_runner, mns_port = await serve(mns.app(), "127.0.0.1", 0)
    oss_runner, oss_port = await serve(oss_app, "127.0.0.1", 0)
    env = {
        **os.environ,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": creds["AccessKeyId"],
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": creds["AccessKeySecret"],
        "SPOTSTACK_OSS_ENDPOINT": f"http://127.0.0.1:{oss_port}",
        "PYTHONPATH": str(ROOT.parent),
    }

    async def job(*args: str) -> subprocess.CompletedProcess[str]:
        return await run_job(tmp_path, env, f"http://127.0.0.1:{mns_port}", *args)

    try:
        (tmp_path / "body.json").write_text(json.dumps({"n": 5}))
        sub = await job("submit", "--json-file", "body.json", "--id", "a-2")
        assert sub.returncode == 0, sub.stderr
        (body,) = mns.bodies(names["input"])
        assert json.loads(body)["id"] == "a-2" and json.loads(body)["body"] == {"n": 5}
        got = await job("result", "a-1")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == {"n": 10}
        listed = json.loads((await job("list", "--json")).stdout)
        assert listed["queues"]["input"] == [1, 0] and [t["id"] for t in listed["tasks"]] == ["a-1"]
        env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "wrong"
        refused = await job("submit", "--json-file", "body.json")
        assert refused.returncode == 1 and "SignatureDoesNotMatch" in refused.stderr
    finally:
        await mns_runner.cleanup()
        await oss_runner.cleanup()


async def run_job(cwd: Path, env: dict[str, str], endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`spotstack job ARGS --stack dev --endpoint-url ENDPOINT` in a process of its own, off the event loop (the
    test's loopback services run on it)."""
    import asyncio

    cmd = [sys.executable, "-m", "spotstack.cli.main", "job", *args, "--stack", "dev", "--endpoint-url", endpoint]
    return await asyncio.to_thread(subprocess.run, cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
