"""`spotstack local ...`: the whole system on this machine, before a cent is spent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from spotstack.cli.local_control import LOCK_FD_ENV, alive, call, control, fail, prerequisites, take_workdir
from spotstack.cli.local_plan import check_trace
from spotstack.cli.local_plan import fleet_plan as _plan
from spotstack.cli.local_plan import market as _market
from spotstack.cli.local_report import http_scenario, print_report, report, status_table, window
from spotstack.cli.params import existing_file, number
from spotstack.runtime.files import write_atomic

local_app = typer.Typer(
    help="A local fleet: HAProxy, nodes with agents, a spot market replayed from a trace.", no_args_is_help=True
)
con, err = Console(), Console(stderr=True, soft_wrap=True)

STACK = typer.Option("local", "--stack", "-s", help="Stack file: stacks/Pulumi.<stack>.yaml (a cloud: local fleet).")
SPEED = typer.Option(
    60.0, "--speed", help="Trace seconds per wall second (0.0001 to 10000).", callback=number(0.0001, 10000)
)
TRACE = typer.Option(
    None,
    "--trace",
    help="A spot availability trace (../shared/traces format).",
    callback=lambda v: check_trace(existing_file(v)),
)


@local_app.command("demo")
def demo(
    stack: str = STACK,
    rps: float = typer.Option(
        5.0, "--rps", help="Steady request rate during the scenario (0.1 to 200).", callback=number(0.1, 200)
    ),
    speed: float = SPEED,
    trace: Path = TRACE,
    kill_without_notice: bool = typer.Option(
        True,
        "--kill-without-notice/--no-kill-without-notice",
        help="End the scenario by killing one node with no notice.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
    jobs: bool = typer.Option(
        False,
        "--jobs",
        help="The queue scenario instead of HTTP load: 200 embedding tasks, poison tasks and a training job "
        "through preemptions (needs a stack whose fleet has `jobs`, e.g. --stack jobs).",
    ),
    llm: bool = typer.Option(
        False,
        "--llm",
        help="The LLM scenario instead: streaming clients through the gateways while spot nodes are preempted with "
        "notice, with a 30 s notice and without notice; every stream checked against its reference "
        "(needs a stack whose fleet runs llm-server with service.gateway, e.g. --stack llm).",
    ),
    concurrency: int = typer.Option(
        24, "--concurrency", help="--llm: streaming clients at once.", callback=number(1, 512)
    ),
    duration: float | None = typer.Option(
        None,
        "--duration",
        help="--llm: seconds of load, the preemptions spread over them. By default each preemption comes as soon "
        "as the fleet has healed from the last, and the load ends with the last one (streams that started finish).",
        callback=number(10, 7200),
    ),
    regions: int = typer.Option(
        1,
        "--regions",
        help="2: the fleet across two regions, each behind its own HAProxy under a front one; the first loses every "
        "pool, spot and on-demand, for a while (a regional outage) while requests go on.",
        callback=number(1, 2),
    ),
) -> None:
    """Run the scripted scenario end to end: preemptions from the trace, an outage with on-demand
    fallback and return to spot, a kill without notice; then print the report and stop everything."""
    from spotstack.runtime.local.fleet import LocalFleet

    if jobs and stack == "local":
        stack = "jobs"
    if llm and stack == "local":
        stack = "llm"
    plan, workdir = _plan(stack)
    if llm and (plan.gateway is None or plan.workload != "llm"):
        err.print(f"[red]error:[/red] stack {stack!r}: --llm needs a fleet running llm-server with service.gateway")
        raise typer.Exit(2)
    if jobs and plan.jobs is None:
        err.print(f"[red]error:[/red] stack {stack!r}: the fleet has no `jobs` section; --jobs needs one")
        raise typer.Exit(2)
    if regions > 1 and (llm or jobs):
        err.print("[red]error:[/red] --regions is a scenario of its own: not with --llm or --jobs")
        raise typer.Exit(2)
    prerequisites()
    lock = take_workdir(stack, workdir)
    # The LLM and queue scenarios preempt by script (kinds and times the report counts); no trace plays beside the
    # LLM one, and beside the queue one only a trace given with --trace.
    market = _market(plan, None if llm else trace, speed, scripted=llm or (jobs and trace is None))
    if regions > 1:
        from spotstack.cli import local_regions

        plan, market, timing = local_regions.setup(plan, regions, speed)
    trace_len = max((len(t.data) * t.gap_s for t in market.traces.values()), default=600.0)
    scenario_s = min(trace_len / speed, 50.0)

    async def main() -> dict[str, Any]:
        fleet = LocalFleet(plan, workdir, market)
        try:
            err.print("starting: object store, HAProxy, nodes ...")
            await fleet.start()
            await fleet.wait_ready(plan.desired, timeout_s=180)
            nodes = fleet.snapshot()["nodes"]
            ready = sum(n["state"] == "READY" for n in nodes)
            err.print(
                f"{ready} of {len(nodes)} replicas READY (target {plan.desired}); "
                + (
                    "the queue scenario starts"
                    if jobs
                    else f"{concurrency} streaming clients while spot nodes are taken"
                    if llm
                    else f"{rps} req/s through a regional outage of {regions - 1} region(s) in {regions}"
                    if regions > 1
                    else f"{rps} req/s for {scenario_s:.0f}s while the market plays"
                )
            )
            if llm:
                from spotstack.runtime.local.llm_demo import run_llm_scenario

                r = await run_llm_scenario(
                    fleet, concurrency, duration, show=lambda line: err.print(line, highlight=False)
                )
                for e in fleet.events:
                    err.print(f"  {e}")
                return r
            if regions > 1:
                return await local_regions.run(fleet, rps, timing, lambda line: err.print(line, highlight=False))
            if jobs:
                from spotstack.runtime.local.jobs import run_scenario

                r = await run_scenario(
                    fleet, kill_without_notice=kill_without_notice, show=lambda line: err.print(line, highlight=False)
                )
                for e in fleet.events:
                    err.print(f"  {e}")
                return r
            return await http_scenario(
                fleet, rps, scenario_s, kill_without_notice, lambda x: err.print(x, highlight=False)
            )
        finally:
            await fleet.stop()

    started = time.time()
    try:
        r = asyncio.run(main())
    finally:
        lock.release()
    r["wall_s"] = round(time.time() - started, 1)
    if as_json:
        print(json.dumps(r))
    elif regions > 1:
        local_regions.print_regions_report(r)
    elif llm:
        from spotstack.cli.local_report import print_llm_report

        print_llm_report(r)
    elif jobs:
        from spotstack.cli.local_report import print_jobs_report

        print_jobs_report(r)
    else:
        print_report(r)
        con.print(f"demo wall time {r['wall_s']}s; every process it started has been stopped")


# -- up / status / preempt / load / down: a detached supervisor with a control API ---------------------
@local_app.command("_serve", hidden=True)
def serve(stack: str = STACK, speed: float = SPEED, trace: Path = TRACE) -> None:
    from aiohttp import web

    from spotstack.runtime.local.fleet import LocalFleet
    from spotstack.runtime.local.reaper import AlreadyRunning, SupervisorLock
    from spotstack.runtime.net import bearer_matches
    from spotstack.runtime.net import serve as serve_app

    plan, workdir = _plan(stack)
    inherited = os.environ.get(LOCK_FD_ENV)
    try:
        lock = SupervisorLock.adopt(workdir, int(inherited)) if inherited else SupervisorLock(workdir).acquire()
    except AlreadyRunning as exc:
        raise fail(str(exc)) from None

    async def main() -> None:
        fleet = LocalFleet(plan, workdir, _market(plan, trace, speed))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

        async def status(request: web.Request) -> web.Response:
            return web.json_response(fleet.snapshot())

        async def preempt(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            if name in ("spot", "fallback", "base"):  # any READY replica of that role
                name = next((n.name for n in fleet.nodes.values() if n.role == name and n.state == "ready"), name)
            if name not in fleet.nodes:
                have = ", ".join(sorted(fleet.nodes)) or "none"
                return web.json_response({"error": f"no replica named {name!r}; replicas now: {have}"}, status=404)
            notice = request.query.get("notice", "1") == "1"
            leaving = not fleet.preempt(name, notice=notice)
            notice_s = fleet.notice_s if notice else 0
            return web.json_response({"preempted": name, "notice_s": notice_s, "leaving": leaving})

        async def down(request: web.Request) -> web.Response:
            stop.set()
            return web.json_response({"stopping": True})

        @web.middleware
        async def authorized(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            # The fleet token (0600 in the workdir): another user on this machine cannot preempt or stop it.
            if not bearer_matches(request, (workdir / "token").read_text().strip()):
                return web.json_response({"error": "the control API needs the fleet's token"}, status=401)
            return await handler(request)

        app = web.Application(middlewares=[authorized])
        app.router.add_get("/status", status)
        app.router.add_post("/preempt/{name}", preempt)
        app.router.add_post("/down", down)
        runner, port = await serve_app(app, "127.0.0.1", 0)
        try:
            await fleet.start()
            control_doc = {"url": f"http://127.0.0.1:{port}", "pid": os.getpid(), "token_file": str(workdir / "token")}
            write_atomic(workdir / "control.json", json.dumps(control_doc), mode=0o600)
            await stop.wait()
        finally:
            await fleet.stop()
            await runner.cleanup()
            (workdir / "control.json").unlink(missing_ok=True)

    try:
        asyncio.run(main())
    finally:
        lock.release()


@local_app.command("up")
def up(
    stack: str = STACK,
    speed: float = SPEED,
    trace: Path = TRACE,
) -> None:
    """Start the local fleet in the background and wait until its replicas are READY."""
    plan, workdir = _plan(stack)
    prerequisites()
    lock = take_workdir(stack, workdir)
    cmd = [sys.executable, "-m", "spotstack.cli.main", "local", "_serve", "--stack", stack, "--speed", str(speed)]
    if trace:
        cmd += ["--trace", str(trace)]
    assert lock.fd is not None
    with open(workdir / "supervisor.log", "ab") as log:
        # The supervisor inherits the lock (the same open file): no second `up` can slip in between.
        sup = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=log,
            start_new_session=True,
            pass_fds=(lock.fd,),
            env={**os.environ, LOCK_FD_ENV: str(lock.fd)},
        )
    lock.hand_over()
    end = time.time() + 180
    with err.status("starting: object store, HAProxy, nodes ..."):
        while time.time() < end:
            if sup.poll() is not None:
                raise fail(f"the fleet's supervisor exited ({sup.returncode}); see {workdir / 'supervisor.log'}")
            if (workdir / "control.json").exists():
                with contextlib.suppress(typer.Exit):
                    snap = call(control(stack), "GET", "/status")
                    if sum(n["state"] == "READY" for n in snap["nodes"]) >= plan.desired:
                        con.print(status_table(snap))
                        con.print(f"fleet up: send requests to {snap['lb']}/embed")
                        return
            time.sleep(0.5)
    raise fail(f"the fleet did not become READY in 180 s; see {workdir / 'supervisor.log'}")


@local_app.command("status")
def status(
    stack: str = STACK,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON snapshot."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep the table live until Ctrl-C."),
    interval: float = typer.Option(
        1.0, "--interval", help="Seconds between refreshes with --watch.", callback=number(0.2, 3600)
    ),
) -> None:
    """The replicas: market, type, state (LOADING with peer/origin bytes), endpoint, age."""
    ctl = control(stack)
    if as_json:
        print(json.dumps(call(ctl, "GET", "/status")))
        return
    if not watch:
        con.print(status_table(call(ctl, "GET", "/status")))
        return
    from rich.live import Live

    with contextlib.suppress(KeyboardInterrupt), Live(console=con, auto_refresh=False) as live:
        while True:
            live.update(status_table(call(ctl, "GET", "/status")), refresh=True)
            time.sleep(interval)


@local_app.command("preempt")
def preempt(
    node: str = typer.Argument(
        ..., help="Replica name from `spotstack local status`, or spot / fallback / base for any READY one."
    ),
    stack: str = STACK,
    notice: bool = typer.Option(True, "--notice/--no-notice", help="With the cloud's notice, or a kill."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Preempt one replica as the cloud would."""
    r = call(control(stack), "POST", f"/preempt/{node}?notice={int(notice)}")
    if as_json:
        print(json.dumps(r))
    elif r.get("leaving"):
        con.print(f"{node} was already leaving (noticed, or scaled in): nothing done")
    elif notice:
        con.print(f"preempted {node}: it has {r['notice_s']:g} s of notice, then it is gone")
    else:
        con.print(f"killed {node} without notice")


