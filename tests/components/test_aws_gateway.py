"""The fleet gateway on AWS (`service.gateway`, stacks/Pulumi.dev-llm.yaml) under the mock engine: the load
balancer forwards to the gateways, nodes take traffic from the gateways and health checks only, the gateways' group,
role and boot document; and the boot document's command run against moto's EC2, finding the fleet's nodes."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotstack.components.plan import plan_stack
from spotstack.components.plan.engine import PlanRun
from tests.conftest import ROOT
from tests.waits import wait_until


@pytest.fixture(scope="module")
def plan() -> PlanRun:
    return plan_stack(ROOT, "dev-llm").run


def one(plan: PlanRun, type_: str, name: str) -> dict[str, Any]:
    found = plan.find(type_, name)
    assert len(found) == 1, [r.name for r in plan.find(type_)]
    return found[0].inputs


def test_the_load_balancer_forwards_to_the_gateways_and_health_checks_the_nodes(plan: PlanRun) -> None:
    listener = one(plan, "aws:lb/listener:Listener", "llm-http")
    (action,) = listener["defaultActions"]
    assert action["targetGroupArn"].endswith("targetgroup/llm-gateway-tg/0123456789abcdef")
    gw_tg = one(plan, "aws:lb/targetGroup:TargetGroup", "llm-gateway-tg")
    assert gw_tg["port"] == 8000 and gw_tg["healthCheck"]["path"] == "/ready"
    assert gw_tg["deregistrationDelay"] == 900  # a leaving gateway finishes the longest request
    # The nodes' target group keeps its health checks (the controller reads them) through a rule no client matches.
    rule = one(plan, "aws:lb/listenerRule:ListenerRule", "llm-nodes-health-only")
    assert rule["actions"][0]["targetGroupArn"].endswith("targetgroup/llm-tg/0123456789abcdef")
    header = rule["conditions"][0]["httpHeader"]
    assert header["httpHeaderName"] == "X-Spotstack-Health-Only" and len(header["values"]) == 1


def test_nodes_take_traffic_from_the_gateways_and_gateways_from_the_load_balancer(plan: PlanRun) -> None:
    rules = {r.name: r.inputs for r in plan.find("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")}
    assert rules["llm-gateway-in"]["referencedSecurityGroupId"] == "llm-lb-sg-id"
    assert rules["llm-gateway-in"]["fromPort"] == rules["llm-gateway-in"]["toPort"] == 8000
    for port_name, port in (("service", 8080), ("readiness", 8471)):
        r = rules[f"llm-node-in-gateway-{port_name}"]
        assert (r["securityGroupId"], r["referencedSecurityGroupId"], r["fromPort"]) == (
            "llm-node-sg-id",
            "llm-gateway-sg-id",
            port,
        )
    assert not any(r.get("cidrIpv4") for n, r in rules.items() if n.startswith(("llm-node", "llm-gateway")))


def test_the_gateways_group_role_and_template(plan: PlanRun) -> None:
    asg = one(plan, "aws:autoscaling/group:Group", "llm-gateway-asg")
    assert asg["minSize"] == asg["maxSize"] == asg["desiredCapacity"] == 2
    assert asg["targetGroupArns"] == [
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/llm-gateway-tg/0123456789abcdef"
    ]
    assert "mixedInstancesPolicy" not in asg  # on-demand: gateways must outlive the spot nodes they front
    tags = {t["key"]: t["value"] for t in asg["tags"]}
    assert tags["spotstack:gateway"] == "llm" and "spotstack:fleet" not in tags  # never found as a replica
    lt = one(plan, "aws:ec2/launchTemplate:LaunchTemplate", "llm-gateway-lt")
    assert lt["instanceType"] == "c7i.large" and lt["imageId"].startswith("resolve:ssm:/aws/service/canonical/ubuntu")
    assert lt["metadataOptions"]["httpTokens"] == "required"
    doc = json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy", "llm-gateway-policy")["policy"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["FindNodes"]["Action"] == ["ec2:DescribeInstances"]
    assert by_sid["ReadApiKeys"]["Resource"] == "arn:aws:ssm:us-east-1:*:parameter/spotstack/dev-llm/api-keys"
    assert by_sid["ReadPackage"]["Resource"] == "arn:aws:s3:::acme-models-dev/spotstack-agent/*"
    assert {a for s in doc["Statement"] for a in s["Action"]} == {
        "ec2:DescribeInstances",
        "ssm:GetParameter",
        "s3:GetObject",
    }


def boot_document(plan: PlanRun) -> dict[str, Any]:
    lt = one(plan, "aws:ec2/launchTemplate:LaunchTemplate", "llm-gateway-lt")
    text = base64.b64decode(lt["userData"]).decode()
    assert text.startswith("#cloud-config\n")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def test_the_boot_document_fetches_the_keys_installs_the_package_and_starts_the_gateway(plan: PlanRun) -> None:
    doc = boot_document(plan)
    steps = [" ".join(c) for c in doc["runcmd"]]
    assert any(
        "fetch-secret" in s and "/spotstack/dev-llm/api-keys" in s and "/etc/spotstack/api-keys" in s for s in steps
    )
    assert any("pip install" in s and "spotstack-" in s and ".whl[agent]" in s for s in steps)  # the fleet's wheel
    assert steps[-1] == "systemctl enable --now spotstack-gateway.service"
    (unit,) = [f["content"] for f in doc["write_files"] if f["path"].endswith("spotstack-gateway.service")]
    assert "TimeoutStopSec=930" in unit  # the drain: the longest request, and a margin


@pytest.mark.slow
def test_the_boot_documents_gateway_command_finds_the_fleets_nodes_on_moto(plan: PlanRun, tmp_path: Path) -> None:
    """The unit's command line, as rendered, run here: the package's own `spotstack` instead of /opt/spotstack's,
    a free port on loopback, the API keys in a file; moto's EC2 holds two of the fleet's nodes, a gateway instance
    and another fleet's node. The gateway lists exactly the fleet's two, by private address and the ports of the
    model server and the agent, and asks for the key."""
    from moto.server import ThreadedMotoServer

    from spotstack.runtime.net import free_port

    doc = boot_document(plan)
    (unit,) = [f["content"] for f in doc["write_files"] if f["path"].endswith("spotstack-gateway.service")]
    (exec_start,) = [ln[len("ExecStart=") :] for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/spotstack/bin/spotstack" and argv[1:3] == ["gateway", "run"]
    keys = tmp_path / "api-keys"
    keys.write_text("sk-test-1\n")
    keys.chmod(0o600)
    port = free_port()
    args = argv[3:]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("--api-keys-file") + 1] = str(keys)

    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port)
    moto.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        import boto3

        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
        ec2 = boto3.client(
            "ec2", region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test",
            aws_secret_access_key="test",
        )  # fmt: skip
        ami = ec2.describe_images()["Images"][0]["ImageId"]

        def launch(key: str, value: str) -> str:
            tags = [{"ResourceType": "instance", "Tags": [{"Key": key, "Value": value}]}]
            inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=tags)["Instances"][0]
            return str(inst["PrivateIpAddress"])

        nodes = [launch("spotstack:fleet", "llm"), launch("spotstack:fleet", "llm")]
        launch("spotstack:gateway", "llm")
        launch("spotstack:fleet", "other")
        proc = subprocess.Popen(
            [sys.executable, "-m", "spotstack.cli.main", "gateway", "run", *args], env=env, stderr=subprocess.PIPE
        )

        def status() -> dict[str, Any] | None:
            import urllib.request

            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                    got: dict[str, Any] = json.loads(r.read())
                    return got
            except OSError:
                return None

        wait_until(lambda: (s := status()) is not None and len(s["replicas"]) == 2, 60, "the gateway to list nodes")
        st = status()
        assert st is not None
        assert sorted(r["url"] for r in st["replicas"]) == sorted(f"http://{ip}:8080" for ip in nodes)
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401  # the keys file is read: no key, no request
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        moto.stop()
