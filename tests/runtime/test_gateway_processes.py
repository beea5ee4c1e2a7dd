"""The fleet gateway as processes (a SIGKILLed replica, a SIGTERMed gateway), finding replicas with the cloud's
API, and its API keys file (not fetched yet, rotated)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from spotstack.runtime.gateway.replicas import Pool
from spotstack.runtime.llm.model import decode, encode
from tests.runtime.test_gateway import close, make_fleet, reference
from tests.waits import wait_for


# ---- as processes: a replica killed with SIGKILL, and the gateway's own SIGTERM --------------------
def _spawn(args: list[str], port_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "spotstack.cli.main", *args, "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _port(port_file: Path) -> int:
    await wait_for(port_file.exists, 60, f"{port_file.name}")
    return int(await asyncio.to_thread(port_file.read_text))


@pytest.mark.slow
async def test_processes_a_sigkilled_replica_mid_stream_and_a_sigtermed_gateway_that_drains(tmp_path: Path) -> None:
    procs = [_spawn(["llm", "serve", "--tokens-per-s", "100", "--ttft", "0.01"], tmp_path / f"r{i}") for i in range(2)]
    gw: subprocess.Popen[bytes] | None = None
    try:
        ports = [await _port(tmp_path / f"r{i}") for i in range(2)]
        replicas = [a for p in ports for a in ("--replica", f"http://127.0.0.1:{p}")]
        gw = _spawn(["gateway", "run", *replicas, "--wait", "10"], tmp_path / "gw")
        gport = await _port(tmp_path / "gw")
        prompt, n = "process boundaries", 300
        expect = decode(reference(encode(prompt), n))
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: _ready(session, gport), 30, "the gateway to see a READY replica")
            body = {"prompt": prompt, "max_tokens": n, "stream": True}
            text, got = [], 0
            async with session.post(f"http://127.0.0.1:{gport}/v1/completions", json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        text.append(json.loads(line[6:])["choices"][0]["text"])
                        got += 1
                        if got == 40:
                            procs[0].kill()  # the first listed replica took it (least load, then order)
                        if got == 100:
                            async with session.get(f"http://127.0.0.1:{gport}/metrics") as m:
                                assert 'streams_continued_total{why="cut"} 1.0' in await m.text()
                        if got == 120:
                            gw.send_signal(signal.SIGTERM)  # the gateway drains: this stream still finishes
            assert "".join(text) == expect
        assert gw.wait(30) == 0
    finally:
        for p in [*procs, *([gw] if gw else [])]:
            if p.poll() is None:
                p.kill()
            p.wait(10)


async def _ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/ready") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


# ---- finding the replicas with the cloud's API --------------------------------------------------------
@pytest.mark.slow
async def test_the_gateway_finds_the_fleets_nodes_on_aws_and_keeps_them_when_the_api_fails() -> None:
    """moto's EC2: the fleet's running instances by tag become replicas (model server port, agent readiness
    port); another fleet's and stopped ones do not; a failed DescribeInstances keeps the list it had."""
    import boto3
    from moto import mock_aws

    from spotstack.runtime.gateway.replicas import cloud_finder

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        ami = ec2.describe_images()["Images"][0]["ImageId"]

        def launch(fleet: str) -> str:
            tags = [{"ResourceType": "instance", "Tags": [{"Key": "spotstack:fleet", "Value": fleet}]}]
            inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=tags)["Instances"][0]
            return str(inst["PrivateIpAddress"])

        mine = [launch("llm"), launch("llm")]
        launch("other")
        find = cloud_finder("aws", "llm", 8080, 8471, region="us-east-1")
        broken = {"now": False}

        def finder() -> list[str]:
            if broken["now"]:
                raise RuntimeError("RequestLimitExceeded")
            return find()

        pool = Pool([], finder=finder, probe_s=0.05, find_s=0.0)
        await pool.start()
        try:
            assert sorted(pool.replicas) == sorted(f"http://{ip}:8080" for ip in mine)
            assert {pool.probes[f"http://{ip}:8080"] for ip in mine} == {f"http://{ip}:8471/ready" for ip in mine}
            broken["now"] = True
            rounds = pool._changed
            await wait_for(lambda: rounds.is_set(), 10, "a probe round with the API failing")
            assert len(pool.replicas) == 2  # a broken view is not an empty fleet
        finally:
            await pool.stop()


async def test_keys_not_yet_fetched_refuse_everything_and_rotated_keys_take_effect(tmp_path: Path) -> None:
    """A gateway whose keys file the boot has not fetched yet lets nothing through (503, not open); once it is
    there the keys hold, and a rewritten file (a rotation) replaces them without a restart."""
    from spotstack.runtime.gateway.keys import KeyFile

    keyfile = tmp_path / "api-keys"
    f = await make_fleet(n=1, keys=KeyFile(keyfile))
    try:
        body = {"prompt": "k", "max_tokens": 3}

        async def status_with(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            async with f.session.post(f.gateway.url + "/v1/completions", json=body, headers=headers) as r:
                await r.read()
                return r.status

        assert await status_with("sk-old") == 503
        keyfile.write_text("sk-old\n")
        assert await status_with("sk-old") == 200
        keyfile.write_text("sk-new-and-longer\n")  # another size: the change is seen at once
        assert await status_with("sk-old") == 401
        assert await status_with("sk-new-and-longer") == 200
        assert f.replicas[0].served == 2
    finally:
        await close(f)
