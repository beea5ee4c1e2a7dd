"""The job queues under Pulumi's mock engine, on each cloud: the queues with the fields the cloud requires, the
dead-letter wiring, encryption, and node permissions on the fleet's own queues only."""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.validate import validate_fleets

JOBS = {"bucket": "acme-jobs", "max_attempts": 4, "lease": 120, "retention": 86400, "backlog_per_instance": 10}


def aws_plan(fleet: dict[str, Any]) -> PlanRun:
    fleet = {**fleet, "jobs": JOBS, "scaling": {}}
    spec = validate_fleets([fleet])[0][0]
    return run_offline(lambda: AwsGpuFleet(spec.name, AwsGpuFleetArgs(spec=spec)), {}, stack="test")


def one(plan: PlanRun, type_: str, name: str) -> dict[str, Any]:
    found = plan.find(type_, name)
    assert len(found) == 1, f"{type_} {name}: {[r.name for r in plan.find(type_)]}"
    return found[0].inputs


def test_aws_sqs_queues_redrive_encrypt_and_refuse_plain_http(fleet: dict[str, Any]) -> None:
    plan = aws_plan(fleet)
    inp = one(plan, "aws:sqs/queue:Queue", "llm-jobs-input")
    out = one(plan, "aws:sqs/queue:Queue", "llm-jobs-output")
    dead = one(plan, "aws:sqs/queue:Queue", "llm-jobs-dead")
    assert inp["name"] == "spotstack-spotstack-test-llm-jobs-input" and len(inp["name"]) <= 80
    assert inp["visibilityTimeoutSeconds"] == 120 and inp["messageRetentionSeconds"] == 86400
    assert 0 <= inp["receiveWaitTimeSeconds"] <= 20  # SQS's long-poll range
    redrive = json.loads(inp["redrivePolicy"])
    assert redrive["maxReceiveCount"] == 4 and redrive["deadLetterTargetArn"].endswith("llm-jobs-dead")
    assert dead["messageRetentionSeconds"] == 14 * 86400  # SQS's maximum: dead letters wait for a person
    assert all(q["sqsManagedSseEnabled"] is True for q in (inp, out, dead))
    for role in ("input", "output", "dead"):
        pol = json.loads(one(plan, "aws:sqs/queuePolicy:QueuePolicy", f"llm-jobs-{role}-tls")["policy"])
        assert pol["Statement"][0]["Effect"] == "Deny"
        assert pol["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    allow = json.loads(
        one(plan, "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy", "llm-jobs-dead-allow")["redriveAllowPolicy"]
    )
    assert allow["redrivePermission"] == "byQueue" and allow["sourceQueueArns"][0].endswith("llm-jobs-input")


def test_aws_nodes_get_the_worker_and_permissions_on_their_own_queues_only(fleet: dict[str, Any]) -> None:
    plan = aws_plan(fleet)
    lt = one(plan, "aws:ec2/launchTemplate:LaunchTemplate", "llm-lt")
    files = {f["path"]: f["content"] for f in yaml.safe_load(base64.b64decode(lt["userData"]).decode())["write_files"]}
    jobs = json.loads(files["/etc/spotstack/agent.json"])["jobs"]
    assert jobs["enabled"] is True and jobs["input_url"].endswith("llm-jobs-input")
    assert jobs["results_url"] == "s3://acme-jobs/jobs/results" and jobs["scale_in_protection"] is True
    assert jobs["lease_s"] == 120 and jobs["max_attempts"] == 4
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-node-policy")["policy"])
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    assert by_sid["TakeTasks"]["Resource"].endswith("llm-jobs-input")
    assert set(by_sid["TakeTasks"]["Action"]) == {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
    }
    sends = [r.rsplit(":", 1)[-1] for r in by_sid["SendResults"]["Resource"]]
    assert sends == ["spotstack-spotstack-test-llm-jobs-output", "spotstack-spotstack-test-llm-jobs-dead"]
    assert by_sid["KeepResultsAndCheckpoints"]["Resource"] == "arn:aws:s3:::acme-jobs/jobs/*"
    assert all("asg" in r for r in by_sid["ProtectWhileBusy"]["Resource"])
    assert not any(a == "sqs:*" or a.endswith(":*") for st in doc["Statement"] for a in st["Action"])
    # Backlog scaling on the fleet's own input queue.
    pol = one(plan, "aws:autoscaling/policy:Policy", "llm-backlog")
    metrics = pol["targetTrackingConfiguration"]["customizedMetricSpecification"]["metrics"]
    assert metrics[0]["metricStat"]["metric"]["dimensions"][0]["value"] == "spotstack-spotstack-test-llm-jobs-input"
    assert pol["targetTrackingConfiguration"]["targetValue"] == 10


