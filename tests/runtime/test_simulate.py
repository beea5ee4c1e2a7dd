"""`spotstack simulate`: the trace replay that measures a policy (and SkyServe's) before money is spent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spotstack.runtime.controller.sim_policies import Ours, SkyServe
from spotstack.runtime.controller.simulate import Timings, simulate
from spotstack.runtime.controller.traces import Trace, load_traces

HOUR = 60  # ticks of 60 s


def pool(name: str, data: list[int]) -> Trace:
    return Trace(name, 60.0, tuple(data))


def test_markets_that_never_preempt_serve_all_the_time_at_about_the_spot_price() -> None:
    traces = [pool("a", [1] * 3 * HOUR), pool("b", [1] * 3 * HOUR)]
    for c in (Ours(), SkyServe()):
        r = simulate(traces, 2, c)
        assert r.availability == 1.0 and r.preemptions == 0 and r.launch_failures == 0, c.name
        # Spot at 0.3, plus the on-demand fallback both run while the first spot replicas load.
        assert 0.3 < r.cost_vs_on_demand < 0.36, (c.name, r.cost_vs_on_demand)


def test_a_pool_outage_costs_a_replacement_gap_and_each_policy_reacts_its_own_way() -> None:
    a = [1] * HOUR + [0] * 30 + [1] * (2 * HOUR - 30)  # pool a is out for 30 minutes after an hour
    traces = [pool("a", a), pool("b", [1] * 3 * HOUR)]
    ours, sky = simulate(traces, 1, Ours()), simulate(traces, 1, SkyServe())
    for r in (ours, sky):
        assert r.preemptions == 1
        assert 0.9 < r.availability < 1.0, r  # a gap: the replacement needs provisioning and a cold load
    # Ours learns of the outage from the notice and places the replacement in b: nothing refused.
    assert ours.launch_failures == 0
    # SkyServe's placer resets when fewer than two zones are active and tries the first zone again.
    assert sky.launch_failures > 0
    # Ours replaces at the notice, SkyServe at the death (it serves through the notice instead): with a
    # 120 s notice and 180 s provisioning the gaps come out about even. SkyServe pays on-demand through the
    # outage while it retries a; ours is back on spot (in b) at once.
    assert ours.availability >= sky.availability
    assert ours.cost_vs_on_demand < sky.cost_vs_on_demand


def test_a_notice_that_outlives_provisioning_lets_the_replacement_load_from_the_dying_node() -> None:
    a = [1] * HOUR + [0] * 30 + [1] * (2 * HOUR - 30)
    traces = [pool("a", a), pool("b", [1] * 3 * HOUR)]
    short = simulate(traces, 1, Ours(), Timings(notice_s=30))  # GCP: gone before the replacement boots
    long = simulate(traces, 1, Ours(), Timings(notice_s=300))  # Alibaba: still there to copy from
    assert long.availability > short.availability
    # SkyServe replaces only after the death: the notice's length changes nothing for it.
    sky = [simulate(traces, 1, SkyServe(), Timings(notice_s=s)).availability for s in (30, 300)]
    assert sky[0] == sky[1]


def test_serving_through_the_notice_shortens_the_gap() -> None:
    """The agent's notice window: the node serves until its death less the drain while the replacement starts."""
    a = [1] * HOUR + [0] * 30 + [1] * (2 * HOUR - 30)
    traces = [pool("a", a), pool("b", [1] * 3 * HOUR)]
    window = simulate(traces, 1, Ours())
    at_notice = simulate(traces, 1, Ours(serve_through_notice=False))
    assert window.availability > at_notice.availability
    # GCP's 30 s notice is shorter than the drain: no window, the same as leaving at the notice.
    gcp = Timings(notice_s=30)
    assert simulate(traces, 1, Ours(), gcp) == simulate(traces, 1, Ours(serve_through_notice=False), gcp)


