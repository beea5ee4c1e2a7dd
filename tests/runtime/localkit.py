"""Helpers for the local fleet's tests: a project folder of the test's own."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import ROOT


def project(tmp: Path) -> Path:
    """This project's Pulumi.yaml and local stacks, copied into `tmp`: the fleet's workdir (`.spotstack/local/<stack>`)
    is then the test's own. Two workers running `local demo --stack local` in the checkout at once: the second was
    refused ("already running"), and each read the other's node logs."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp / "Pulumi.yaml")
    (tmp / "stacks").mkdir()
    for stack in ("local", "llm", "jobs"):
        shutil.copy(ROOT / "stacks" / f"Pulumi.{stack}.yaml", tmp / "stacks" / f"Pulumi.{stack}.yaml")
    return tmp
