"""`spotstack simulate --plot`: one PNG of a replay, per policy: READY replicas against the target, the spot and
on-demand replicas running, and how many pools the market offered. matplotlib is imported here only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from spotstack.runtime.controller.simulate import Timeline


def plot(path: Path, n: int, lines: dict[str, Timeline], pools: int) -> None:
    """Write the figure atomically (a temporary file renamed into place): a failed plot leaves no half PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a CI machine or a server
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(lines) + 1, 1, figsize=(12, 2.4 * (len(lines) + 1)), sharex=True)
    for ax, (name, tl) in zip(axes, lines.items(), strict=False):
        ax.step(tl.t_h, tl.ready, where="post", color="tab:green", lw=0.8, label="READY")
        ax.step(tl.t_h, tl.spot, where="post", color="tab:blue", lw=0.6, alpha=0.7, label="spot running")
        ax.step(tl.t_h, tl.on_demand, where="post", color="tab:red", lw=0.6, alpha=0.7, label="on-demand running")
        ax.axhline(n, color="black", lw=0.6, ls="--", label=f"target N={n}")
        ax.set_ylabel("replicas")
        ax.set_title(name, loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
    first = next(iter(lines.values()))
    ax = axes[-1]
    ax.step(first.t_h, first.pools_up, where="post", color="tab:gray", lw=0.8)
    ax.set_ylim(-0.2, pools + 0.2)
    ax.set_ylabel(f"pools up (of {pools})")
    ax.set_xlabel("hours")
    fig.tight_layout()
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
