"""A GCP fleet's load balancer: a global external Application Load Balancer (EXTERNAL_MANAGED) whose backend
service spreads requests over the fleet's groups by rate, a URL map, one address, and HTTP on 80; with a
certificate (yours, or a Google-managed one for `service.tls.domains`) HTTPS on 443 and a redirect on 80."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from spotstack.components import inputs
from spotstack.components.gcp import mapping
from spotstack.components.spec import FleetSpec

C = gcp.compute


@dataclass
class LoadBalancer:
    backend: gcp.compute.BackendService
    address: gcp.compute.GlobalAddress
    certificate: gcp.compute.ManagedSslCertificate | None
    """The Google-managed certificate declared for `service.tls.domains`, if any."""


def declare(
    name: str,
    spec: FleetSpec,
    hc: gcp.compute.HealthCheck,
    backends: list[gcp.compute.RegionInstanceGroupManager],
    certificate_arg: pulumi.Input[str] | None,
    child: pulumi.ResourceOptions,
    gateway: gcp.compute.BackendService | None = None,
) -> LoadBalancer:
    """With `gateway` (the gateways' backend service) the URL map sends every request there; the nodes' backend
    service stays in it through a route no client request matches, so that it keeps health-checking the nodes (the
    controller reads their health)."""
    svc = spec.service
    qps = spec.scaling.target_qps_per_replica
    bs = C.BackendService(
        f"{name}-backend",
        protocol="HTTP",
        port_name="http",
        load_balancing_scheme="EXTERNAL_MANAGED",
        health_checks=hc.id,
        # Draining: the LB lets a leaving instance finish its requests for this long.
        connection_draining_timeout_sec=svc.drain_timeout,
        # The whole response must come within this (default 30 s): a long generation would be cut.
        timeout_sec=svc.max_request_s,
        backends=[
            C.BackendServiceBackendArgs(
                group=m.instance_group,
                balancing_mode="RATE",
                max_rate_per_instance=mapping.max_rate_per_instance(qps) if qps else 1000.0,
            )
            for m in backends
        ],
        opts=child,
    )
    if gateway is None:
        url_map = C.URLMap(f"{name}-urlmap", default_service=bs.id, opts=child)
    else:
        secret = random.RandomPassword(f"{name}-health-only", length=32, special=False, opts=child)
        header = C.URLMapPathMatcherRouteRuleMatchRuleHeaderMatchArgs(
            header_name="X-Spotstack-Health-Only", exact_match=secret.result
        )
        url_map = C.URLMap(
            f"{name}-urlmap",
            default_service=gateway.id,
            host_rules=[C.URLMapHostRuleArgs(hosts=["*"], path_matcher="all")],
            path_matchers=[
                C.URLMapPathMatcherArgs(
                    name="all",
                    default_service=gateway.id,
                    route_rules=[
                        C.URLMapPathMatcherRouteRuleArgs(
                            priority=1,
                            match_rules=[
                                C.URLMapPathMatcherRouteRuleMatchRuleArgs(prefix_match="/", header_matches=[header])
                            ],
                            service=bs.id,
                        )
                    ],
                )
            ],
            opts=child,
        )
    address = C.GlobalAddress(f"{name}-ip", opts=child)
    certificate, managed = _certificate(name, spec, certificate_arg, child)
    http_map = url_map
    if certificate is not None:
        # HTTPS on 443 serves; HTTP on 80 answers 301 to the same URL on https.
        https_proxy = C.TargetHttpsProxy(
            f"{name}-https-proxy", url_map=url_map.id, ssl_certificates=[certificate], opts=child
        )
        C.GlobalForwardingRule(
            f"{name}-https",
            target=https_proxy.id,
            port_range="443",
            ip_address=address.address,
            load_balancing_scheme="EXTERNAL_MANAGED",
            opts=child,
        )
        http_map = C.URLMap(
            f"{name}-redirect",
            default_url_redirect=C.URLMapDefaultUrlRedirectArgs(
                https_redirect=True, strip_query=False, redirect_response_code="MOVED_PERMANENTLY_DEFAULT"
            ),
            opts=child,
        )
    proxy = C.TargetHttpProxy(f"{name}-http-proxy", url_map=http_map.id, opts=child)
    C.GlobalForwardingRule(
        f"{name}-http",
        target=proxy.id,
        port_range="80",
        ip_address=address.address,
        load_balancing_scheme="EXTERNAL_MANAGED",
        opts=child,
    )
    return LoadBalancer(bs, address, managed)


def _certificate(
    name: str, spec: FleetSpec, given: pulumi.Input[str] | None, child: pulumi.ResourceOptions
) -> tuple[pulumi.Input[str] | None, gcp.compute.ManagedSslCertificate | None]:
    """The certificate to serve (an Input the program gave, the spec's, or a managed one declared here)."""
    if given is not None:
        return inputs.checked("GcpGpuFleet", "certificate", given, "an SSL certificate self link"), None
    tls = spec.service.tls
    if tls is None:
        return None, None
    if tls.certificate is not None:
        return tls.certificate, None
    # Google provisions it once the domains resolve to the load balancer's address (minutes to an hour).
    cert = C.ManagedSslCertificate(
        f"{name}-cert", managed=C.ManagedSslCertificateManagedArgs(domains=list(tls.domains)), opts=child
    )
    link: pulumi.Output[str] = cert.self_link
    return link, cert
