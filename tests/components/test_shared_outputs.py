"""Every fleet component gives the same five outputs, whatever its cloud (components/component.SHARED_OUTPUTS): what
the built-in program exports as `<fleet>.<name>` and GpuFleet publishes to other languages."""

from __future__ import annotations

from typing import Any

import pytest

from spotstack.components.component import SHARED_OUTPUTS
from spotstack.components.plan.engine import run_offline
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.program import DECLARE, config_value
from spotstack.components.validate import validate_fleets
from tests.components.test_jobs_queues import JOBS
from tests.conftest import ROOT

STACKS = {"dev": "aws", "dev-gcp": "gcp", "dev-alicloud": "alicloud", "dev-llm": "aws", "dev-gcp-llm": "gcp"}


def declared(stack: str) -> list[dict[str, Any]]:
    sf = load_stack(ROOT, stack)
    fleets, _ = validate_fleets(config_value(sf.config))
    out: list[dict[str, Any]] = []
    run_offline(lambda: out.extend(DECLARE[f.cloud](f) for f in fleets), sf.config, sf.project, stack)
    return out


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_cloud_gives_the_same_outputs(stack: str) -> None:
    outputs = declared(stack)
    assert outputs
    for o in outputs:
        assert tuple(o) == SHARED_OUTPUTS
        assert o["endpoint"] is not None and o["node_identity"] is not None
        groups = o["group_names"]
        assert ("main" in groups) != ("spot" in groups or "base" in groups), groups  # AWS/Alibaba main; GCP's MIGs
        assert "fallback" in groups  # every dev stack falls back to on-demand
        assert ("gateway" in groups) == stack.endswith("-llm")
        assert o["job_queues"] is None  # no dev stack has jobs


@pytest.mark.parametrize("stack", ["dev", "dev-gcp", "dev-alicloud"])
def test_a_jobs_fleet_gives_its_queues(stack: str) -> None:
    sf = load_stack(ROOT, stack)
    raw = config_value(sf.config)
    raw[0] = {**raw[0], "jobs": JOBS, "scaling": {}}
    fleets, _ = validate_fleets(raw)
    out: list[dict[str, Any]] = []
    run_offline(lambda: out.append(DECLARE[fleets[0].cloud](fleets[0])), sf.config, sf.project, stack)
    assert sorted(out[0]["job_queues"]) == ["dead", "input", "output"]
