"""Checks of the services a fleet uses besides its groups, against what each cloud accepts: the job queues (SQS,
Pub/Sub, MNS limits) and HTTPS certificates. Errors and warnings, each with its config path."""

from __future__ import annotations

import re
from collections.abc import Callable

from spotstack.components.problem import Problem
from spotstack.components.spec import FleetSpec
from spotstack.runtime.clouds import PROFILES

PUBSUB_MIN_ATTEMPTS, PUBSUB_MAX_LEASE, PUBSUB_MAX_RETENTION = 5, 600, 7 * 86400
MNS_MAX_RETENTION = 7 * 86400


QUEUE_MAX_HOLD = 43200
"""SQS and MNS: the longest a received message stays hidden, counted from its receipt."""

ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}$")


def check_tls(fleet: FleetSpec, at: str) -> list[Problem]:
    """A certificate the cloud can attach: ACM's in the ALB's region; managed domains on GCP only; one source."""
    tls = fleet.service.tls
    if tls is None:
        return []
    where = f"{at}.service.tls"
    if (tls.certificate is None) == (not tls.domains):
        return [Problem(where, "give `certificate` or (GCP) `domains`, not both and not neither")]
    if tls.domains and fleet.cloud != "gcp":
        return [
            Problem(
                f"{where}.domains",
                f"managed certificates for domains are declared on GCP only; on {fleet.cloud} give `certificate`",
            )
        ]
    if fleet.cloud == "aws" and tls.certificate is not None:
        m = ACM_ARN.match(tls.certificate)
        if m is None:
            return [
                Problem(
                    f"{where}.certificate", "must be an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)"
                )
            ]
        if m["region"] != fleet.region:
            return [
                Problem(
                    f"{where}.certificate",
                    f"an ALB takes ACM certificates of its own region ({fleet.region}), not {m['region']}",
                )
            ]
    return []


def check_jobs(fleet: FleetSpec, at: str) -> tuple[list[Problem], list[Problem]]:
    """What each cloud's queue cannot honour (rule 5: reported, never silently dropped)."""
    j = fleet.jobs
    if j is None:
        return [], []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if j.http_path is None and j.command is None and not j.task_commands:
        errors.append(Problem(f"{at}.jobs", "give http_path or command (or task_commands: true): tasks need a handler"))
    if j.backlog_per_instance is not None and fleet.scaling.queue is not None:
        errors.append(
            Problem(f"{at}.jobs.backlog_per_instance", "scaling.queue is set too: scale on one queue's backlog")
        )
    if j.task_timeout > j.lease and j.lease < 30:
        warnings.append(Problem(f"{at}.jobs.lease", f"{j.lease}s leaves little room for heartbeats under load"))
    if fleet.cloud == "gcp":
        if j.max_attempts < PUBSUB_MIN_ATTEMPTS:
            warnings.append(
                Problem(
                    f"{at}.jobs.max_attempts",
                    f"Pub/Sub dead-letters after at least {PUBSUB_MIN_ATTEMPTS} deliveries: the worker dead-letters "
                    f"after {j.max_attempts} failures itself, but a task lost without an answer gets "
                    f"{PUBSUB_MIN_ATTEMPTS} deliveries",
                )
            )
        if j.lease > PUBSUB_MAX_LEASE:
            warnings.append(
                Problem(
                    f"{at}.jobs.lease", f"Pub/Sub's ack deadline is at most {PUBSUB_MAX_LEASE}s: {PUBSUB_MAX_LEASE}s"
                )
            )
        if j.retention > PUBSUB_MAX_RETENTION:
            warnings.append(
                Problem(f"{at}.jobs.retention", f"Pub/Sub keeps messages at most 7 days: {PUBSUB_MAX_RETENTION}s")
            )
    if fleet.cloud == "alicloud" and j.retention > MNS_MAX_RETENTION:
        warnings.append(Problem(f"{at}.jobs.retention", f"MNS keeps messages at most 7 days: {MNS_MAX_RETENTION}s"))
    if fleet.cloud in ("aws", "alicloud") and j.task_timeout > QUEUE_MAX_HOLD:
        service = "SQS" if fleet.cloud == "aws" else "MNS"
        warnings.append(
            Problem(
                f"{at}.jobs.task_timeout",
                f"{service} hides a task at most 12 h from its receipt: training runs checkpoint and go back to the "
                "queue before then; any other task running longer may be taken by a second worker",
            )
        )
    if fleet.cloud == "alicloud" and j.backlog_per_instance is not None:
        warnings.append(
            Problem(
                f"{at}.jobs.backlog_per_instance",
                "backlog scaling is mapped on AWS (SQS) and GCP (Pub/Sub): not applied on alicloud",
            )
        )
    return errors, warnings


