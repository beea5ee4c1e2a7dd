"""Origin pull speed (issue 14): a node reading the model from the object store alone, against boto3's
TransferManager (`download_file`: 10 threads, 8 MiB parts) on the same moto S3 server in the same run.

moto's server (its own process) stands in for S3; both readers write into /dev/shm. The pull verifies every
chunk (BLAKE3) and places the files; TransferManager only downloads. Medians over --rounds per setting.

    .venv/bin/python benchmarks/cache_origin.py [--mb 512] [--rounds 3] [--connections 4 8 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spotstack.runtime.cache.manifest import build_manifest, write_manifest
from spotstack.runtime.cache.pull import Origin, PullOptions, pull
from spotstack.runtime.cache.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from _moto_s3 import start_s3

BIN = Path(sys.executable).parent


def main(mb: int, rounds: int, connections: list[int]) -> None:
    work = Path(tempfile.mkdtemp(prefix="spotstack-origin-", dir="/dev/shm"))
    moto: subprocess.Popen[bytes] | None = None
    try:
        model = work / "model"
        model.mkdir()
        block = bytearray(os.urandom(1 << 20))
        with open(model / "model.safetensors", "wb") as f:
            for n in range(mb):
                block[:8] = n.to_bytes(8, "little")
                f.write(block)
        m = build_manifest(str(model))
        write_manifest(str(model), m)
        moto, url = start_s3(model)
        import boto3

        s3 = boto3.client("s3")
        results: dict[str, list[float]] = {}
        for r in range(rounds):
            out = work / "tm.bin"
            t = time.perf_counter()
            s3.download_file("models", "m/model.safetensors", str(out))
            results.setdefault("TransferManager (boto3 download_file)", []).append(
                m.total_bytes / (time.perf_counter() - t) / 1e9
            )
            out.unlink()
            for c in connections:
                res = pull(
                    Store(work / "store", 1 << 40),
                    m,
                    work / "dest",
                    peers=[],
                    token="x" * 20,
                    origin=Origin(url),
                    options=PullOptions(origin_connections=c),
                )
                results.setdefault(f"pull, {c} origin connections", []).append(res.gbps)
                shutil.rmtree(work / "store")
                shutil.rmtree(work / "dest")
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items()))
        base = statistics.median(results["TransferManager (boto3 download_file)"])
        print(f"\n{m.total_bytes / 1e6:.0f} MB from moto S3, {os.cpu_count()} cores, medians of {rounds} (GB/s)")
        for k, v in results.items():
            print(f"  {k:40s} {statistics.median(v):6.3f}   x TransferManager = {statistics.median(v) / base:.2f}")
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, nargs="+", default=[4, 8, 16])
    a = ap.parse_args()
    main(a.mb, a.rounds, a.connections)
