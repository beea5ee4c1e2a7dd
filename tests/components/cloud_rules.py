"""The cloud rules the mock engine does not enforce: each taken from the installed providers' docstrings or the
cloud's API reference (named beside the rule), checked on every planned resource of its type by
tests/components/test_provider_rules.py."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    type: str
    what: str
    """The rule, as the cloud states it."""
    ok: Callable[[dict[str, Any]], bool]


def _name(pattern: str, most: int, key: str = "name") -> Callable[[dict[str, Any]], bool]:
    rx = re.compile(pattern)
    return lambda i: i.get(key) is None or (len(str(i[key])) <= most and rx.fullmatch(str(i[key])) is not None)


def _one_of(key: str, *allowed: str) -> Callable[[dict[str, Any]], bool]:
    return lambda i: i.get(key) is None or i[key] in allowed


def _all_or_none(*keys: str) -> Callable[[dict[str, Any]], bool]:
    return lambda i: len({i.get(k) is None for k in keys}) == 1


def _ends_within_a_year(i: dict[str, Any]) -> bool:
    end = i.get("recurrenceEndTime")
    if end is None:
        return True
    when = dt.datetime.strptime(end, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    return when - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=365)


def _oos_name(i: dict[str, Any]) -> bool:
    name = str(i.get("secretParameterName", ""))
    reserved = ("aliyun", "acs", "alibaba", "alicloud", "oos")
    return (
        2 <= len(name) <= 180
        and re.fullmatch(r"[A-Za-z0-9_/-]+", name) is not None
        and not name.lower().startswith(reserved)
    )


def _ssm_name(i: dict[str, Any]) -> bool:
    name = str(i["name"])
    return (
        len(name) <= 1011
        and name.count("/") <= 15
        and re.fullmatch(r"[A-Za-z0-9_.\-/]+", name) is not None
        and not name.lstrip("/").lower().startswith(("aws", "ssm"))
    )


def _spot_template(i: dict[str, Any]) -> bool:
    s = i.get("scheduling") or {}
    if s.get("provisioningModel") != "SPOT" and not s.get("preemptible"):
        return True
    return s.get("automaticRestart") is False and s.get("onHostMaintenance") == "TERMINATE"


def _boot_disk_fits_the_family(i: dict[str, Any]) -> bool:
    from spotstack.components.gcp.disks import supported

    boot = [d for d in i.get("disks") or [] if d.get("boot")]
    # No disk type: the provider sends pd-standard, which G2 and the Hyperdisk-only families refuse.
    return all(d.get("diskType", "pd-standard") in supported(str(i.get("machineType"))) for d in boot)


def _accelerators_terminate(i: dict[str, Any]) -> bool:
    return not i.get("guestAccelerators") or (i.get("scheduling") or {}).get("onHostMaintenance") == "TERMINATE"


def _flexibility_shape(i: dict[str, Any]) -> bool:
    if not i.get("instanceFlexibilityPolicy"):
        return True
    return i.get("distributionPolicyTargetShape") in ("BALANCED", "ANY_SINGLE_ZONE")


def _price_limits(i: dict[str, Any]) -> bool:
    return i.get("spotStrategy") != "SpotWithPriceLimit" or bool(i.get("spotPriceLimits"))


def _aws_hooks(i: dict[str, Any]) -> bool:
    return all(
        30 <= int(h.get("heartbeatTimeout", 3600)) <= 7200
        and h.get("defaultResult", "ABANDON") in ("CONTINUE", "ABANDON")
        for h in i.get("initialLifecycleHooks") or []
    )


RFC1035 = r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
ELB_NAME = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"

RULES = [
    # AWS (pulumi_aws docstrings; EC2 Auto Scaling, ELBv2, SSM API references)
    Rule(
        "aws:lb/targetGroup:TargetGroup",
        "name: at most 32 alphanumerics or hyphens, no hyphen at the ends",
        _name(ELB_NAME, 32),
    ),
    Rule(
        "aws:lb/targetGroup:TargetGroup",
        "deregistrationDelay 0-3600 s",
        lambda i: 0 <= int(i.get("deregistrationDelay", 300)) <= 3600,
    ),
    Rule(
        "aws:lb/listenerRule:ListenerRule",
        "priority 1-50000; 1-5 conditions; an HTTP header name of at most 40 characters and values of at most 128",
        lambda i: (
            1 <= int(i.get("priority", 1)) <= 50000
            and 1 <= len(i.get("conditions") or []) <= 5
            and all(
                len(c["httpHeader"]["httpHeaderName"]) <= 40 and all(len(v) <= 128 for v in c["httpHeader"]["values"])
                for c in i.get("conditions") or []
                if c.get("httpHeader")
            )
        ),
    ),
    Rule(
        "aws:lb/loadBalancer:LoadBalancer",
        "name: at most 32 alphanumerics or hyphens, no hyphen at the ends",
        _name(ELB_NAME, 32),
    ),
    Rule(
        "aws:autoscaling/group:Group",
        "healthCheckType is EC2, ELB or VPC_LATTICE",
        _one_of("healthCheckType", "EC2", "ELB", "VPC_LATTICE"),
    ),
    Rule("aws:autoscaling/group:Group", "name: at most 255 characters", _name(r".+", 255)),
    Rule(
        "aws:autoscaling/group:Group",
        "launchTemplate or mixedInstancesPolicy, not both",
        lambda i: not (i.get("launchTemplate") and i.get("mixedInstancesPolicy")),
    ),
    Rule("aws:autoscaling/group:Group", "lifecycle hooks: heartbeat 30-7200 s, CONTINUE or ABANDON", _aws_hooks),
    Rule("aws:iam/role:Role", "name: at most 64 characters", _name(r"[\w+=,.@-]+", 64)),
    Rule(
        "aws:ssm/parameter:Parameter",
        "type String, StringList or SecureString",
        _one_of("type", "String", "StringList", "SecureString"),
    ),
    Rule("aws:ssm/parameter:Parameter", "name: at most 1011 characters, 15 levels, no aws/ssm prefix", _ssm_name),
    Rule(
        "aws:s3/bucketV2:BucketV2",
        "bucket: 3-63 lowercase letters, digits, dots, hyphens",
        _name(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", 63, "bucket"),
    ),
    Rule(
        "aws:s3/bucket:Bucket",
        "bucket: 3-63 lowercase letters, digits, dots, hyphens",
        _name(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", 63, "bucket"),
    ),
    # GCP (pulumi_gcp docstrings; Compute Engine naming, Secret Manager, IAM references)
    Rule("gcp:compute/instanceTemplate:InstanceTemplate", "a Spot VM neither restarts nor migrates", _spot_template),
    Rule(
        "gcp:compute/instanceTemplate:InstanceTemplate",
        "the boot disk type is one the machine family supports (G2: no pd-standard; A3 Ultra, A4, G4, C4, N4: "
        "Hyperdisk only)",
        _boot_disk_fits_the_family,
    ),
    Rule(
        "gcp:compute/instanceTemplate:InstanceTemplate",
        "GPUs need onHostMaintenance TERMINATE",
        _accelerators_terminate,
    ),
    Rule(
        "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager",
        "instance flexibility needs target shape BALANCED or ANY_SINGLE_ZONE",
        _flexibility_shape,
    ),
    Rule(
        "gcp:compute/backendService:BackendService",
        "loadBalancingScheme is one the API knows",
        _one_of(
            "loadBalancingScheme",
            "EXTERNAL",
            "EXTERNAL_MANAGED",
            "INTERNAL",
            "INTERNAL_MANAGED",
            "INTERNAL_SELF_MANAGED",
        ),
    ),
    Rule(
        "gcp:serviceaccount/account:Account",
        "accountId: 6-30 lowercase letters, digits, hyphens",
        _name(r"[a-z]([-a-z0-9]*[a-z0-9])", 30, "accountId"),
    ),
    Rule(
        "gcp:secretmanager/secret:Secret",
        "secretId: at most 255 letters, digits, _ or -",
        _name(r"[A-Za-z0-9_-]+", 255, "secretId"),
    ),
    # Alibaba Cloud (pulumi_alicloud docstrings; ESS, RAM, OOS API references)
    Rule(
        "alicloud:ess/scheduledTask:ScheduledTask",
        "recurrence type, value and end time together",
        _all_or_none("recurrenceType", "recurrenceValue", "recurrenceEndTime"),
    ),
    Rule("alicloud:ess/scheduledTask:ScheduledTask", "a recurrence ends within 365 days", _ends_within_a_year),
    Rule(
        "alicloud:ess/scalingConfiguration:ScalingConfiguration",
        "spotStrategy NoSpot, SpotWithPriceLimit or SpotAsPriceGo",
        _one_of("spotStrategy", "NoSpot", "SpotWithPriceLimit", "SpotAsPriceGo"),
    ),
    Rule(
        "alicloud:ess/scalingConfiguration:ScalingConfiguration", "SpotWithPriceLimit needs price limits", _price_limits
    ),
    Rule(
        "alicloud:ess/scalingGroup:ScalingGroup",
        "multiAzPolicy is one ESS knows",
        _one_of("multiAzPolicy", "PRIORITY", "COST_OPTIMIZED", "BALANCE", "COMPOSABLE"),
    ),
    Rule(
        "alicloud:ess/scalingGroup:ScalingGroup",
        "name: 2-64 characters, starting with a letter or digit",
        _name(r"[A-Za-z0-9][\w.-]{1,63}", 64, "scalingGroupName"),
    ),
    Rule(
        "alicloud:ess/lifecycleHook:LifecycleHook",
        "heartbeatTimeout between 30 and 21600 s",
        lambda i: 30 <= int(i.get("heartbeatTimeout", 600)) <= 21600,
    ),
    Rule(
        "alicloud:ess/lifecycleHook:LifecycleHook",
        "lifecycleTransition SCALE_OUT or SCALE_IN",
        _one_of("lifecycleTransition", "SCALE_OUT", "SCALE_IN"),
    ),
    Rule(
        "alicloud:alb/rule:Rule",
        "priority 1-10000; a header condition's key of at most 40 characters",
        lambda i: (
            1 <= int(i.get("priority", 1)) <= 10000
            and all(
                len(c["headerConfig"]["key"]) <= 40 for c in i.get("ruleConditions") or [] if c.get("type") == "Header"
            )
        ),
    ),
    Rule(
        "alicloud:ram/role:Role",
        "roleName: at most 64 letters, digits, . or -",
        _name(r"[A-Za-z0-9.-]+", 64, "roleName"),
    ),
    Rule(
        "alicloud:ram/policy:Policy",
        "policyName: at most 128 letters, digits or -",
        _name(r"[A-Za-z0-9-]+", 128, "policyName"),
    ),
    Rule(
        "alicloud:oos/secretParameter:SecretParameter", "name: 2-180 of [A-Za-z0-9_/-], no reserved prefix", _oos_name
    ),
    # AWS Global Accelerator (its API reference: CreateAccelerator, CreateListener, CreateEndpointGroup)
    Rule(
        "aws:globalaccelerator/accelerator:Accelerator",
        "name: at most 64 alphanumerics, periods or hyphens, no hyphen or period at the ends",
        _name(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", 64),
    ),
    Rule(
        "aws:globalaccelerator/accelerator:Accelerator",
        "ipAddressType IPV4 or DUAL_STACK",
        _one_of("ipAddressType", "IPV4", "DUAL_STACK"),
    ),
    Rule("aws:globalaccelerator/listener:Listener", "protocol TCP or UDP", _one_of("protocol", "TCP", "UDP")),
    Rule(
        "aws:globalaccelerator/listener:Listener",
        "clientAffinity NONE or SOURCE_IP",
        _one_of("clientAffinity", "NONE", "SOURCE_IP"),
    ),
    Rule(
        "aws:globalaccelerator/listener:Listener",
        "1-10 port ranges within 1-65535",
        lambda i: (
            1 <= len(i["portRanges"]) <= 10 and all(1 <= p["fromPort"] <= p["toPort"] <= 65535 for p in i["portRanges"])
        ),
    ),
    Rule(
        "aws:globalaccelerator/endpointGroup:EndpointGroup",
        "a region, a traffic dial of 0-100 and endpoint weights of 0-255",
        lambda i: (
            bool(i.get("endpointGroupRegion"))
            and 0 <= i.get("trafficDialPercentage", 100) <= 100
            and all(0 <= e.get("weight", 128) <= 255 for e in i.get("endpointConfigurations", []))
        ),
    ),
    # Alibaba Cloud Global Accelerator (pulumi_alicloud.ga's docstrings; GA's CreateAccelerator, CreateListener,
    # CreateEndpointGroup and CreateIpSets references)
    Rule(
        "alicloud:ga/accelerator:Accelerator",
        "pay-as-you-go billed by bandwidth plan or data transfer (CDT), or a subscription with its duration",
        lambda i: (
            i.get("paymentType", "Subscription") in ("PayAsYouGo", "Subscription")
            and i.get("bandwidthBillingType", "BandwidthPackage") in ("BandwidthPackage", "CDT")
            and (i.get("paymentType") == "PayAsYouGo") != (i.get("duration") is not None)
        ),
    ),
    Rule(
        "alicloud:ga/accelerator:Accelerator",
        "name: 1-128 characters, starting with a letter, of letters, digits, _ . or -",
        _name(r"[A-Za-z][A-Za-z0-9_.-]*", 128, "acceleratorName"),
    ),
    Rule(
        "alicloud:ga/ipSet:IpSet",
        "an acceleration region; ipVersion IPv4, IPv6 or DUAL_STACK; ispType BGP or BGP_PRO",
        lambda i: (
            bool(i.get("accelerateRegionId"))
            and i.get("ipVersion", "IPv4") in ("IPv4", "IPv6", "DUAL_STACK")
            and i.get("ispType", "BGP") in ("BGP", "BGP_PRO")
        ),
    ),
    Rule(
        "alicloud:ga/listener:Listener",
        "protocol TCP, UDP, HTTP or HTTPS",
        _one_of("protocol", "TCP", "UDP", "HTTP", "HTTPS"),
    ),
    Rule(
        "alicloud:ga/listener:Listener",
        "clientAffinity NONE or SOURCE_IP; listenerType Standard or CustomRouting",
        lambda i: (
            i.get("clientAffinity", "NONE") in ("NONE", "SOURCE_IP")
            and i.get("listenerType", "Standard") in ("Standard", "CustomRouting")
        ),
    ),
    Rule(
        "alicloud:ga/listener:Listener",
        "name: 2-128 characters starting with a letter, of letters, digits, _ or -; ports within 1-65499",
        lambda i: (
            _name(r"[A-Za-z][A-Za-z0-9_-]{1,127}", 128)(i)
            and all(1 <= p["fromPort"] <= p["toPort"] <= 65499 for p in i["portRanges"])
        ),
    ),
    Rule(
        "alicloud:ga/endpointGroup:EndpointGroup",
        "a region; endpoints of a listed type with weights of 0-255; health checks over TCP, HTTP or HTTPS",
        lambda i: (
            bool(i.get("endpointGroupRegion"))
            and i.get("endpointGroupType", "default") in ("default", "virtual")
            and all(
                e["type"] in ("Domain", "Ip", "IpTarget", "PublicIp", "ECS", "SLB", "ALB", "NLB", "ENI", "OSS")
                and 0 <= e["weight"] <= 255
                for e in i["endpointConfigurations"]
            )
            and i.get("healthCheckProtocol", "tcp").lower() in ("tcp", "http", "https")
            and 1 <= i.get("trafficPercentage", 100) <= 100
        ),
    ),
    Rule(
        "alicloud:cr/internetEndpoint:InternetEndpoint",
        "entries are CIDR blocks",
        lambda i: all(re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", e["entry"]) for e in i.get("entries") or []),
    ),
    # EventBridge PutTargets: an event bus in another region (or account) is a target only with a role to put to it.
    Rule(
        "aws:cloudwatch/eventTarget:EventTarget",
        "an event bus target has a roleArn",
        lambda i: ":event-bus/" not in str(i.get("arn", "")) or bool(i.get("roleArn")),
    ),
]
