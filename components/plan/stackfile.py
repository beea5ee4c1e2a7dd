"""Find the Pulumi project and read a stack's config file, as the Pulumi CLI would."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class StackFileError(Exception):
    """The project or stack file is missing or unreadable."""


@dataclass(frozen=True)
class StackFile:
    project: str
    stack: str
    path: Path
    config: dict[str, Any]


def find_project(start: Path) -> Path:
    for d in [start, *start.parents]:
        if (d / "Pulumi.yaml").is_file():
            return d
    raise StackFileError(f"no Pulumi.yaml in {start} or any folder above it (run from the project, or pass --project)")


def load_stack(project_dir: Path, stack: str) -> StackFile:
    try:
        meta = yaml.safe_load((project_dir / "Pulumi.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackFileError(f"{project_dir / 'Pulumi.yaml'}: not valid YAML: {exc}") from None
    config_dir = project_dir / str(meta.get("stackConfigDir", "."))
    path = config_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        have = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in config_dir.glob("Pulumi.*.yaml"))
        raise StackFileError(f"no stack file {path}; stacks here: {', '.join(have) or 'none'}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path}: not valid YAML: {exc}") from None
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackFileError(f"{path}: `config` must be a mapping")
    return StackFile(str(meta.get("name", "spotstack")), stack, path, config)
