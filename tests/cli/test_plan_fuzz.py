"""Random mutations of the dev stack through `spotstack plan --json` (hardening issue, item 12).

Whatever a user (or an attacker) puts in a stack file, the plan ends in one of two ways: exit 0 with a valid
JSON document, or exit 2 naming the config path of every problem. Never a traceback, never a hang, never
`Infinity` in the JSON. The seed is fixed (derandomize), so a failure reproduces.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.testing
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from spotstack.cli.main import app
from tests.conftest import ROOT

DEV = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
FLEETS_KEY = "spotstack:fleets"

NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 3, 10**30, -(10**30), 0.5, 1e308, float("inf"), float("-inf"), float("nan"),
    "", " ", "x" * 300, "../../etc/passwd", "*", "0.0.0.0/0", "not-a-cidr", "61 25 32 13 8", "Mars/Olympus",
    "us-east-10a", "a\x00b", "日本", [], [None], {}, {"unknown": 1}, [[[]]], "aws", "gcp", "local", "/healthz",
    8471, 65536, "g6.xlarge", {"bid": 0.4}, ["us-east-1a"],
]  # fmt: skip


def paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*at, i))
    return out


FLEET_PATHS = paths(DEV["config"][FLEETS_KEY])


def mutate(doc: dict[str, Any], op: str, path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    fleets = doc["config"][FLEETS_KEY]
    if not path:
        doc["config"][FLEETS_KEY] = value
        return doc
    parent: Any = fleets
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "add_key" and isinstance(parent[last], dict):
        parent[last]["surprise_key"] = value
    else:
        parent[last] = value
    return doc


def text_attack(text: str, kind: str) -> str:
    if kind == "duplicate_key":
        return text.replace("        min: 2\n", "        min: 2\n        min: 5\n", 1)
    if kind == "deep":
        return text.replace("team: ml-platform", "team: " + "[" * 5000 + "]" * 5000, 1)
    if kind == "bad_yaml":
        return text.replace("capacity:", "capacity: [", 1)
    if kind == "alias_bomb":  # ~600 bytes that expand to 10^9 values ("billion laughs")
        bomb = "\n".join(
            f"  bomb{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]" if i else "  bomb0: &b0 [lol]"
            for i in range(10)
        )
        return text.replace("config:\n", "config:\n" + bomb + "\n", 1)
    if kind == "alias_loop":
        return text.replace("config:\n", "config:\n  loop: &l [*l]\n", 1)
    return text


runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _command_built_once() -> Iterator[None]:
    """Typer's test runner builds the click command from the app at every call (~0.1 CPU-s: it inspects every
    command's signature), a sixth of this file's time; here, once."""
    command = typer.testing._get_command(app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", lambda _app: command)
        yield


def plan(tmp: Path, text: str) -> tuple[int, str, str, BaseException | None]:
    (tmp / "Pulumi.yaml").write_text("name: spotstack\nruntime: python\nstackConfigDir: stacks\n")
    (tmp / "__main__.py").write_text((ROOT / "__main__.py").read_text())  # the built-in program
    (tmp / "stacks").mkdir(exist_ok=True)
    (tmp / "stacks" / "Pulumi.fuzz.yaml").write_text(text)
    r = runner.invoke(app, ["plan", "--stack", "fuzz", "--json", "--project", str(tmp)])
    exc = None if r.exception is None or isinstance(r.exception, SystemExit) else r.exception
    return r.exit_code, r.stdout, r.stderr, exc


def check(code: int, out: str, err: str, exc: BaseException | None) -> None:
    assert exc is None, f"traceback: {exc!r}"
    assert "Traceback" not in out + err
    assert code in (0, 2), (code, err[-500:])
    if code == 0:

        def no_constants(name: str) -> None:
            raise AssertionError(f"{name} in the plan's JSON")

        json.loads(out, parse_constant=no_constants)
    else:
        # Every problem names where it is: a config path (fleets[0].capacity.max) or the stack file.
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        assert lines and re.search(r"fleets(\[\d+\])?|Pulumi\.fuzz\.yaml", err), err


@settings(
    max_examples=320,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    op=st.sampled_from(["replace", "replace", "replace", "delete", "add_key"]),
    path=st.sampled_from(FLEET_PATHS),
    value=st.sampled_from(NASTY),
)
@pytest.mark.slow
def test_random_mutations_plan_or_exit_2_with_paths(tmp_path: Path, op: str, path: tuple[Any, ...], value: Any) -> None:
    doc = mutate(DEV, op, path, value)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    check(*plan(tmp_path, text))


@pytest.mark.parametrize("kind", ["duplicate_key", "deep", "bad_yaml", "alias_bomb", "alias_loop"])
def test_text_level_attacks_exit_2(tmp_path: Path, kind: str) -> None:
    text = text_attack((ROOT / "stacks" / "Pulumi.dev.yaml").read_text(), kind)
    assert text != (ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
    started = time.monotonic()
    code, out, err, exc = plan(tmp_path, text)
    check(code, out, err, exc)
    assert code == 2
    assert time.monotonic() - started < 60, "the plan must refuse it, not expand it"


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("capacity", "max"), True, "capacity.max"),
        (("capacity", "max"), 10**30, "capacity.max"),
        (("model_cache", "memory_cache_gib"), float("inf"), "memory_cache_gib"),
        (("instances", 0, "spot"), {"max_price": float("inf")}, "max_price"),
        (("instances", 0), {"type": "g6.xlarge", "spot": {}, "on_demand_price": float("inf")}, "on_demand_price"),
        (("scaling", "target_qps_per_replica"), float("inf"), "target_qps_per_replica"),
        (("service", "allowed_cidrs"), ["not-a-cidr"], "allowed_cidrs"),
        (("scaling", "schedules", 0, "cron"), "61 25 32 13 8", "cron"),
        (("scaling", "schedules", 0, "timezone"), "Mars/Olympus", "timezone"),
        (("zones", 0), "us-east-10a", "zones[0]"),
        (("model_cache", "prefix"), "*", "prefix"),
        (("model_cache", "memory_cache_gib"), 16, "memory_cache_gib"),
        (("service", "readiness_path"), "/healthz", "readiness_path"),
        (("service", "readiness_path"), "/metrics", "readiness_path"),
        (("model_cache", "peer_port"), 8471, "peer_port"),
        (("cloud",), ["aws"], "cloud"),
    ],
)
def test_each_reported_input_exits_2_with_its_path(
    tmp_path: Path, path: tuple[Any, ...], value: Any, where: str
) -> None:
    doc = mutate(DEV, "replace", (0, *path), value)
    code, out, err, exc = plan(tmp_path, yaml.safe_dump(doc))
    check(code, out, err, exc)
    assert code == 2 and where in err, err


def test_a_misspelled_key_hides_no_other_problem(tmp_path: Path) -> None:
    doc = copy.deepcopy(DEV)
    cap = doc["config"][FLEETS_KEY][0]["capacity"]
    cap["mxa"] = 3
    cap["min"] = 9  # above max: reported beside the unknown key
    code, _, err, _ = plan(tmp_path, yaml.safe_dump(doc))
    assert code == 2
    assert "capacity.mxa: unknown key" in err and "capacity.min: must be <= max" in err
