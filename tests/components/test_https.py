"""HTTPS on every cloud: a certificate (spec or Input) gives a 443 listener with a strict TLS policy, and port 80
answers with a permanent redirect; fields as the providers document them."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest

from spotstack.components import program
from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.validate import SpecError, validate_fleets
from tests.components.test_gcp_alicloud import as_cloud
from tests.conftest import base_fleet, region_config

ACM = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"


def with_tls(raw: dict[str, Any], **tls: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["service"]["tls"] = tls
    return raw


def plan(raw: dict[str, Any]) -> PlanRun:
    return run_offline(program.run, {"spotstack:fleets": [raw], "gcp:project": "p", **region_config(raw)}, stack="t")


def only(run: PlanRun, typ: str, name: str) -> dict[str, Any]:
    (r,) = run.find(typ, name)
    return r.inputs


def test_aws_https_listener_and_redirect() -> None:
    run = plan(with_tls(base_fleet(), certificate=ACM))
    https = only(run, "aws:lb/listener:Listener", "llm-https")
    assert https["port"] == 443 and https["protocol"] == "HTTPS" and https["certificateArn"] == ACM
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["defaultActions"][0]["type"] == "forward"
    http = only(run, "aws:lb/listener:Listener", "llm-http")
    assert http["defaultActions"] == [
        {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}
    ]
    ports = sorted(
        r.inputs["fromPort"]
        for r in run.find("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.name.startswith("llm-lb-in-")
    )
    assert ports == [80, 443]


def test_aws_without_a_certificate_serves_http_only() -> None:
    run = plan(base_fleet())
    assert not run.find("aws:lb/listener:Listener", "llm-https")
    assert only(run, "aws:lb/listener:Listener", "llm-http")["defaultActions"][0]["type"] == "forward"


def test_aws_certificate_input_from_the_program() -> None:
    import pulumi_aws as aws

    from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs

    spec = validate_fleets([base_fleet()])[0][0]

    def run() -> None:
        cert = aws.acm.Certificate("cert", domain_name="llm.example.com", validation_method="DNS")
        AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, certificate=cert.arn))

    planned = run_offline(run, {})
    assert only(planned, "aws:lb/listener:Listener", "llm-https")["certificateArn"].startswith("arn:aws:acm:")
    with pytest.raises(pulumi.InputPropertiesError, match="certificate: 'not-an-arn' is not an ACM certificate ARN"):
        run_offline(lambda: AwsGpuFleet("llm", AwsGpuFleetArgs(spec=spec, certificate="not-an-arn")), {})


@pytest.mark.parametrize(
    ("cloud", "tls", "path", "message"),
    [
        ("aws", {"certificate": ACM.replace("us-east-1", "eu-west-1")}, "certificate", "of its own region"),
        ("aws", {"certificate": "arn:aws:iam::123456789012:server-certificate/x"}, "certificate", "ACM"),
        ("aws", {"domains": ["llm.example.com"]}, "domains", "GCP only"),
        ("gcp", {"certificate": "c", "domains": ["llm.example.com"]}, "", "not both"),
        ("gcp", {"domains": ["Not A Domain"]}, "domains[0]", "does not match"),
    ],
)
def test_tls_spec_errors_name_their_path(cloud: str, tls: dict[str, Any], path: str, message: str) -> None:
    raw = with_tls(base_fleet() if cloud == "aws" else as_cloud(cloud), **tls)
    with pytest.raises(SpecError) as caught:
        validate_fleets([raw])
    where = "fleets[0].service.tls" + (f".{path}" if path else "")
    assert any(p.path.startswith(where) and message in p.reason for p in caught.value.problems), caught.value


def test_gcp_managed_certificate_https_proxy_and_redirect() -> None:
    run = plan(with_tls(as_cloud("gcp"), domains=["llm.example.com"]))
    cert = only(run, "gcp:compute/managedSslCertificate:ManagedSslCertificate", "llm-cert")
    assert cert["managed"] == {"domains": ["llm.example.com"]}
    (cert_r,) = run.find("gcp:compute/managedSslCertificate:ManagedSslCertificate")
    proxy = only(run, "gcp:compute/targetHttpsProxy:TargetHttpsProxy", "llm-https-proxy")
    assert proxy["sslCertificates"] == [cert_r.outputs["selfLink"]]
    rule = only(run, "gcp:compute/globalForwardingRule:GlobalForwardingRule", "llm-https")
    http_rule = only(run, "gcp:compute/globalForwardingRule:GlobalForwardingRule", "llm-http")
    assert rule["portRange"] == "443" and http_rule["portRange"] == "80"
    assert rule["ipAddress"] == http_rule["ipAddress"]  # one address for both
    redirect = only(run, "gcp:compute/uRLMap:URLMap", "llm-redirect")["defaultUrlRedirect"]
    assert redirect == {"httpsRedirect": True, "stripQuery": False, "redirectResponseCode": "MOVED_PERMANENTLY_DEFAULT"}
    assert only(run, "gcp:compute/targetHttpProxy:TargetHttpProxy", "llm-http-proxy")["urlMap"] == "llm-redirect-id"


def test_alibaba_https_listener_and_redirect_rule() -> None:
    run = plan(with_tls(as_cloud("alicloud"), certificate="12345-us-west-1"))
    https = only(run, "alicloud:alb/listener:Listener", "llm-https")
    assert https["listenerProtocol"] == "HTTPS" and https["listenerPort"] == 443
    assert https["certificates"] == {"certificateId": "12345-us-west-1"}
    assert https["securityPolicyId"] == "tls_cipher_policy_1_2_strict_with_1_3"
    rule = only(run, "alicloud:alb/rule:Rule", "llm-http-redirect")
    assert rule["ruleConditions"] == [{"type": "Path", "pathConfig": {"values": ["/*"]}}]
    assert rule["ruleActions"] == [
        {"order": 1, "type": "Redirect", "redirectConfig": {"protocol": "HTTPS", "port": "443", "httpCode": "301"}}
    ]
    assert 1 <= rule["priority"] <= 10000
