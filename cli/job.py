"""`spotstack job ...`: submit tasks to a fleet's queue and read their results, on AWS, GCP or a running local fleet.

The queues are found from the stack file: a local fleet writes its queues to .spotstack/local/<stack>/jobs.json
while it runs; on AWS (SQS) and GCP (Pub/Sub topics) they are named from the project, stack and fleet (what the
components declare).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from spotstack.runtime.errors import one_line
from spotstack.runtime.jobs.clients import ROLES, JobClient, MnsJobs, PubSubJobs, QueueMissing, SqsJobs

job_app = typer.Typer(help="Tasks on a fleet's queue: submit, status, result, logs, list.", no_args_is_help=True)
con, err = Console(), Console(stderr=True, soft_wrap=True)
STACK = typer.Option("jobs", "--stack", "-s", help="Stack file: stacks/Pulumi.<stack>.yaml.")
FLEET = typer.Option(None, "--fleet", help="The fleet, when the stack has several with jobs.")
ENDPOINT = typer.Option(None, "--endpoint-url", help="The SQS, Pub/Sub or MNS API endpoint (an emulator).")
ALI_KEY_ENV, ALI_SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ALI_TOKEN_ENV, ALI_ACCOUNT_ENV = "ALIBABA_CLOUD_SECURITY_TOKEN", "ALIBABA_CLOUD_ACCOUNT_ID"
GCP_TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"
"""A bearer token for Pub/Sub (`gcloud auth print-access-token`); else Application Default Credentials."""


def fail(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    return typer.Exit(code)


class Queues:
    """The stack's job queues (a `JobClient` for its queue service) and result store."""

    def __init__(self, stack: str, fleet: str | None, endpoint_url: str | None) -> None:
        from spotstack.components.plan.stackfile import StackFileError, find_project, load_stack
        from spotstack.components.program import config_value
        from spotstack.components.validate import SpecError, validate_fleets

        try:
            project = find_project(Path.cwd())
            sf = load_stack(project, stack)
            fleets, _ = validate_fleets(config_value(sf.config))
        except (SpecError, StackFileError) as exc:
            raise fail(str(exc)) from None
        chosen = [f for f in fleets if f.jobs is not None and (fleet is None or f.name == fleet)]
        if not chosen:
            raise fail(f"stack {stack!r} has no fleet{f' {fleet!r}' if fleet else ''} with a `jobs` section")
        self.fleet = f = chosen[0]
        if f.cloud == "local":
            self.client: JobClient = _local(project / ".spotstack" / "local" / stack / "jobs.json", stack, endpoint_url)
            return
        assert f.jobs is not None
        from spotstack.components.node import job_queue_name
        from spotstack.runtime.clouds import CLOUDS

        names = {r: job_queue_name(f, r, sf.project, stack) for r in ROLES}
        results = CLOUDS[f.cloud].url(f.jobs.bucket, f"{f.jobs.prefix}results")
        if f.cloud == "aws":
            self.client = _aws(f.region, names, results, endpoint_url)
        elif f.cloud == "gcp":
            gcp_project = sf.config.get("gcp:project")
            if not gcp_project:
                raise fail(f"stack {stack!r} sets no gcp:project: the topics live in the project it names")
            self.client = _gcp(str(gcp_project), names, results, endpoint_url)
        else:
            self.client = _alicloud(f.region, names, results, endpoint_url)

    def send(self, body: str) -> None:
        self.client.send(body)

    def store(self) -> Any:
        from spotstack.runtime.jobs.store import ResultStore

        return ResultStore(self.client.results_url)

    def depth(self, role: str) -> tuple[int, int] | None:
        return self.client.depth(role)


def _local(path: Path, stack: str, endpoint_url: str | None) -> JobClient:
    """A running local fleet's queues (moto's SQS), from the file it writes while it runs."""
    import os

    import boto3

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise fail(
            f"no local fleet for {stack!r} is running ({path} is missing): `spotstack local up -s {stack}`"
        ) from None
    endpoint_url = endpoint_url or doc["endpoint_url"]
    os.environ.setdefault("AWS_ENDPOINT_URL", endpoint_url)  # the result store (moto's S3) too
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint_url)
    urls = {"input": doc["input_url"], "output": doc["output_url"], "dead": doc["dead_letter_url"]}
    return SqsJobs(sqs, urls, doc["results_url"])


