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
    """The stack's job queues and result store."""

    def __init__(self, stack: str, fleet: str | None, endpoint_url: str | None) -> None:
        from spotstack.components import node
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
        f = chosen[0]
        self.fleet = f
        import boto3

        if f.cloud == "local":
            path = project / ".spotstack" / "local" / stack / "jobs.json"
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                raise fail(
                    f"no local fleet for {stack!r} is running ({path} is missing): `spotstack local up -s {stack}`"
                ) from None
            endpoint_url = endpoint_url or doc["endpoint_url"]
            import os

            os.environ.setdefault("AWS_ENDPOINT_URL", endpoint_url)  # the result store (moto's S3) too
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
            self.sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint_url)
            self.urls = {"input": doc["input_url"], "output": doc["output_url"], "dead": doc["dead_letter_url"]}
            self.results_url = doc["results_url"]
        elif f.cloud == "aws":
            self.sqs = boto3.client("sqs", region_name=f.region, endpoint_url=endpoint_url)
            self.urls = {}
            for role in ("input", "output", "dead"):
                name = node.job_queue_name(f, role, sf.project, stack)
                try:
                    self.urls[role] = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                except self.sqs.exceptions.QueueDoesNotExist:
                    raise fail(f"no queue {name} in {f.region}: is the stack deployed?", 1) from None
            assert f.jobs is not None
            self.results_url = f"s3://{f.jobs.bucket}/{f.jobs.prefix}results"
        elif f.cloud == "gcp":
            from spotstack.runtime.jobs.pubsub import PubSubApi

            gcp_project = sf.config.get("gcp:project")
            if not gcp_project:
                raise fail(f"stack {stack!r} sets no gcp:project: the topics live in the project it names")
            self.pubsub = PubSubApi("", api=endpoint_url, token_source=_gcp_token)
            # The topic ids the components give (components/gcp/queues.py), in the stack's project.
            names = {
                r: node.stack_name(f"{f.name}-jobs-{r}", 255, sf.project, stack) for r in ("input", "output", "dead")
            }
            self.topics = {r: f"projects/{gcp_project}/topics/{n}" for r, n in names.items()}
            assert f.jobs is not None
            self.results_url = f"gs://{f.jobs.bucket}/{f.jobs.prefix}results"
        elif f.cloud == "alicloud":
            self._alicloud(f, sf.project, stack, endpoint_url)
        else:
            raise fail(f"fleet {f.name!r} is on {f.cloud}: `spotstack job` speaks SQS, Pub/Sub and MNS")
        self.cloud = f.cloud

    def _alicloud(self, f: Any, project: str, stack: str, endpoint_url: str | None) -> None:
        """MNS queues (the names the components give) on the account's public endpoint, results in OSS, with the
        user's AccessKey from the environment (ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET, optional _SECURITY_TOKEN)."""
        import os

        import fsspec.config

        from spotstack.components import node
        from spotstack.runtime.jobs.mns import MnsApi

        key, secret = os.environ.get(ALI_KEY_ENV), os.environ.get(ALI_SECRET_ENV)
        if not key or not secret:
            raise fail(f"set {ALI_KEY_ENV} and {ALI_SECRET_ENV} (an AccessKey that may use the fleet's queues)")
        creds = {"AccessKeyId": key, "AccessKeySecret": secret, "SecurityToken": os.environ.get(ALI_TOKEN_ENV, "")}
        if endpoint_url is None:
            account = os.environ.get(ALI_ACCOUNT_ENV)
            if not account:
                raise fail(f"set {ALI_ACCOUNT_ENV} (your account ID: MNS endpoints are per account) or --endpoint-url")
            endpoint_url = f"https://{account}.mns.{f.region}.aliyuncs.com"
        self.mns = MnsApi(endpoint_url, lambda: creds)
        self.paths = {
            r: "/queues/" + node.stack_name(f"{f.name}-jobs-{r}", 120, project, stack)
            for r in ("input", "output", "dead")
        }
        store = os.environ.get("SPOTSTACK_OSS_ENDPOINT") or f"https://oss-{f.region}.aliyuncs.com"
        from spotstack.runtime import ossfs_v4

        ossfs_v4.install()  # OSS Signature V4: new buckets refuse V1
        conf = {"endpoint": store, "key": key, "secret": secret, "region": f.region}
        if creds["SecurityToken"]:
            conf["token"] = creds["SecurityToken"]
        fsspec.config.conf["oss"] = conf  # ossfs reads anonymously unless given a key
        self.results_url = f"oss://{f.jobs.bucket}/{f.jobs.prefix}results"

    def send(self, body: str) -> None:
        if self.cloud == "gcp":
            self.pubsub.publish(self.topics["input"], body, {})
        elif self.cloud == "alicloud":
            from spotstack.runtime.jobs.mns import send

            send(self.mns, self.paths["input"], body)
        else:
            self.sqs.send_message(QueueUrl=self.urls["input"], MessageBody=body)

    def store(self) -> Any:
        from spotstack.runtime.jobs.store import ResultStore

        return ResultStore(self.results_url)

    def depth(self, role: str) -> tuple[int, int] | None:
        """(waiting, in flight); None where the queue service does not say (Pub/Sub: Cloud Monitoring does)."""
        if self.cloud == "gcp":
            return None
        if self.cloud == "alicloud":
            from spotstack.runtime.jobs.mns import depth as mns_depth

            return mns_depth(self.mns, self.paths[role])
        from spotstack.runtime.jobs.sqs import depth

        d = depth(self.sqs, self.urls[role])
        return d["visible"], d["in_flight"]


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
        depths = {role: q.depth(role) for role in ("input", "output", "dead")}
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
