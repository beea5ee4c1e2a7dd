"""The components for every Pulumi language: a component provider whose schema Pulumi infers from these classes.

`pulumi package add <path-or-git-url>/plugin` runs `plugin/__main__.py`, which hosts `GpuFleet` through Pulumi's
component provider host; YAML, TypeScript, Go and .NET programs then declare `spotstack:index:GpuFleet` as they
declare any resource. The schema comes from the annotations below, read at runtime, so this module does not use
`from __future__ import annotations` (it would turn them into strings the analyzer cannot follow).

A Python program may use this class too, but the cloud classes (`spotstack.components.aws.fleet.AwsGpuFleet` ...)
take the typed spec and expose every child resource.
"""

from typing import Any, TypedDict

import pulumi
from typing_extensions import NotRequired  # typing.NotRequired is 3.11+; pydantic and pulumi depend on it

from spotstack.components import program
from spotstack.components.validate import SpecError, validate_fleets

PACKAGE = "spotstack"


class GpuFleetArgs(TypedDict):
    spec: pulumi.Input[dict[str, Any]]
    """The fleet: one entry of the `spotstack:fleets` list (docs/spec.md; every field in docs/reference/spec.md):
    `name`, `cloud` (aws, gcp or alicloud), `region`, `zones`, `instances`, `capacity`, `image`, and the optional
    `service`, `scaling`, `model_cache`, `jobs`, `network`. Plain values: the resources it declares are named
    from it."""
    network_id: NotRequired[pulumi.Input[str]]
    """A network of your program's own: the VPC id (AWS, Alibaba) or the network's self link (GCP). With
    `subnet_ids`, replaces `spec.network`."""
    subnet_ids: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """One subnet (AWS) or vSwitch (Alibaba) per zone of `spec.zones`, in order; on GCP one item, the region's
    subnetwork."""
    certificate: NotRequired[pulumi.Input[str]]
    """HTTPS: an ACM certificate ARN (AWS), an SSL certificate self link (GCP) or a certificate id (Alibaba).
    Replaces `spec.service.tls`; port 80 then redirects to 443."""
    model_bucket: NotRequired[pulumi.Input[str]]
    """The model bucket's name, e.g. a bucket your program declares: replaces `spec.model_cache.bucket` (which may
    then be left out). The nodes' config, their read grant and the agent the fleet publishes there wait for it."""


class GpuFleet(pulumi.ComponentResource):
    """A spot GPU fleet on AWS, GCP or Alibaba Cloud, as `spec.cloud` says: groups mixing spot and on-demand
    capacity, the load balancer, autoscaling, the fleet controller, least-privilege identity, and the image
    registry and model bucket the spec asks for. Nodes drain on every spot notice and load models from peers."""

    endpoint: pulumi.Output[str]
    """The load balancer's DNS name (AWS, Alibaba) or IP address (GCP)."""
    controller_config: pulumi.Output[str] | None
    """The fleet controller's configuration document, where the fleet has a controller
    (`spotstack controller once --config`)."""
    group_names: pulumi.Output[dict[str, str]]
    """Role (`main` on AWS and Alibaba, `base`/`spot` on GCP; `fallback`, `gateway`) -> the group's name (an Auto
    Scaling group, a regional managed instance group) or id (an ESS scaling group)."""
    node_identity: pulumi.Output[str]
    """Who the nodes are to the cloud: the role's ARN (AWS), the service account's email (GCP), the RAM role's name
    (Alibaba): grant it what your workload reads."""
    job_queues: pulumi.Output[dict[str, str]] | None
    """Where a fleet with `jobs` takes tasks: `input`, `output`, `dead` -> the SQS queue URL, the Pub/Sub topic or
    the MNS queue name."""
    warnings: pulumi.Output[list[str]]
    """What the cloud cannot honour of the spec as written (also logged by `pulumi up`)."""

    def __init__(self, name: str, args: GpuFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PACKAGE}:index:GpuFleet", name, None, opts)
        raw = args["spec"]
        if isinstance(raw, pulumi.Output) or not isinstance(raw, dict):
            raise pulumi.InputPropertiesError(
                "GpuFleet: spec must be a plain mapping known when the program runs (resources are named from it)",
                [{"property_path": "spec", "reason": "not a plain mapping"}],
            )
        raw = {**raw, "name": raw.get("name", name)}
        try:
            given = args.get("model_bucket") is not None
            (fleet,), problems = validate_fleets([raw], prefix="spec", require_bucket=not given)
        except SpecError as exc:
            found = [(_path(p.path), p.reason) for p in exc.problems]
            raise pulumi.InputPropertiesError(
                "GpuFleet: the spec has problems:\n" + "\n".join(f"  {p}: {r}" for p, r in found),
                [{"property_path": p, "reason": r} for p, r in found],
            ) from None
        warnings = [f"{_path(p.path)}: {p.reason}" for p in problems]
        for w in warnings:
            pulumi.log.warn(w, resource=self)
        declare = program.DECLARE.get(fleet.cloud)
        if declare is None:
            raise pulumi.InputPropertiesError(
                f"GpuFleet: cloud {fleet.cloud!r} has nothing to deploy (`spotstack local up` runs local fleets)",
                [{"property_path": "spec.cloud", "reason": "not a cloud"}],
            )
        outputs = declare(fleet, pulumi.ResourceOptions(parent=self), _wiring(fleet.cloud, args))
        self.endpoint = outputs["endpoint"]
        self.controller_config = outputs["controller_config"]
        self.group_names = pulumi.Output.from_input(outputs["group_names"])
        self.node_identity = outputs["node_identity"]
        queues = outputs["job_queues"]
        self.job_queues = pulumi.Output.from_input(queues) if queues is not None else None
        self.warnings = pulumi.Output.from_input(warnings)
        self.register_outputs({**outputs, "warnings": self.warnings})


