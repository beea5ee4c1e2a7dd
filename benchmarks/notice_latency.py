"""Notice-to-out-of-rotation latency of the agent, per cloud, with the default poll interval.

For each notice: a fresh agent watches its cloud's metadata emulator; after a random wait (so
notices fall anywhere in the poll cycle) a notice is posted, and the latency is the time from
posting to the agent having turned readiness off and left the load balancer (a real HAProxy
backend through its runtime API when haproxy is installed). Targets (issue 4): p99 < 1.5 s when
polling (AWS, Alibaba), < 0.2 s with GCP's long-poll.

    .venv/bin/python benchmarks/notice_latency.py [--notices 60]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.drain.haproxy import runtime_command
from spotstack.runtime.emulators.alicloud import AlicloudMetadataEmulator
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.emulators.gcp import GcpMetadataEmulator
from spotstack.runtime.emulators.server import EmulatorServer
from spotstack.runtime.local.haproxy import HAProxy, Server
from spotstack.runtime.net import free_port


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def post(cloud: str, emu: EmulatorServer) -> float:
    if cloud == "gcp":
        assert isinstance(emu, GcpMetadataEmulator)
        emu.preempt()
    else:
        assert isinstance(emu, AwsImdsEmulator | AlicloudMetadataEmulator)
        emu.post_spot_notice()
    return time.time()


async def one(cloud: str, emu: EmulatorServer, lb: dict[str, Any]) -> float:
    emu.reset()
    cfg = AgentConfig.model_validate(
        {
            "cloud": cloud,
            "metadata": {"base_url": emu.url},  # default poll interval
            "readiness": {"host": "127.0.0.1", "port": 0},
            "load_balancer": lb,
        }
    )
    agent = Agent(cfg)
    await agent.start()
    try:
        await asyncio.sleep(random.uniform(0.3, 1.3))  # land anywhere in the poll cycle
        posted = post(cloud, emu)
        await asyncio.wait_for(agent.drained.wait(), 10)
        assert agent.report is not None and agent.report.ok, agent.report
        return agent.report.out_of_rotation_at - posted
    finally:
        await agent.stop()


async def main(notices: int) -> None:
    haproxy: HAProxy | None = None
    lb: dict[str, Any] = {"kind": "none"}
    tmp = Path(tempfile.mkdtemp(prefix="spotstack-bench-"))
    if shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists():
        haproxy = HAProxy(tmp, free_port(), [Server("r0", free_port(), free_port())])
        await haproxy.start()
        lb = {
            "kind": "haproxy",
            "haproxy_socket": str(haproxy.socket),
            "haproxy_backend": "replicas",
            "haproxy_server": "r0",
        }
    print(
        f"{notices} notices per cloud, default poll interval "
        f"{AgentConfig(cloud='aws').metadata.poll_interval_s}s, load balancer: {lb['kind']}"
    )
    try:
        for cloud, emu in (
            ("aws", AwsImdsEmulator()),
            ("gcp", GcpMetadataEmulator()),
            ("alicloud", AlicloudMetadataEmulator()),
        ):
            await emu.start()
            xs = []
            for _ in range(notices):
                xs.append(await one(cloud, emu, lb))
                if haproxy is not None:
                    await runtime_command(str(haproxy.socket), "set server replicas/r0 state ready")
            await emu.stop()
            print(
                f"{cloud:9s} p50 {statistics.median(xs) * 1000:7.1f} ms   p99 {percentile(xs, 99) * 1000:7.1f} ms"
                f"   max {max(xs) * 1000:7.1f} ms"
            )
    finally:
        if haproxy is not None:
            await haproxy.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # one line per drain would bury the figures
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notices", type=int, default=60)
    asyncio.run(main(ap.parse_args().notices))
