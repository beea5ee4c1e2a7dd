"""One simulated machine of a local fleet: its metadata emulator, the agent, and the model server (MiniLM
embeddings, or the generative server when the fleet serves an LLM).

They share a process because they share a machine's fate: the market simulator ends a preempted
node with SIGKILL, as a cloud would. The workload's stop signal (SIGUSR1 here) only marks it stopping;
requests in flight still finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from spotstack.runtime.agent.agent import Agent
from spotstack.runtime.agent.wiring import Injected
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.emulators.aws import AwsImdsEmulator
from spotstack.runtime.llm.server import EngineTiming, LlmServer
from spotstack.runtime.local.model_server import ModelServer
from spotstack.runtime.local.priority import serving_priority
from spotstack.runtime.loopwatch import from_env

log = logging.getLogger("spotstack.node")


async def run_node(spec: dict[str, Any]) -> None:
    emu = AwsImdsEmulator(port=int(spec["emulator_port"]), instance_id=str(spec["name"]), tokens_required=True)
    await emu.start()
    cfg = AgentConfig.model_validate(spec["agent"])
    model: ModelServer | LlmServer
    if spec.get("workload") == "llm":
        timing = EngineTiming(tokens_per_s=float(spec.get("tokens_per_s", 30.0)))
        model = LlmServer("127.0.0.1", cfg.workload.port, timing, model_dir=Path(cfg.cache.dest))
    else:
        model = ModelServer(cfg.cache.dest, "127.0.0.1", cfg.workload.port)
    await model.start()
    agent = Agent(cfg, injected=Injected(no_lifecycle=True))  # no Auto Scaling group to tell: the supervisor ends it
    await agent.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("workload told to stop; finishing requests"))

    async def load_when_pulled() -> None:
        await agent.model_ready.wait()
        await model.load()
        serving_priority()

    loader = asyncio.create_task(load_when_pulled())
    await stop.wait()
    loader.cancel()
    await agent.stop()
    await model.stop()
    await emu.stop()


def main(config_path: str) -> None:
    spec = json.loads(Path(config_path).read_text())
    Path(spec["agent"]["workload"]["pid_file"]).write_text(str(os.getpid()))
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {spec['name']} %(name)s %(message)s",
        filename=str(Path(config_path).with_suffix(".log")),
    )
    from_env()  # SPOTSTACK_LOOP_WATCH: the local fleet's tests watch their nodes' loops
    asyncio.run(run_node(spec))