def _aws(region: str, names: dict[str, str], results: str, endpoint_url: str | None) -> JobClient:
    import boto3

    try:
        return SqsJobs.by_name(boto3.client("sqs", region_name=region, endpoint_url=endpoint_url), names, results)
    except QueueMissing as missing:
        raise fail(f"no queue {missing} in {region}: is the stack deployed?", 1) from None


def _gcp(project: str, names: dict[str, str], results: str, endpoint_url: str | None) -> JobClient:
    from spotstack.runtime.jobs.pubsub import PubSubApi

    topics = {r: f"projects/{project}/topics/{n}" for r, n in names.items()}
    return PubSubJobs(PubSubApi("", api=endpoint_url, token_source=_gcp_token), topics, results)


def _alicloud(region: str, names: dict[str, str], results: str, endpoint_url: str | None) -> JobClient:
    """MNS queues on the account's public endpoint, results in OSS, with the user's AccessKey from the environment
    (ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET, optional _SECURITY_TOKEN)."""
    import os

    import fsspec.config

    from spotstack.runtime import ossfs_v4
    from spotstack.runtime.jobs.mns import MnsApi

    key, secret = os.environ.get(ALI_KEY_ENV), os.environ.get(ALI_SECRET_ENV)
    if not key or not secret:
        raise fail(f"set {ALI_KEY_ENV} and {ALI_SECRET_ENV} (an AccessKey that may use the fleet's queues)")
    creds = {"AccessKeyId": key, "AccessKeySecret": secret, "SecurityToken": os.environ.get(ALI_TOKEN_ENV, "")}
    if endpoint_url is None:
        account = os.environ.get(ALI_ACCOUNT_ENV)
        if not account:
            raise fail(f"set {ALI_ACCOUNT_ENV} (your account ID: MNS endpoints are per account) or --endpoint-url")
        endpoint_url = f"https://{account}.mns.{region}.aliyuncs.com"
    store = os.environ.get("SPOTSTACK_OSS_ENDPOINT") or f"https://oss-{region}.aliyuncs.com"
    ossfs_v4.install()  # OSS Signature V4: new buckets refuse V1
    conf = {"endpoint": store, "key": key, "secret": secret, "region": region}
    if creds["SecurityToken"]:
        conf["token"] = creds["SecurityToken"]
    fsspec.config.conf["oss"] = conf  # ossfs reads anonymously unless given a key
    paths = {r: f"/queues/{n}" for r, n in names.items()}
    return MnsJobs(MnsApi(endpoint_url, lambda: creds), paths, results)


@job_app.command("submit")
def submit(
    command: list[str] = typer.Argument(None, help="The task's command (after --), where the fleet allows commands."),
    stack: str = STACK,
    fleet: str = FLEET,
    json_file: Path = typer.Option(None, "--json-file", help="The task's body (JSON); a JSON list submits one each."),
    training: bool = typer.Option(False, "--training", help="A checkpointed job, resumed after a preemption."),
    task_id: str = typer.Option(None, "--id", help="The task's id (default: a new UUID)."),
    endpoint_url: str = ENDPOINT,
) -> None:
    """Put tasks on the input queue; prints each task's id."""
    from pydantic import ValidationError

    from spotstack.runtime.jobs.task import Task

    if (json_file is None) == (not command):
        raise fail("give --json-file F or a command after --, one of them")
    bodies: list[Any] = [None]
    if json_file is not None:
        try:
            doc = json.loads(json_file.read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"{json_file}: {exc}") from None
        bodies = doc if isinstance(doc, list) else [doc]
    with _reaching(stack):
        q = Queues(stack, fleet, endpoint_url)
    if command and not (q.fleet.jobs and q.fleet.jobs.task_commands):
        raise fail(
            f"fleet {q.fleet.name!r} runs only its own handler: its nodes would dead-letter a task with a command "
            "(set jobs.task_commands: true in its spec to allow them)"
        )
    for i, body in enumerate(bodies):
        try:
            kw: dict[str, Any] = {"body": body, "command": command or None, "training": training}
            if task_id:
                kw["id"] = task_id if len(bodies) == 1 else f"{task_id}-{i}"
            task = Task(**kw)
        except ValidationError as exc:
            raise fail(one_line(exc)) from None
        try:
            q.send(task.encode())
        except typer.Exit:
            raise
        except Exception as exc:  # the SDKs' many kinds of "cannot reach" / "refused"
            raise fail(f"{task.id} not submitted: {one_line(exc)}", 1) from None
        print(task.id)