@local_app.command("load")
def load(
    stack: str = STACK,
    rps: float = typer.Option(8.0, "--rps", help="Requests per second (0.1 to 200).", callback=number(0.1, 200)),
    duration: float = typer.Option(30.0, "--duration", help="Seconds of load (1 to 86400).", callback=number(1, 86400)),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Send steady requests through the load balancer; the report counts only this window. Ctrl-C (or SIGTERM)
    ends the window early: the requests already sent are answered, then the report."""
    from spotstack.runtime.local.load import run_load_until_signal

    ctl = control(stack)
    before = call(ctl, "GET", "/status")
    err.print(  # stderr: --json's stdout stays one document. A script may wait for this line to preempt.
        f"load: {rps:g} requests/s to {before['lb']} for up to {duration:g} s (Ctrl-C ends it early)"
    )
    result = asyncio.run(run_load_until_signal(before["lb"], rps, duration))
    r = report(result, window(before, call(ctl, "GET", "/status")))
    print(json.dumps(r)) if as_json else print_report(r)


@local_app.command("down")
def down(stack: str = STACK) -> None:
    """Stop everything `up` started; also reaps what a crashed supervisor left running."""
    from spotstack.runtime.local.reaper import Ledger, SupervisorLock

    _, workdir = _plan(stack)
    path = workdir / "control.json"
    ctl: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        ctl = dict(json.loads(path.read_text()))
    pid = int(ctl.get("pid", 0))
    stopped = False
    if pid and alive(pid):
        with contextlib.suppress(typer.Exit):
            call(ctl, "POST", "/down")
        end = time.time() + 60
        while alive(pid) and time.time() < end:
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    elif SupervisorLock(workdir).held_elsewhere():
        raise fail(f"a local fleet for {stack!r} is starting; try again once `local up` returns")
    reaped = Ledger(workdir).reap()
    path.unlink(missing_ok=True)
    if stopped:
        con.print("local fleet stopped" + (f"; reaped {len(reaped)} leftover process(es)" if reaped else ""))
    elif reaped:
        con.print(f"the supervisor had died; reaped the {len(reaped)} process(es) it left running")
    else:
        con.print(f"no local fleet for stack {stack!r} was running")
