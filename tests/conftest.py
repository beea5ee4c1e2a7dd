"""Shared fixtures: a valid AWS fleet to mutate, and a runner for the mock engine."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _plan_committed_stacks_once() -> None:
    """A committed stack's plan is the same in every test that reads it (a pure function of the stack file and the
    code): planned once per test process, not once per module that asks. A test that plans another project (a copy
    it edits) plans it afresh. Tests read a plan; none may change one."""
    import functools

    from spotstack.components import plan
    from spotstack.components.plan import stack

    @functools.cache
    def committed(name: str) -> stack.Plan:
        return stack.plan_stack(ROOT, name)

    def plan_stack(project_dir: Path, name: str) -> stack.Plan:
        return committed(name) if Path(project_dir).resolve() == ROOT else stack.plan_stack(project_dir, name)

    plan.plan_stack = plan_stack  # type: ignore[attr-defined]


_plan_committed_stacks_once()


OFF_LOOPBACK: list[str] = []
"""Names this test process was asked to resolve that are not loopback (see `_loopback_only`)."""


def _loopback_only() -> None:
    """Tests are hermetic: a lookup of any name but loopback fails at once, as on a machine with no network, and is
    recorded so that the test fails (`hermetic`). Without this a test whose SDK client had no loopback endpoint
    reached for the cloud's real one: on this machine a lookup failure and ~16 s of botocore's retries, on a CI
    machine with a network a call to AWS itself. Processes a test starts are not covered: they get loopback URLs."""
    import ipaddress
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name == "" or name == "localhost" or name.endswith(".localhost"):
            return real(host, *args, **kwargs)
        try:
            address = ipaddress.ip_address(name.split("%")[0])
            if address.is_loopback or address.is_unspecified:
                return real(host, *args, **kwargs)
        except ValueError:
            pass
        OFF_LOOPBACK.append(name)
        raise socket.gaierror(socket.EAI_NONAME, f"hermetic test: {name} is not a loopback address")

    socket.getaddrinfo = getaddrinfo


_loopback_only()


@pytest.fixture(autouse=True)
def hermetic() -> Iterator[None]:
    """Fails a test that looked up a name off loopback (in this process; `_loopback_only` refused it)."""
    OFF_LOOPBACK.clear()
    yield
    if OFF_LOOPBACK:
        names = sorted(set(OFF_LOOPBACK))
        OFF_LOOPBACK.clear()
        pytest.fail(f"the test reached for a name off loopback: {names} (give its client a loopback endpoint)")


def base_fleet() -> dict[str, Any]:
    return {
        "name": "llm",
        "cloud": "aws",
        "region": "us-east-1",
        "zones": ["us-east-1a", "us-east-1b"],
        "instances": [
            {"type": "g6.xlarge", "spot": {"bid": 0.4}},
            {"type": "g5.xlarge", "spot": {"bid": 0.5}},
            {"type": "g6e.xlarge", "on_demand": {}},
        ],
        "capacity": {"min": 1, "max": 6, "desired": 3, "base_on_demand": 1, "dynamic_on_demand_fallback": True},
        "service": {"port": 8080, "readiness_path": "/ready", "drain_timeout": 60},
        "scaling": {
            "target_qps_per_replica": 10,
            "schedules": [{"name": "day", "cron": "0 8 * * *", "min": 2, "max": 6}],
        },
        "image": {"repository": "llm-server", "tag": "v1"},
        "notifications": {"emails": ["oncall@example.com"]},
        "model_cache": {"bucket": "acme-models", "prefix": "llama/", "peer_port": 8470},
    }


@pytest.fixture
def fleet() -> dict[str, Any]:
    return copy.deepcopy(base_fleet())


def region_config(raw: dict[str, Any]) -> dict[str, str]:
    """Stack config an Alibaba fleet needs besides `spotstack:fleets`: its provider's region (Alibaba resources
    take no region of their own, and a fleet refuses a provider in another region)."""
    return {"alicloud:region": raw["region"]} if raw.get("cloud") == "alicloud" else {}


# The modules that run the agent, its drain and its queue worker in the test's own event loop: there, any callback
# of the agent's that uses over 100 ms of CPU fails the test (runtime/loopwatch.py; a blocking call on the loop
# stalls every stream, probe and notice the node serves). The test's own body and fixtures are not judged.
LOOP_WATCHED = {
    "test_agent_e2e",
    "test_agent_hardening",
    "test_agent_cache",
    "test_drain",
    "test_drain_always_runs",
    "test_withdrawn_notices",
    "test_jobs_agent",
    "test_proxy",
}
LOOP_WATCH_S = 0.1


@pytest.fixture(autouse=True)
def loop_watch(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.module.__name__.rsplit(".", 1)[-1] not in LOOP_WATCHED:
        yield
        return
    from spotstack.runtime.loopwatch import watch

    slow: list[str] = []
    tests_own = (str(ROOT / "tests"), "pytest_asyncio")  # the test's body and its fixtures

    def report(what: str, cpu: float, wall: float) -> None:
        if not any(t in what for t in tests_own):
            slow.append(f"{what}: {cpu * 1000:.0f} ms of CPU ({wall * 1000:.0f} ms wall)")

    stop = watch(LOOP_WATCH_S, report)
    try:
        yield
    finally:
        stop()
    assert not slow, "callbacks that held the event loop:\n" + "\n".join(slow)


FILE_SECONDS = {
    "tests/runtime/test_local_llm.py": 108,
    "tests/runtime/test_local_jobs.py": 93,
    "tests/boot/test_boot_path.py": 62,
    "tests/runtime/test_local_fleet.py": 62,
    "tests/runtime/test_local_recovery.py": 62,
    "tests/runtime/test_local_regions.py": 61,
    "tests/runtime/test_jobs_worker.py": 43,
    "tests/cli/test_job_cli.py": 38,
    "tests/runtime/test_local_preempt_all.py": 38,
    "tests/boot/test_gateway_boot.py": 28,
    "tests/cli/test_plan_fuzz.py": 25,
    "tests/runtime/test_controller_state.py": 25,
    "tests/runtime/test_jobs_once.py": 20,
    "tests/cli/test_bad_input.py": 19,
    "tests/cli/test_plan_cli.py": 19,
    "tests/runtime/test_agent_e2e.py": 17,
}
"""Seconds a file took in a full run on the 2-core machine (`make test`), for the order below. A
file not listed counts as short; the figures only order the run, so a stale one costs minutes, never a failure."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so no worker is left with a minute-long file while the others idle: the local fleets (slow and
    behind HAProxy), then the other slow tests, then the rest; within each group the longest files first
    (`FILE_SECONDS`), the others in file order. The run waits for its last file: a long one handed out near the end
    (the jobs worker's lease tests, 43 s of waiting) left one core idle for its last half minute."""

    def weight(item: pytest.Item) -> tuple[int, int]:
        slow = item.get_closest_marker("slow") is not None
        group = 0 if slow and item.get_closest_marker("haproxy") is not None else 1 if slow else 2
        return group, -FILE_SECONDS.get(item.nodeid.split("::")[0], 0)

    items.sort(key=weight)