def check_max_request(fleet: FleetSpec, at: str) -> tuple[list[Problem], list[Problem]]:
    """A timeout the load balancer cannot take is an error; a drain longer than any request is a warning."""
    svc, most = fleet.service, PROFILES[fleet.cloud].max_request_s
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if svc.max_request_s > most:
        errors.append(
            Problem(
                f"{at}.service.max_request_s", f"{fleet.cloud}'s load balancer waits at most {most} s for a request"
            )
        )
    if svc.drain_timeout > svc.max_request_s:
        warnings.append(
            Problem(
                f"{at}.service.drain_timeout",
                f"{svc.drain_timeout} s is longer than max_request_s ({svc.max_request_s} s): no request lasts that "
                "long, so a drain waits for nothing past it",
            )
        )
    return errors, warnings


def check_notifications(fleet: FleetSpec, at: str) -> tuple[list[Problem], list[Problem]]:
    """A target for another cloud is an error; no target at all is a warning (alarms that reach nobody)."""
    n = fleet.notifications
    if n is None:
        if fleet.cloud != "local" and fleet.capacity.dynamic_on_demand_fallback:
            why = "the controller's alarm notifies nobody: set notifications (emails, or your cloud's target)"
            return [], [Problem(f"{at}.notifications", why)]
        return [], []
    foreign = {
        "sns_topic_arn": n.sns_topic_arn and fleet.cloud != "aws",
        "gcp_channels": n.gcp_channels and fleet.cloud != "gcp",
        "alicloud_contact_group": n.alicloud_contact_group and fleet.cloud != "alicloud",
    }
    errors = [Problem(f"{at}.notifications.{k}", f"not a {fleet.cloud} target") for k, bad in foreign.items() if bad]
    return errors, []


OOS_NAME = re.compile(r"^(?!(?i:aliyun|acs|alibaba|alicloud|oos))[A-Za-z0-9_/-]{2,180}$")
GCP_SECRET = re.compile(r"^(projects/[a-z0-9-]+/secrets/)?[A-Za-z0-9_-]{1,255}$")
SSM_NAME = re.compile(r"^/?[A-Za-z0-9_.\-/]{1,1011}$")


KEY_STORES: dict[str, tuple[Callable[[str], bool], str]] = {
    "aws": (
        lambda k: SSM_NAME.match(k) is not None and not k.lstrip("/").lower().startswith(("aws", "ssm")),
        "an SSM parameter name (a SecureString you create)",
    ),
    "gcp": (lambda k: GCP_SECRET.match(k) is not None, "a Secret Manager secret id, or projects/P/secrets/ID"),
    "alicloud": (lambda k: OOS_NAME.match(k) is not None, "an OOS secret parameter name (2-180 of A-Za-z0-9_/-)"),
}
"""Where each cloud's gateways read their API keys from, and what a name there looks like."""


def check_gateway(fleet: FleetSpec, at: str) -> tuple[list[Problem], list[Problem]]:
    """What the gateway's settings must look like on each cloud (its API keys' secret name, its type's price)."""
    gw = fleet.service.gateway
    if gw is None or fleet.cloud == "local":
        return [], []
    where = f"{at}.service.gateway"
    from spotstack.components.gateway import DEFAULT_TYPES

    errors: list[Problem] = []
    warnings: list[Problem] = []
    if gw.api_keys is None:
        warnings.append(Problem(f"{where}.api_keys", "no API keys: the gateway takes every request"))
    else:
        ok, what = KEY_STORES[fleet.cloud]
        if not ok(gw.api_keys):
            errors.append(Problem(f"{where}.api_keys", f"must be {what}"))
    default, _ = DEFAULT_TYPES[fleet.cloud]
    if gw.type is not None and gw.type != default:
        warnings.append(Problem(f"{where}.type", f"{gw.type} is not in the price table: the plan does not price it"))
    return errors, warnings
