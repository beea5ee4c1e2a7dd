"""A small real training job for the local fleet and the tests: logistic regression in numpy, fitted by
minibatch gradient descent, checkpointing through `checkpoint.Checkpoints`. Deterministic for a seed whatever
the interruptions: each step's minibatch comes from (seed, step), and a checkpoint holds the weights and the
step, so a run resumed from any checkpoint ends with the same loss as one never interrupted.

    python -m spotstack.runtime.jobs.example_train --steps 300 --every 20 [--step-s 0.02]

Prints one JSON line: the final loss, and each resume (from which step, how far the run before had got, the
steps redone). Without SPOTSTACK_CHECKPOINT_URL it runs straight through (the uninterrupted baseline).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from typing import Any

import numpy as np

FEATURES = 32
SAMPLES = 2048
BATCH = 64


def data(seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, FEATURES))
    w_true = rng.standard_normal(FEATURES)
    y = (x @ w_true + 0.5 * rng.standard_normal(SAMPLES) > 0).astype(np.float64)
    return x, y


def loss(w: Any, x: Any, y: Any) -> float:
    p = 1 / (1 + np.exp(-(x @ w)))
    eps = 1e-12
    return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))


def step(w: Any, x: Any, y: Any, seed: int, i: int, lr: float) -> Any:
    idx = np.random.default_rng([seed, i]).integers(0, SAMPLES, BATCH)
    xb, yb = x[idx], y[idx]
    p = 1 / (1 + np.exp(-(xb @ w)))
    return w - lr * (xb.T @ (p - yb)) / BATCH


def pack(w: Any, i: int, history: list[dict[str, int]]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, w, allow_pickle=False)
    head = json.dumps({"step": i, "history": history}).encode()
    return len(head).to_bytes(4, "big") + head + buf.getvalue()


def unpack(data_: bytes) -> tuple[Any, int, list[dict[str, int]]]:
    n = int.from_bytes(data_[:4], "big")
    head = json.loads(data_[4 : 4 + n])
    w = np.load(io.BytesIO(data_[4 + n :]), allow_pickle=False)
    return w, int(head["step"]), list(head["history"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--step-s", type=float, default=0.0, help="extra seconds per step (a bigger model's step)")
    a = ap.parse_args(argv)

    import os

    from spotstack.runtime.jobs.checkpoint import ENV_URL, Checkpoints

    x, y = data(a.seed)
    history: list[dict[str, int]] = []
    w, start = np.zeros(FEATURES), 0
    ck = Checkpoints.from_env() if os.environ.get(ENV_URL) else None
    if ck is not None:
        found = ck.latest()
        if found is not None:
            w, start, history = unpack(found[1])
            reached = ck.reached()
            history.append({"from": start, "previous_reached": reached, "redone": max(0, reached - start)})
    i = start
    while i < a.steps:
        w = step(w, x, y, a.seed, i, a.lr)
        i += 1
        if a.step_s:
            time.sleep(a.step_s)
        if ck is None:
            continue
        ck.mark(i)
        if i % a.every == 0 or i == a.steps:
            ck.save(i, pack(w, i, history))
        if ck.stop_requested():
            ck.save(i, pack(w, i, history))
            print(json.dumps({"checkpointed": i}), file=sys.stderr)
            return 75  # EX_TEMPFAIL: stopped for a notice, resumable
    print(json.dumps({"loss": loss(w, x, y), "steps": i, "resumes": history}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