def test_gcp_pubsub_topics_subscription_dead_letter_and_iam() -> None:
    from tests.components.test_gcp_alicloud import as_cloud, plan_of

    plan = plan_of({**as_cloud("gcp"), "jobs": JOBS, "scaling": {}})
    topics = {r.name: r.inputs for r in plan.find("gcp:pubsub/topic:Topic") if "-jobs-" in r.name}
    assert set(topics) == {"llm-jobs-input", "llm-jobs-output", "llm-jobs-dead"}
    sub = one(plan, "gcp:pubsub/subscription:Subscription", "llm-jobs-tasks")
    assert sub["topic"] == "llm-jobs-input-id"  # the input topic's id
    assert sub["ackDeadlineSeconds"] == 120 and 10 <= sub["ackDeadlineSeconds"] <= 600  # Pub/Sub's range
    assert sub["enableExactlyOnceDelivery"] is True
    dl = sub["deadLetterPolicy"]
    assert dl["deadLetterTopic"] == "llm-jobs-dead-id"
    assert dl["maxDeliveryAttempts"] == 5  # max_attempts 4 is below Pub/Sub's floor of 5 (a plan warning says so)
    assert sub["messageRetentionDuration"] == "86400s" and sub["expirationPolicy"]["ttl"] == ""
    # Results and dead letters have subscriptions: a topic without one drops what is published.
    subs = {r.name for r in plan.find("gcp:pubsub/subscription:Subscription") if "-jobs-" in r.name}
    assert subs == {"llm-jobs-tasks", "llm-jobs-results", "llm-jobs-dead-letters"}
    node_sa = "serviceAccount:spotstack-test-llm-node@"
    pubs = {r.name: r.inputs for r in plan.find("gcp:pubsub/topicIAMMember:TopicIAMMember")}
    for role in ("input", "output", "dead"):
        m = pubs[f"llm-jobs-publish-{role}"]
        assert m["role"] == "roles/pubsub.publisher" and m["member"].startswith(node_sa)
    agent = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert pubs["llm-jobs-dead-agent"]["member"] == agent
    takes = {r.name: r.inputs for r in plan.find("gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember")}
    assert takes["llm-jobs-take"]["role"] == "roles/pubsub.subscriber"
    assert takes["llm-jobs-tasks-agent"]["member"] == agent
    objects = one(plan, "gcp:storage/bucketIAMMember:BucketIAMMember", "llm-jobs-objects")
    assert objects["bucket"] == "acme-jobs" and "objects/jobs/" in objects["condition"]["expression"]
    assert not any("speaks SQS" in w for w in plan.warnings)
    # Backlog scaling on the fleet's own task subscription: replicas = undelivered / backlog_per_instance.
    assert not any("backlog scaling" in w for w in plan.warnings)
    (metric,) = one(plan, "gcp:compute/regionAutoscaler:RegionAutoscaler", "llm-autoscaler")["autoscalingPolicy"][
        "metrics"
    ]
    assert metric["name"] == "pubsub.googleapis.com/subscription/num_undelivered_messages"
    assert metric["singleInstanceAssignment"] == 10.0
    assert metric["filter"] == (
        f'resource.type = pubsub_subscription AND resource.label.subscription_id = "{sub["name"]}"'
    )
    # The nodes' worker pulls the task subscription and publishes to the topics.
    tpl = next(r.inputs for r in plan.find("gcp:compute/instanceTemplate:InstanceTemplate"))
    files = {f["path"]: f["content"] for f in yaml.safe_load(tpl["metadata"]["user-data"])["write_files"]}
    jobs = json.loads(files["/etc/spotstack/agent.json"])["jobs"]
    assert jobs["queue"] == "pubsub" and jobs["input_url"] == "llm-jobs-tasks-id"
    assert jobs["input_topic"] == "llm-jobs-input-id" and jobs["dead_letter_url"] == "llm-jobs-dead-id"
    assert jobs["results_url"] == "gs://acme-jobs/jobs/results"
    assert any("max_attempts" in w and "Pub/Sub" in w for w in plan.warnings)