def test_a_warm_pool_starts_fallback_replicas_in_seconds_for_the_price_of_disks() -> None:
    a = [1] * HOUR + [0] * 30 + [1] * (2 * HOUR - 30)
    traces = [pool("a", a), pool("b", [0] * 3 * HOUR)]  # nothing to move to: the fallback must cover
    cold, warm = simulate(traces, 1, Ours()), simulate(traces, 1, Ours(), Timings(warm_start_s=45))
    assert warm.availability > cold.availability
    assert warm.cost_vs_on_demand > cold.cost_vs_on_demand - 0.05  # disks paid all the time
    # SkyServe has no warm pool: the same timings change nothing for it.
    assert simulate(traces, 1, SkyServe(), Timings(warm_start_s=45)) == simulate(traces, 1, SkyServe())


def test_a_warm_pool_smaller_than_the_outage_starts_the_rest_cold() -> None:
    """One prepared instance: the first fallback starts warm, the second cold; the one that makes way for spot
    goes back to the pool stopped (nothing boots to refill it)."""
    out = [1] * HOUR + [0] * 30 + [1] * (2 * HOUR - 30)
    traces = [pool("a", out), pool("b", [0] * 3 * HOUR)]  # both of N = 2 in a: both need the fallback at once
    one = simulate(traces, 2, Ours(), Timings(warm_start_s=45, warm_pool_size=1))
    two = simulate(traces, 2, Ours(), Timings(warm_start_s=45, warm_pool_size=2))
    assert one.warm_starts >= 1 and two.warm_starts >= 2
    assert two.availability > one.availability
    assert two.cost_vs_on_demand > one.cost_vs_on_demand  # one more disk


class Restless(Ours):
    """Ours, never skipping a tick: what the quiet-tick shortcut must not change."""

    @property
    def quiet_after_s(self) -> float:
        return float("inf")


@pytest.mark.parametrize("timings", [Timings(), Timings(warm_start_s=45, warm_pool_size=1), Timings(notice_s=30)])
def test_skipping_quiet_ticks_changes_no_result(timings: Timings) -> None:
    a = ([1] * 50 + [0] * 7 + [1] * 13 + [0] * 2) * 8
    traces = [pool("a", a), pool("b", a[17:] + a[:17]), pool("c", [1] * 200 + [0] * 50 + [1] * 326)]
    for n in (1, 3):
        fast, slow = simulate(traces, n, Ours(), timings), simulate(traces, n, Restless(), timings)
        assert fast == slow, (fast, slow)
    # A hold that shrinks as preemptions age out of the history: time alone may end a fallback.
    held = {"hold_per_preemption_s": 120.0, "history_s": 3600.0}
    fast, slow = simulate(traces, 2, Ours(**held), timings), simulate(traces, 2, Restless(**held), timings)
    assert fast == slow, (fast, slow)


def test_an_n_node_pool_preempts_what_it_can_no_longer_hold_newest_first() -> None:
    """An N-node trace holds how many replicas the pool can give: a drop from 4 to 1 preempts the two newest of
    three; launches beyond what it holds are refused."""
    big = Trace("z_a100_4", 60.0, tuple([4] * HOUR + [1] * 30 + [4] * (2 * HOUR - 30)), nodes=4)
    traces = [big, pool("b", [0] * 3 * HOUR)]
    r = simulate(traces, 3, Ours(pool_share=1.0))
    assert r.preemptions == 2, r
    assert r.launch_failures >= 1  # the replacements find the pool full until it recovers
    assert r.availability > 0.9
    # The same capacity as a 1-node trace would be all-or-nothing: nothing is preempted while it is up.
    one = Trace("z_a100_1", 60.0, tuple(min(v, 1) for v in big.data))
    assert simulate([one, traces[1]], 3, Ours(pool_share=1.0)).preemptions == 0


def test_a_spare_spot_replica_covers_a_preemption_without_fallback() -> None:
    a = [1] * HOUR + [0] * 30 + [1] * (2 * HOUR - 30)
    traces = [pool("a", a), pool("b", [1] * 3 * HOUR)]
    spare = simulate(traces, 2, Ours(spare_spot=1, pool_share=1.0))
    plain = simulate(traces, 2, Ours(pool_share=1.0))
    assert spare.mean_ready > plain.mean_ready and spare.availability >= plain.availability
    assert spare.cost_vs_on_demand > plain.cost_vs_on_demand  # a third spot replica all the time


