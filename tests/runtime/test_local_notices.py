"""The local fleet's notices reach a node that is still starting, as a cloud's wait in the metadata service for an
instance that boots late. Before, a notice posted while the node's emulator was not yet listening was dropped: the
node became READY, took tasks, and died with them at the deadline (they came back only when their leases ran out,
and three such ends dead-lettered a task)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.server import iso_utc
from spotstack.runtime.local.fleet import LocalFleet
from spotstack.runtime.local.market import Market
from spotstack.runtime.local.plan import FleetPlan
from spotstack.runtime.local.replica import Node
from spotstack.runtime.local.zygote import NodeProcess
from spotstack.runtime.net import free_port
from tests.waits import wait_for

PLAN = FleetPlan("embed", ("g6.xlarge",), ("g6.xlarge",), 1, 3, 1, 0, 0, True, 5.0, {"g6.xlarge": (1.0, 0.4)})


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    fleet = LocalFleet(PLAN, tmp_path, Market({}, speed=60.0, started=0.0), notice_s=30.0)
    yield fleet
    for proc in STARTED:
        proc.kill()
        proc.wait()
    STARTED.clear()


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def starting_node(fleet: LocalFleet) -> Callable[[str, str], Node]:
    """Add a node whose process runs but whose metadata emulator does not listen yet (stopped with the fleet)."""

    def add(name: str, role: str) -> Node:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        STARTED.append(proc)
        ports = {"emulator": free_port(), "agent": free_port()}
        node = Node(name, role, "g6.xlarge", "s0", ports, NodeProcess(proc.pid), time.time())  # type: ignore[arg-type]
        fleet.nodes[name] = node
        return node

    return add


async def test_a_notice_posted_while_the_node_starts_reaches_it_with_its_deadline(
    fleet: LocalFleet, starting_node: Callable[[str, str], Node]
) -> None:
    node = starting_node("spot-1", "spot")
    await asyncio.to_thread(fleet.preempt, node.name)  # the emulators answer on this loop
    assert node.owed == "notice" and node.kill_at is not None  # nothing listened: owed, not dropped
    await fleet.postbox.deliver_owed(list(fleet.nodes.values()))
    assert node.owed == "notice"  # still starting
    async with AwsImdsEmulator(port=node.ports["emulator"]) as emu:
        assert emu.instance_action is None
        await fleet.postbox.deliver_owed(list(fleet.nodes.values()))
        assert node.owed is None
        # The deadline the node reads is the one the cloud set at the preemption, not one from now.
        assert emu.instance_action == {"action": "terminate", "time": iso_utc(node.kill_at)}
        assert any(f"{node.name} took its notice late" in e for e in fleet.events)
        await fleet.postbox.deliver_owed(list(fleet.nodes.values()))  # said once
        assert sum("took its notice late" in e for e in fleet.events) == 1


async def test_a_scale_in_while_the_node_starts_reaches_it(
    fleet: LocalFleet, starting_node: Callable[[str, str], Node]
) -> None:
    node = starting_node("fall-1", "fallback")
    await asyncio.to_thread(fleet.scale_in, node.name)
    assert node.owed == "terminated"
    async with AwsImdsEmulator(port=node.ports["emulator"]) as emu:
        assert emu.lifecycle_state == "InService"
        await fleet.postbox.deliver_owed(list(fleet.nodes.values()))
        assert node.owed is None and emu.lifecycle_state == "Terminated"


async def test_a_notice_to_a_listening_node_is_not_owed(
    fleet: LocalFleet, starting_node: Callable[[str, str], Node]
) -> None:
    node = starting_node("spot-2", "spot")
    async with AwsImdsEmulator(port=node.ports["emulator"]) as emu:
        await asyncio.to_thread(fleet.preempt, node.name)
        assert node.owed is None and emu.instance_action is not None


async def test_a_notice_is_posted_off_the_event_loop(
    fleet: LocalFleet, starting_node: Callable[[str, str], Node]
) -> None:
    """The seams issue, item 4: the control API's handler and the controller's round post notices with an HTTP call;
    made on the event loop, a node slow to answer stalled the whole supervisor (its health checks, its tick)."""
    import socket

    node = starting_node("spot-3", "spot")
    stalled = socket.socket()  # accepts connections, never answers: a node that hangs
    stalled.bind(("127.0.0.1", node.ports["emulator"]))
    stalled.listen(8)
    try:
        started = time.monotonic()
        fleet.preempt(node.name)  # on the loop, as the control API calls it
        assert time.monotonic() - started < 0.1
        assert node.owed == "notice" and node.posting
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticking())
        started = time.monotonic()
        await wait_for(lambda: ticks > 5, 10, "the loop to tick while the notice is posted")
        t.cancel()
        assert node.posting and time.monotonic() - started < 1.0  # ticked while the post still hung (1 s timeout)
    finally:
        stalled.close()
