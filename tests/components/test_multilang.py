"""The components from any language: the schema Pulumi infers from the provider classes, the committed copy, and the
YAML and TypeScript examples checked against it (and planned, for YAML, through the same component)."""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pytest
import yaml

from spotstack.components import provider
from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.validate import validate_fleets
from tests.conftest import ROOT

TOKEN = "spotstack:index:GpuFleet"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """Generated as CI's users would, by `spotstack schema`, in its own process: Pulumi's provider server bundles
    a copy of google.rpc.Status, which clashes with googleapis' once a test has imported a Google client."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "schema"], capture_output=True, text=True, timeout=120, check=True
    )
    return {**json.loads(out.stdout), "version": "0.0.0"}


def test_schema_lists_every_component_with_typed_inputs_and_outputs(schema: dict[str, Any]) -> None:
    assert sorted(schema["resources"]) == sorted(f"spotstack:index:{c.__name__}" for c in provider.COMPONENTS)
    for token, res in schema["resources"].items():
        assert res["isComponent"] and res["description"], token
        assert res["inputProperties"] and res["properties"], token
        for name, prop in {**res["inputProperties"], **res["properties"]}.items():
            assert prop.get("type") or prop.get("$ref"), (token, name)  # typed, not Any
            assert prop.get("description"), (token, name)
    fleet = schema["resources"][TOKEN]
    assert fleet["requiredInputs"] == ["spec"]
    assert {k: v.get("type") or v["$ref"] for k, v in fleet["inputProperties"].items()} == {
        "spec": "#/types/spotstack:index:FleetSpec",
        "networkId": "string",
        "subnetIds": "array",
        "certificate": "string",
        "modelBucket": "string",
    }
    assert {k: v["type"] for k, v in fleet["properties"].items()} == {
        "endpoint": "string",
        "controllerConfig": "string",
        "groupNames": "object",
        "nodeIdentity": "string",
        "jobQueues": "object",
        "warnings": "array",
    }
    assert set(fleet["required"]) == {"endpoint", "groupNames", "nodeIdentity", "warnings"}


def test_the_spec_is_typed_from_fleet_spec(schema: dict[str, Any]) -> None:
    """Every model of the spec is a schema type with every field, typed and described; a nested model by reference."""
    from pydantic import BaseModel

    from spotstack.components.spec import FleetSpec

    def check(model: type[BaseModel]) -> None:
        t = schema["types"][f"spotstack:index:{model.__name__}"]
        assert set(t["properties"]) == set(model.model_fields), model.__name__
        assert set(t.get("required", [])) == {n for n, f in model.model_fields.items() if f.is_required()}
        for name, prop in t["properties"].items():
            assert prop.get("type") or prop.get("$ref"), (model.__name__, name)
            assert prop.get("description"), (model.__name__, name)  # the field's docstring
            ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
            if ref:
                nested = next(a for a in _models(model.model_fields[name].annotation) if ref.endswith(f":{a.__name__}"))
                check(nested)

    check(FleetSpec)
    cap = schema["types"]["spotstack:index:CapacitySpec"]["properties"]
    assert cap["base_on_demand"]["type"] == "integer"  # the spec's own names, as the provider receives them
    assert "`aws`" in schema["types"]["spotstack:index:FleetSpec"]["properties"]["cloud"]["description"]


def _models(annotation: Any) -> list[Any]:
    from typing import get_args

    from pydantic import BaseModel

    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []
    for a in get_args(annotation):
        found += _models(a)
    return found


def test_committed_schema_is_what_the_classes_give(schema: dict[str, Any]) -> None:
    """plugin/schema.json is regenerated with `spotstack schema -o plugin/schema.json` whenever a component changes."""
    committed = json.loads((ROOT / "plugin" / "schema.json").read_text())
    assert {**committed, "version": "0.0.0"} == schema


def _plan_fleet(properties: dict[str, Any], schema: dict[str, Any]) -> PlanRun:
    """Construct the component with schema-named properties, as the provider host does (camelCase -> snake_case)."""
    names = {
        camel: re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower() for camel in schema["resources"][TOKEN]["inputProperties"]
    }
    args: Any = {names[k]: v for k, v in properties.items()}
    return run_offline(lambda: provider.GpuFleet("llm", args), {}, stack="t")


def test_yaml_example_uses_the_schema_and_plans(schema: dict[str, Any]) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "yaml" / "Pulumi.yaml").read_text())
    fleet = schema["resources"][TOKEN]
    ours = {n: r for n, r in doc["resources"].items() if r["type"] in (TOKEN, "spotstack:GpuFleet")}
    assert ours
    for r in ours.values():
        assert set(r["properties"]) <= set(fleet["inputProperties"])
        assert set(fleet["requiredInputs"]) <= set(r["properties"])
        validate_fleets([r["properties"]["spec"]])
    for value in doc["outputs"].values():
        resource, prop = re.fullmatch(r"\$\{(\w+)\.(\w+)\}", value).groups()  # type: ignore[union-attr]
        assert resource in ours and prop in fleet["properties"]
    run = _plan_fleet(ours["llm"]["properties"], schema)
    assert run.find("spotstack:index:GpuFleet") and run.find("spotstack:index:AwsGpuFleet")
    assert run.find("aws:autoscaling/group:Group")


def test_typescript_example_uses_the_schema(schema: dict[str, Any]) -> None:
    text = (ROOT / "examples" / "typescript" / "index.ts").read_text()
    fleet = schema["resources"][TOKEN]
    call = re.search(r"new spotstack\.GpuFleet\(\"[\w-]+\", \{\n(.*?)\n\}\);", text, re.S)
    assert call is not None
    body = call.group(1)
    keys = set(re.findall(r"^    (\w+):", body, re.M))
    assert keys <= set(fleet["inputProperties"]) and set(fleet["requiredInputs"]) <= keys
    spec = re.search(r"spec: (\{.*?\n    \}),", body, re.S)
    assert spec is not None
    validate_fleets([json.loads(spec.group(1))])  # the spec literal is JSON, so it is checked as written
    for used in re.findall(r"fleet\.(\w+)", text):
        assert used in fleet["properties"]


def test_gpu_fleet_maps_its_wiring_onto_each_cloud() -> None:
    from tests.components.test_gcp_alicloud import as_cloud

    spec = as_cloud("gcp")
    spec["model_cache"] = {k: v for k, v in spec["model_cache"].items() if k != "bucket"}

    def gcp_program() -> None:
        provider.GpuFleet(
            "g",
            {
                "spec": spec,
                "network_id": "projects/p/global/networks/n",
                "subnet_ids": ["projects/p/regions/us-central1/subnetworks/s"],
                "certificate": "projects/p/global/sslCertificates/c",
                "model_bucket": "programs-own-models",  # the spec names none
            },
        )

    run = run_offline(gcp_program, {"gcp:project": "p"}, stack="t")
    tpl = run.find("gcp:compute/instanceTemplate:InstanceTemplate")[0].inputs
    assert tpl["networkInterfaces"][0] == {
        "network": "projects/p/global/networks/n",
        "subnetwork": "projects/p/regions/us-central1/subnetworks/s",
    }
    assert run.find("gcp:compute/targetHttpsProxy:TargetHttpsProxy")[0].inputs["sslCertificates"] == [
        "projects/p/global/sslCertificates/c"
    ]
    (binding,) = [b for b in run.find("gcp:storage/bucketIAMMember:BucketIAMMember") if b.name.endswith("-read-model")]
    assert binding.inputs["bucket"] == "programs-own-models"
    assert "gs://programs-own-models/" in tpl["metadata"]["user-data"]


def test_gpu_fleet_refuses_a_bad_or_unknown_spec() -> None:
    with pytest.raises(pulumi.InputPropertiesError) as caught:
        run_offline(lambda: provider.GpuFleet("x", {"spec": {"cloud": "aws"}}), {})
    paths = {e["property_path"] for e in caught.value.errors or []}
    assert {"spec.region", "spec.zones"} <= paths, paths
    with pytest.raises(pulumi.InputPropertiesError, match="plain mapping"):
        run_offline(lambda: provider.GpuFleet("x", {"spec": pulumi.Output.from_input({"cloud": "aws"})}), {})


def test_the_plugin_serves_the_schema_over_grpc(schema: dict[str, Any]) -> None:
    """What `pulumi package add` runs: plugin/__main__.py starts the provider and prints its port; GetSchema over
    gRPC (loopback) answers the inferred schema. The engine address is not dialled for GetSchema."""
    import select
    import subprocess
    import sys

    import grpc
    from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "plugin" / "__main__.py"), "127.0.0.1:9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a deadline, not a sleep: the port line or EOF
        assert ready, "the plugin printed no port in 120 s"
        port = int(proc.stdout.readline().strip())  # the host writes the port once serving; EOF -> ValueError
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            reply = stub.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=60)
        served = json.loads(reply.schema)
        assert {**served, "version": "0.0.0"} == schema
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