def test_same_input_same_result() -> None:
    a = [1, 1, 0, 1] * 60
    traces = [pool("a", a), pool("b", list(reversed(a)))]
    assert simulate(traces, 3, Ours()) == simulate(traces, 3, Ours())


def write(folder: Path, name: str, data: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_traces_load_recursively_and_bad_files_name_themselves(tmp_path: Path) -> None:
    write(tmp_path / "x", "us-east-1a_v100_1", {"metadata": {"gap_seconds": 60}, "data": [1, 0, 1]})
    write(tmp_path / "y" / "z", "us-west-2b_v100_1", {"metadata": {"gap_seconds": 30}, "data": [1]})
    assert [t.name for t in load_traces(tmp_path)] == ["x/us-east-1a_v100_1", "y/z/us-west-2b_v100_1"]
    write(tmp_path / "y", "broken", {"data": [1]})
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_traces(tmp_path)
    write(tmp_path / "y", "broken", {"metadata": {"gap_seconds": 60}, "data": [2]})
    with pytest.raises(ValueError, match=r"1-node trace holds 0 or 1"):
        load_traces(tmp_path)
    (tmp_path / "y" / "broken.json").unlink()
    write(tmp_path / "n", "us-east-1a_a100_8", {"metadata": {"gap_seconds": 60}, "data": [8, 3, 0]})
    assert {t.name: t.nodes for t in load_traces(tmp_path)}["n/us-east-1a_a100_8"] == 8
    (tmp_path / "n" / "us-east-1a_a100_8.json").unlink()
    with pytest.raises(ValueError, match=r"no \*\.json traces"):
        load_traces(tmp_path / "x" / "none")


ROOT = Path(__file__).resolve().parents[2]


def cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`spotstack simulate` as a user runs it: its own process, from the project folder."""
    cmd = [sys.executable, "-m", "spotstack.cli.main", "simulate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (Typer's runner: ~0.05 s, not a new interpreter's ~0.4 s); an exception it
    did not handle is in stderr as its traceback, as a process would print it."""
    import os
    import traceback

    from typer.testing import CliRunner

    from spotstack.cli.main import app

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        r = CliRunner().invoke(app, ["simulate", *args], env={"COLUMNS": "200"})
    finally:
        os.chdir(here)
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(r.exception))
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, err)


def test_cli_prints_one_json_document_with_every_policy(tmp_path: Path) -> None:
    write(tmp_path, "a", {"metadata": {"gap_seconds": 60}, "data": [1] * 120})
    write(tmp_path, "b", {"metadata": {"gap_seconds": 60}, "data": [1] * 60 + [0] * 60})
    r = cli_process("--traces", str(tmp_path), "-n", "1", "-n", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pools"] == ["a", "b"] and doc["timings"]["notice_s"] == 120.0
    got = [(x["replicas"], x["policy"]) for x in doc["results"]]
    assert got == [(n, p) for n in (1, 2) for p in ("spotstack", "spotstack-v1", "skyserve", "skyserve+1")]
    table = cli("--traces", str(tmp_path), "--baseline", "none")
    assert table.returncode == 0 and "spotstack" in table.stdout and "skyserve" not in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "k8s"], "--baseline must be skyserve or none"),
        (["-n", "0"], "'--replicas' / '-n': 0 is not a finite number at least 1"),
        (["-n", "1000000000"], "1000000000 is not a finite number at least 1 and at most 1000"),
        (["--tick-s", "20"], "no *.json traces"),
        (["--tick-s", "0"], "'--tick-s': 0.0 is not a finite number at least 1"),
        (["--tick-s", "nan"], "'--tick-s': nan is not a finite number"),
        (["--tick-s", "-5"], "'--tick-s': -5.0 is not"),
        (["--spot-price-ratio", "-1"], "'--spot-price-ratio': -1.0 is not"),
        (["--notice-s", "inf"], "'--notice-s': inf is not"),
        (["--pool-share", "0"], "'--pool-share': 0.0 is not a finite number above 0"),
        (["--stack", "nope"], "no stack file"),
        (["--stack", "dev", "--fleet", "nope"], "has no fleet 'nope'"),
        (["--plot", "/no/such/folder/x.png"], "--plot: no folder"),
    ],
)
def test_cli_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    r = cli("--traces", str(tmp_path), *args)
    assert r.returncode == 2 and message in flat(r.stderr) and "Traceback" not in r.stderr


