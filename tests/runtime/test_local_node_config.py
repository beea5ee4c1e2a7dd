"""A local node runs the configuration a cloud node of the same spec gets (`components.node.agent_config`): the
supervisor changes only its ports, paths and endpoints, its HAProxy slot, the drain's time scale, the peers file and
the local queues (`runtime/local/node_config.LOCAL`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spotstack.components.local import plan_of
from spotstack.components.plan.stackfile import load_stack
from spotstack.components.program import config_value
from spotstack.components.validate import validate_fleets
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.local.node_config import LOCAL, agent_config
from tests.conftest import ROOT


def flat(doc: dict[str, Any], at: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        path = f"{at}{k}"
        out.update(flat(v, path + ".") if isinstance(v, dict) and v else {path: v})
    return out


def local(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in LOCAL)


@pytest.mark.parametrize(("stack", "direct"), [("local", False), ("llm", True), ("jobs", False)])
def test_a_local_node_runs_the_specs_configuration_but_for_what_is_local(
    stack: str, direct: bool, tmp_path: Path
) -> None:
    (fleet,), _ = validate_fleets(config_value(load_stack(ROOT, stack).config))
    plan = plan_of(fleet)
    assert plan.node is not None
    ports = {k: 40000 + i for i, k in enumerate(("emulator", "agent", "proxy", "model", "peer"))}
    jobs = {"enabled": True, "input_url": "http://q/in", "output_url": "http://q/out", "dead_letter_url": "http://q/d"}
    doc = agent_config(
        "spot-1", ports, tmp_path / "n", tmp_path / "disk", tmp_path / "store",
        lb=("/run/haproxy.sock", "s0"), drain_timeout_s=plan.drain_timeout_s, model_url="s3://local/m/",
        workdir=tmp_path, jobs=jobs if plan.jobs else None, direct=direct, template=plan.node,
    )  # fmt: skip
    cfg = AgentConfig.model_validate(doc)  # what the node process reads
    spec, ours = flat({k: v for k, v in plan.node.items() if k != "region"}), flat(doc)
    changed = sorted(p for p in spec if not local(p) and ours.get(p) != spec[p])
    assert not changed, changed  # nothing of the spec's changed but what is local
    assert cfg.drain.timeout_s == fleet.service.drain_timeout and cfg.readiness.path == fleet.service.readiness_path
    assert cfg.cache.memory_limit_bytes == plan.node["cache"]["memory_limit_bytes"]  # the spec's, not a local guess
    assert cfg.cache.discovery == "file" and cfg.load_balancer.kind == "haproxy"
    assert cfg.region is None  # the local fleet plays AWS without a region: its clients go to loopback endpoints
