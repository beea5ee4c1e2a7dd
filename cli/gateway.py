"""`spotstack gateway run` (the fleet gateway) and `spotstack llm serve` (the stand-in generative replica)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer

from spotstack.cli.agent import _level, _logging
from spotstack.runtime.files import write_atomic

gateway_app = typer.Typer(
    help="The fleet gateway: OpenAI-compatible routing that continues streams across preemptions.",
    no_args_is_help=True,
)
llm_app = typer.Typer(help="A small OpenAI-compatible generative server (the local fleet's LLM).", no_args_is_help=True)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop (libuv's event loop, as vLLM's server runs): about twice the streamed events per CPU-second of
    asyncio's own loop, where the gateway spends its time. asyncio's loop where uvloop does not build (Windows)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)  # not asyncio.Runner(loop_factory=...): Python 3.10 has none


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@gateway_app.command("run")
def gateway_run(
    replica: list[str] = typer.Option(
        [], "--replica", help="A replica's base URL, optionally `URL ready=PROBE_URL` (repeatable)."
    ),
    replicas_file: Path | None = typer.Option(
        None, "--replicas-file", help="A JSON list of replicas in the same form, re-read as it changes."
    ),
    discover: str | None = typer.Option(
        None, "--discover", help="Find the fleet's nodes with the cloud's API: aws, gcp or alicloud (every 5 s)."
    ),
    fleet: str | None = typer.Option(
        None, "--fleet", help="--discover: the fleet tag's value (AWS, Alibaba) or label's (GCP) on its nodes."
    ),
    region: str | None = typer.Option(None, "--region", help="--discover: the fleet's region (AWS, Alibaba)."),
    replica_port: int = typer.Option(8080, "--replica-port", help="--discover: the model server's port."),
    ready_port: int = typer.Option(8471, "--ready-port", help="--discover: the agent's readiness port."),
    metadata_url: str | None = typer.Option(
        None,
        "--metadata-url",
        envvar="SPOTSTACK_AGENT__METADATA__BASE_URL",
        help="--discover: the instance metadata service (default: the cloud's own; the agent's variable).",
    ),
    discovery_endpoint: str | None = typer.Option(
        None,
        "--discovery-endpoint",
        envvar="SPOTSTACK_AGENT__CACHE__DISCOVERY_ENDPOINT",
        help="--discover: the compute API's URL (default: the cloud's own; the agent's variable).",
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    api_keys_file: Path | None = typer.Option(
        None, "--api-keys-file", help="API keys, one a line; without it the gateway takes every request."
    ),
    rate_limit: float | None = typer.Option(None, "--rate-limit", help="Requests per second per API key."),
    form: str = typer.Option(
        "token_ids", "--continue-as", help="token_ids (vLLM's return_token_ids) or text (SGLang, TGI)."
    ),
    wait_s: float = typer.Option(30.0, "--wait", help="Seconds a request waits for a READY replica before 503."),
    max_request_s: float = typer.Option(600.0, "--max-request", help="The longest request; also the drain's bound."),
    port_file: Path | None = typer.Option(None, "--port-file", help="Write the bound port here (with --port 0)."),
    log_level: str = typer.Option("info", "--log-level", callback=_level),
) -> None:
    """Route OpenAI-compatible requests to the READY replica with the least generation left, and carry each stream
    through its replica's preemption: on SIGTERM it stops taking requests and finishes those in flight."""
    from spotstack.runtime.gateway.keys import KeyFile
    from spotstack.runtime.gateway.replicas import Pool, cloud_finder
    from spotstack.runtime.gateway.server import Gateway, GatewayConfig

    _logging(log_level)
    if form not in ("token_ids", "text"):
        raise typer.BadParameter("--continue-as: token_ids or text")
    if not replica and replicas_file is None and discover is None:
        raise typer.BadParameter("name the replicas: --replica URL (repeatable), --replicas-file F or --discover")
    if discover is not None and (discover not in ("aws", "gcp", "alicloud") or not fleet):
        raise typer.BadParameter("--discover aws|gcp|alicloud needs --fleet (the nodes' fleet tag or label)")
    try:
        # Re-read as it changes; until it exists (the boot fetches it) every request gets 503, none gets through.
        keys = KeyFile(api_keys_file, rate_limit) if api_keys_file else None
        finder = (
            cloud_finder(discover, fleet, replica_port, ready_port, region, discovery_endpoint, metadata_url)
            if discover and fleet
            else None
        )
        pool = Pool(replica, replicas_file, finder=finder)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(2) from exc
    cfg = GatewayConfig(host=host, port=port, form=form, wait_s=wait_s, drain_s=max_request_s)  # type: ignore[arg-type]

    async def main() -> None:
        gw = Gateway(cfg, pool, keys)
        await gw.start()
        if port_file is not None:
            write_atomic(port_file, f"{gw.port}\n")
        await _until_signal()
        finished = await gw.drain()
        if not finished:
            sys.stderr.write(f"drain: {gw.inflight} request(s) still in flight after {cfg.drain_s:.0f}s\n")
        await gw.stop()

    _run(main())


@llm_app.command("serve")
def llm_serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    tokens_per_s: float = typer.Option(30.0, "--tokens-per-s", help="Decoding rate (30: a 7-8B model on an L4)."),
    ttft: float = typer.Option(0.1, "--ttft", help="Seconds to the first token, before the prompt's prefill."),
    port_file: Path | None = typer.Option(None, "--port-file", help="Write the bound port here (with --port 0)."),
    log_level: str = typer.Option("info", "--log-level", callback=_level),
) -> None:
    """Serve /v1/completions and /v1/chat/completions from a small numpy transformer (random fixed-seed weights,
    deterministic greedy decoding), streamed at an engine's pace."""
    from spotstack.runtime.llm.server import EngineTiming, LlmServer

    _logging(log_level)

    async def main() -> None:
        server = LlmServer(host, port, EngineTiming(tokens_per_s=tokens_per_s, ttft_s=ttft))
        await server.start()
        if port_file is not None:
            write_atomic(port_file, f"{server.port}\n")
        await _until_signal()
        await server.stop()

    _run(main())
