"""`spotstack plan` runs a user's own program: the example in examples/aws-own-vpc, copied outside the package."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spotstack.components.plan import Plan, plan_stack
from spotstack.components.plan.engine import _aws_id
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "aws-own-vpc"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("user") / "aws-own-vpc"
    shutil.copytree(EXAMPLE, dest)
    return dest


@pytest.fixture(scope="module")
def plan(project: Path) -> Plan:
    return plan_stack(project, "dev")


def test_the_programs_own_vpc_and_subnets_reach_the_fleet(plan: Plan) -> None:
    run = plan.run
    (vpc,) = run.find("aws:ec2/vpc:Vpc")
    vpc_id = _aws_id(vpc.type, vpc.name)  # what the mock engine answered: EC2 ids carry their kind, as in AWS
    assert vpc_id is not None and vpc_id.startswith("vpc-")
    assert {r.inputs["vpcId"] for r in run.find("aws:ec2/securityGroup:SecurityGroup")} == {vpc_id}
    (lb,) = run.find("aws:lb/loadBalancer:LoadBalancer")
    assert lb.inputs["subnets"] == [_aws_id("aws:ec2/subnet:Subnet", f"llm-us-east-1{z}") for z in "ab"]
    assert not run.find("aws:ec2/getVpc:getVpc")
    (cost,) = plan.costs  # the fleet the program declared, priced as the built-in program's are
    assert cost.fleet == "llm"


def test_the_stacks_default_provider_serves_every_resource(plan: Plan) -> None:
    """aws:defaultTags in the stack config reach a resource through the provider that serves it: no resource may
    be served by a provider other than the stack's default (a provider of the fleet's own read none of it)."""
    declared = [r for r in plan.run.resources if r.custom and r.type.startswith("aws:")]
    assert len(declared) > 30
    assert not [r.name for r in plan.run.resources if r.type.startswith("pulumi:providers:")]
    assert not [(r.type, r.name, r.provider) for r in declared if r.provider]
    config = (EXAMPLE / "Pulumi.dev.yaml").read_text()
    assert "aws:defaultTags" in config


def test_readme_snippet_is_the_example(project: Path) -> None:
    """The docs' "your own program" block is the example's code, so running the example runs the snippet."""
    readme = (ROOT / "docs" / "deploy.md").read_text()
    marker = readme.index("examples/aws-own-vpc/__main__.py")
    block = re.search(r"```python\n(.*?)```", readme[marker:], re.S)
    assert block is not None
    assert block.group(1).strip() in (EXAMPLE / "__main__.py").read_text()
    assert len(block.group(1).splitlines()) > 20


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "spotstack.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)


@pytest.mark.slow
def test_cli_plans_the_project_it_is_given(project: Path) -> None:
    out = _cli("plan", "--project", str(project), "--stack", "dev", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    types = {r["type"] for r in doc["resources"]}
    assert {"aws:ec2/vpc:Vpc", "spotstack:index:AwsGpuFleet"} <= types


def test_a_failing_program_exits_2_with_its_own_traceback(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: broken\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    (tmp_path / "helpers.py").write_text("def region():\n    return undefined_name\n")
    (tmp_path / "__main__.py").write_text("import helpers\n\nhelpers.region()\n")
    out = _cli("plan", "--project", str(tmp_path), "--stack", "dev")
    assert out.returncode == 2
    assert '__main__.py", line 3' in out.stderr and 'helpers.py", line 2' in out.stderr
    assert "NameError: name 'undefined_name' is not defined" in out.stderr
    assert "runpy" not in out.stderr  # the program's frames, not the plan's


@pytest.mark.slow
def test_a_bad_input_names_its_property(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "p")
    main = tmp_path / "p" / "__main__.py"
    main.write_text(main.read_text().replace("subnet_ids=[s.id for s in subnets]", "subnet_ids=[subnets[0].id]"))
    out = _cli("plan", "--project", str(tmp_path / "p"), "--stack", "dev")
    assert out.returncode == 2
    assert "AwsGpuFleet: subnet_ids: give one per zone of spec.zones (2), got 1" in out.stderr


def test_a_yaml_project_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: y\nruntime: yaml\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    out = _cli("plan", "--project", str(tmp_path), "--stack", "dev")
    assert out.returncode == 2 and "runs Python programs" in out.stderr