def _path(path: str) -> str:
    """`spec[0].zones` -> `spec.zones`: one fleet here, not a list of them."""
    return "spec" + path[len("spec[0]") :] if path.startswith("spec[0]") else path


def _wiring(cloud: str, args: GpuFleetArgs) -> dict[str, Any]:
    """The provider-neutral arguments under each cloud component's own names."""
    out: dict[str, Any] = {}
    network, subnets = args.get("network_id"), args.get("subnet_ids")
    if network is not None or subnets is not None:
        if cloud == "aws":
            out.update(vpc_id=network, subnet_ids=subnets)
        elif cloud == "alicloud":
            out.update(vpc_id=network, vswitch_ids=subnets)
        else:
            out.update(network=network, subnetwork=None if subnets is None else pulumi.Output.from_input(subnets)[0])
    if args.get("certificate") is not None:
        out["certificate"] = args["certificate"]
    if args.get("model_bucket") is not None:
        out["model_bucket"] = args["model_bucket"]
    return out


COMPONENTS: list[type[pulumi.ComponentResource]] = [GpuFleet]


def _provider(version: str) -> Any:
    """Pulumi's component provider for `COMPONENTS`, its inferred schema with `spec` typed from `FleetSpec`
    (`spec_schema.py`; the analyzer sees `dict[str, Any]`). Constructing a component is the analyzer's as is: the
    spec arrives as the object the program wrote."""
    import json

    from pulumi.provider.experimental.component import ComponentProvider

    from spotstack.components.spec_schema import spec_types

    provider = ComponentProvider(COMPONENTS, PACKAGE, version=version)
    assert provider.schema is not None
    doc = json.loads(provider.schema)
    ref, types = spec_types(PACKAGE)
    res = doc["resources"][f"{PACKAGE}:index:GpuFleet"]
    res["inputProperties"]["spec"] = {**ref, "description": res["inputProperties"]["spec"]["description"]}
    doc.setdefault("types", {}).update(types)
    provider.schema = json.dumps(doc)
    return provider


def schema(version: str | None = None) -> dict[str, Any]:
    """The package schema (what `pulumi package add` reads), without the CLI."""
    import json

    doc: dict[str, Any] = json.loads(_provider(version or _version()).schema)
    return doc


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spotstack")
    except PackageNotFoundError:
        return "0.0.0"


def main() -> None:
    """Serve the components to the Pulumi engine (the plugin's entry point)."""
    import sys

    from pulumi.provider import main as serve

    # What `component_provider_host` does, with the typed spec in the schema it serves.
    serve(_provider(_version()), sys.argv[1:])