def test_alicloud_mns_queues_dead_letter_encryption_and_ram() -> None:
    from tests.components.test_gcp_alicloud import as_cloud, plan_of

    plan = plan_of({**as_cloud("alicloud"), "jobs": JOBS, "scaling": {}})
    qs = {r.name: r.inputs for r in plan.find("alicloud:message/serviceQueue:ServiceQueue")}
    assert set(qs) == {"llm-jobs-input", "llm-jobs-output", "llm-jobs-dead"}
    inp = qs["llm-jobs-input"]
    assert inp["visibilityTimeout"] == 120 and 1 <= inp["visibilityTimeout"] <= 43200  # MNS's range
    assert inp["messageRetentionPeriod"] == 86400 and 60 <= inp["messageRetentionPeriod"] <= 604800
    assert 0 <= inp["pollingWaitSeconds"] <= 30
    assert inp["dlqPolicy"] == {
        "enabled": True,
        "deadLetterTargetQueue": qs["llm-jobs-dead"]["queueName"],
        "maxReceiveCount": 4,
    }
    assert all(q["enableSse"] is True and q["sseType"] == "SMQ" for q in qs.values())
    assert all(len(q["queueName"]) <= 120 for q in qs.values())
    doc = json.loads(one(plan, "alicloud:ram/policy:Policy", "llm-jobs-policy")["policyDocument"])
    mns = doc["Statement"][0]
    assert all(any(q["queueName"] in r for q in qs.values()) for r in mns["Resource"])
    assert not any(a.endswith("*") for st in doc["Statement"] for a in st["Action"])
    assert doc["Statement"][1]["Resource"] == "acs:oss:*:*:acme-jobs/jobs/*"
    attach = one(plan, "alicloud:ram/rolePolicyAttachment:RolePolicyAttachment", "llm-jobs-policy-attach")
    assert attach["roleName"] == one(plan, "alicloud:ram/role:Role", "llm-node-role")["roleName"]
    # The nodes' worker takes tasks from those queues over the VPC endpoint, results and checkpoints in OSS.
    assert not any("take no tasks" in w for w in plan.warnings)
    import base64

    cfg = next(r for r in plan.find("alicloud:ess/scalingConfiguration:ScalingConfiguration")).inputs
    files = {f["path"]: f["content"] for f in yaml.safe_load(base64.b64decode(cfg["userData"]))["write_files"]}
    jobs = json.loads(files["/etc/spotstack/agent.json"])["jobs"]
    endpoint = "https://1234567890123456.mns.us-west-1-internal.aliyuncs.com/queues/"
    assert jobs["queue"] == "mns"
    assert jobs["input_url"] == endpoint + qs["llm-jobs-input"]["queueName"]
    assert jobs["dead_letter_url"] == endpoint + qs["llm-jobs-dead"]["queueName"]
    assert jobs["results_url"] == "oss://acme-jobs/jobs/results"


def test_tasks_longer_than_the_queues_hold_limit_are_warned_of() -> None:
    from tests.conftest import base_fleet

    long = {**base_fleet(), "jobs": {**JOBS, "task_timeout": 86400}}
    (warning,) = [str(w) for w in validate_fleets([long])[1] if "12 h" in str(w)]
    assert warning.startswith("fleets[0].jobs.task_timeout: SQS hides a task at most 12 h")
    short = {**base_fleet(), "jobs": JOBS}
    assert not [w for w in validate_fleets([short])[1] if "12 h" in str(w)]
