"""The shipped dashboard and alert rules refer only to metrics the agent exports, with valid shapes (promtool is
not installable here: the rules are parsed and checked for what promtool checks first)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from spotstack.runtime.agent.metrics import AgentMetrics
from tests.conftest import ROOT

OBS = ROOT / "observability"
FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "by", "and", "or", "le", "on", "without"}


class _Server:
    served_bytes = 0
    refused = {"unauthenticated": 0}


def exported() -> set[str]:
    """Every series name the agent's registry can produce (histograms with their _bucket/_count/_sum)."""
    m = AgentMetrics()
    m.serve_cache(lambda: _Server())
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    names: set[str] = set()
    for family in m.registry.collect():
        names.update(family.name + sfx for sfx in suffixes.get(family.type, [""]))
    return names


def metric_names(expr: str) -> set[str]:
    return {w for w in re.findall(r"\b(spotstack_[a-z_]+)\b", expr)}


def test_alert_rules_are_well_formed_and_use_exported_metrics() -> None:
    doc: dict[str, Any] = yaml.safe_load((OBS / "alerts.yml").read_text())
    names = exported()
    seen: set[str] = set()
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]) and rule["alert"] not in seen
            seen.add(rule["alert"])
            assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["labels"]["severity"] in {"info", "warning"}
            assert rule["annotations"]["summary"]
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]")
            used = metric_names(expr)
            assert used and used <= names, used - names


def test_dashboard_loads_and_every_panel_queries_exported_metrics() -> None:
    dash = json.loads((OBS / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 30 and dash["title"]
    names = exported()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    covered: set[str] = set()
    for p in dash["panels"]:
        assert p["type"] == "timeseries" and set(p["gridPos"]) == {"h", "w", "x", "y"}
        for t in p["targets"]:
            used = metric_names(t["expr"])
            assert used and used <= names, used - names
            assert t["expr"].count("(") == t["expr"].count(")")
            covered |= used
    # The cache's and the drain's headline figures are on it.
    assert {"spotstack_cache_pulled_bytes_total", "spotstack_notice_to_out_of_rotation_seconds_bucket"} <= covered