def flat(text: str) -> str:
    """Click's usage errors as one line (rich draws them in a box, wrapped at the terminal's width)."""
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"metadata": {"gap_seconds": 1e15}, "data": [1, 0]}, "gap_seconds must be a number from 1 to 86400"),
        ({"metadata": {"gap_seconds": 0.001}, "data": [1, 0]}, "gap_seconds must be a number from 1 to 86400"),
        ({"metadata": {"gap_seconds": "60"}, "data": [1, 0]}, "gap_seconds must be a number"),
        ({"metadata": {"gap_seconds": 60}, "data": [1, 0.5]}, "data must be whole numbers ≥ 0 (found 0.5)"),
        ({"metadata": {"gap_seconds": 60}, "data": [1, "1"]}, "data must be whole numbers ≥ 0 (found '1')"),
        ({"metadata": {"gap_seconds": 60}, "data": [1, -1]}, "data must be whole numbers ≥ 0 (found -1)"),
        ({"metadata": {"gap_seconds": 60}, "data": [True]}, "data must be whole numbers ≥ 0 (found True)"),
        ({"metadata": {"gap_seconds": 60}, "data": []}, "no data"),
    ],
)
def test_bad_trace_values_are_refused_naming_the_file(tmp_path: Path, doc: dict[str, Any], message: str) -> None:
    write(tmp_path, "bad", doc)
    r = cli("--traces", str(tmp_path))
    assert r.returncode == 2 and message in flat(r.stderr) and "bad.json" in r.stderr, r.stderr


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinite_gaps_are_refused(tmp_path: Path, constant: str) -> None:
    (tmp_path / "bad.json").write_text(f'{{"metadata": {{"gap_seconds": {constant}}}, "data": [1]}}')
    r = cli("--traces", str(tmp_path))
    assert r.returncode == 2 and "not a number a trace may hold" in flat(r.stderr) and "Traceback" not in r.stderr


def test_a_run_too_long_to_finish_is_refused_before_it_starts(tmp_path: Path) -> None:
    write(tmp_path, "a", {"metadata": {"gap_seconds": 86400}, "data": [1] * 3000})  # 8 years
    r = cli("--traces", str(tmp_path), "--tick-s", "1", "-n", "1", "-n", "2")
    assert r.returncode == 2 and "controller ticks (at most 20,000,000)" in flat(r.stderr)


@pytest.mark.slow
def test_cli_takes_the_policy_from_a_stack_and_flags_win(tmp_path: Path) -> None:
    write(tmp_path, "a", {"metadata": {"gap_seconds": 60}, "data": [1] * 120})
    dev = json.loads(cli("--traces", str(tmp_path), "--stack", "dev", "--baseline", "none", "--json").stdout)
    # stacks/Pulumi.dev.yaml: AWS (120 s notice), drain_timeout 90, base 1, warm pool of 1, desired 3.
    assert dev["stack"] == "dev" and dev["policy"]["base_on_demand"] == 1
    assert dev["timings"]["notice_s"] == 120.0 and dev["timings"]["drain_s"] == 90.0
    assert dev["timings"]["warm_pool_size"] == 1 and dev["timings"]["warm_start_s"] == 45.0
    assert {r["replicas"] for r in dev["results"]} == {3}
    gcp = json.loads(cli("--traces", str(tmp_path), "-s", "dev-gcp", "-n", "2", "--notice-s", "25", "--json").stdout)
    assert gcp["timings"]["notice_s"] == 25.0 and {r["replicas"] for r in gcp["results"]} == {2}


@pytest.mark.slow
def test_cli_plots_the_replay_to_a_png(tmp_path: Path) -> None:
    write(tmp_path / "t", "a", {"metadata": {"gap_seconds": 60}, "data": [1] * 60 + [0] * 30 + [1] * 60})
    write(tmp_path / "t", "b", {"metadata": {"gap_seconds": 60}, "data": [0] * 150})
    out = tmp_path / "replay.png"
    r = cli("--traces", str(tmp_path / "t"), "-n", "2", "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay.png", "t"]  # no temporary file left