@contextlib.contextmanager
def _reaching(stack: str) -> Iterator[None]:
    """Calls to the queues and the result store: one line when they cannot be reached, never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        raise fail(f"cannot reach stack {stack!r}'s queues or results: {one_line(exc)}", 1) from None


def _result(stack: str, fleet: str | None, task_id: str, endpoint_url: str | None) -> Any:
    with _reaching(stack):
        r = Queues(stack, fleet, endpoint_url).store().get(task_id)
    if r is None:
        raise fail(f"no result for {task_id} yet: queued or running (`spotstack job list` shows the queue)", 1)
    return r


@job_app.command("status")
def status(task_id: str, stack: str = STACK, fleet: str = FLEET, endpoint_url: str = ENDPOINT) -> None:
    """done / retrying / failed (dead-lettered), with its attempts, preemptions and node."""
    r = _result(stack, fleet, task_id, endpoint_url)
    con.print(
        f"{r.id}: {r.status} (attempt {r.attempt}, {r.preemptions} preemption(s), on {r.node})"
        + (f": {r.error}" if r.error else ""),
        highlight=False,
    )


@job_app.command("result")
def result(task_id: str, stack: str = STACK, fleet: str = FLEET, endpoint_url: str = ENDPOINT) -> None:
    """The task's output, as JSON."""
    r = _result(stack, fleet, task_id, endpoint_url)
    if r.status != "done":
        raise fail(f"{task_id} is {r.status}: {r.error}", 1)
    sys.stdout.write(json.dumps(r.output) + "\n")


@job_app.command("logs")
def logs(task_id: str, stack: str = STACK, fleet: str = FLEET, endpoint_url: str = ENDPOINT) -> None:
    """The last of the task's output and errors (its latest run)."""
    sys.stdout.write(_result(stack, fleet, task_id, endpoint_url).log_tail)


@job_app.command("list")
def list_(
    stack: str = STACK,
    fleet: str = FLEET,
    endpoint_url: str = ENDPOINT,
    as_json: bool = typer.Option(False, "--json", help="One JSON document."),
) -> None:
    """The queues' depths and every task with a result."""
    with _reaching(stack):
        q = Queues(stack, fleet, endpoint_url)
        store = q.store()
        rows = [r for i in store.ids() if (r := store.get(i)) is not None]
        depths = {role: q.depth(role) for role in ROLES}
    if as_json:
        print(json.dumps({"queues": depths, "tasks": [r.model_dump(exclude={"output", "log_tail"}) for r in rows]}))
        return
    con.print(
        "queues: "
        + ", ".join(
            f"{k} {v[0]} waiting / {v[1]} in flight" if v else f"{k} (depth in Cloud Monitoring)"
            for k, v in depths.items()
        ),
        highlight=False,
    )
    t = Table("task", "status", "attempt", "preemptions", "node", "seconds")
    for r in rows:
        t.add_row(r.id, r.status, str(r.attempt), str(r.preemptions), r.node, f"{r.finished_at - r.started_at:.1f}")
    con.print(t)


def _gcp_token() -> str:
    """A token for Pub/Sub from the environment, or from Application Default Credentials (google-auth)."""
    import os

    token = os.environ.get(GCP_TOKEN_ENV)
    if token:
        return token
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError:
        hint = f"`export {GCP_TOKEN_ENV}=$(gcloud auth print-access-token)`"
        raise fail(f"no {GCP_TOKEN_ENV} and no google-auth: {hint}") from None
    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/pubsub"])
        creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except Exception as exc:  # google-auth raises several kinds for "no credentials here"
        hint = f"`gcloud auth application-default login` or set {GCP_TOKEN_ENV}"
        raise fail(f"no GCP credentials ({exc}): {hint}") from None
    return str(creds.token)
