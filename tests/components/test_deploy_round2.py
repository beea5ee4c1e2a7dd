"""Deployable on every cloud, round 2: what the first audit found would still fail after `pulumi up` (items 1, 2,
4 and 5 of the deployability issue), each checked on the planned resources."""

from __future__ import annotations

import pytest

from spotstack.components.gcp import disks
from spotstack.components.plan.engine import PlanRun
from spotstack.runtime.bootstrap import GPU_SETUP
from tests.components.test_gcp_alicloud import as_cloud, one, plan_of
from tests.components.test_gcp_alicloud_deploy import boot_doc


@pytest.fixture(scope="module")
def gcp() -> PlanRun:
    return plan_of(as_cloud("gcp"))


@pytest.mark.parametrize(
    ("machine", "disk"),
    [
        ("g2-standard-8", "pd-balanced"),  # L4: no Standard PD
        ("n1-standard-8", "pd-balanced"),
        ("a2-highgpu-1g", "pd-balanced"),
        ("a3-highgpu-8g", "pd-balanced"),
        ("a3-ultragpu-8g", "hyperdisk-balanced"),  # Hyperdisk only
        ("a4-highgpu-8g", "hyperdisk-balanced"),
        ("g4-standard-48", "hyperdisk-balanced"),
        ("c4-standard-8", "hyperdisk-balanced"),
    ],
)
def test_boot_disk_type_per_machine_family(machine: str, disk: str) -> None:
    assert disks.boot_disk_type(machine) == disk
    assert disk in disks.supported(machine)
    assert "pd-standard" not in disks.supported("g2-standard-8")


def test_gcp_templates_name_a_disk_type_their_family_takes(gcp: PlanRun) -> None:
    tpl = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")
    (boot,) = [d for d in tpl["disks"] if d.get("boot")]
    assert boot["diskType"] == disks.boot_disk_type(tpl["machineType"])


def test_gcp_nodes_run_the_gpu_setup_step_unless_baked(gcp: PlanRun) -> None:
    """The accelerator image documents the driver only; the workload unit runs `docker run --gpus all`."""
    md = one(gcp, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")["metadata"]
    doc = boot_doc(md["user-data"])
    assert ["sh", "-c", GPU_SETUP] in doc["runcmd"]
    baked = plan_of({**as_cloud("gcp"), "machine_image": "projects/acme/global/images/llm-node-v3"})
    md = one(baked, "gcp:compute/instanceTemplate:InstanceTemplate", "llm-spot-tpl")["metadata"]
    assert ["sh", "-c", GPU_SETUP] not in boot_doc(md["user-data"])["runcmd"]
