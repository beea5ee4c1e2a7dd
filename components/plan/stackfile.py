"""Find the Pulumi project and read a stack's config file, as the Pulumi CLI would."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_NAMESPACE = "spotstack"
FLEETS_KEY = "fleets"


def config_value(stack_config: dict[str, Any]) -> Any:
    """The fleets list from a stack file's `config:` mapping."""
    return stack_config.get(f"{CONFIG_NAMESPACE}:{FLEETS_KEY}")


class StackFileError(Exception):
    """The project or stack file is missing or unreadable."""


MAX_DEPTH = 32
"""No stack config nests deeper; a deeper document is a mistake or an attack on the parser."""
MAX_VALUES = 100_000
"""Keys and values in a stack file, aliases expanded: a real one has a few hundred."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last silently, as the Pulumi CLI would not)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key must be a plain value, not {type(key).__name__}", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.MappingNode):
        return [v for kv in n.value for v in kv]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def _measure(root: yaml.Node, max_depth: int, max_values: int) -> str | None:
    """What is wrong with a composed document's shape, or None: deeper than `max_depth`, more than `max_values`
    once its aliases are expanded, or an alias inside its own anchor. Each node is measured once (memoised), so
    a 600-byte alias bomb costs a few hundred steps, not the billions its expansion would (an expanding walk ran
    for minutes). Iterative: a recursive walk is what overflows."""
    memo: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        n, done = stack.pop()
        key = id(n)
        kids = _children(n)
        if done:
            depth = 1 + max((memo[id(k)][0] for k in kids), default=0)
            size = 1 + sum(memo[id(k)][1] for k in kids)
            memo[key] = (depth, size)
            open_.discard(key)
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            if size > max_values:
                return f"more than {max_values} values once its aliases are expanded (a YAML alias bomb?)"
            continue
        if key in memo:
            continue
        if key in open_:
            return "an alias refers to a node that holds it (a YAML structure that never ends)"
        open_.add(key)
        stack.append((n, True))
        stack.extend((k, False) for k in kids if id(k) not in memo)
    return None


def load_yaml(text: str, where: Path) -> Any:
    """Parse one YAML document strictly: no duplicate keys, no absurd nesting; StackFileError otherwise."""
    stream = io.StringIO(text)
    stream.name = str(where)  # YAML's error marks then name the file, not "<unicode string>"
    try:
        loader = _StrictLoader(stream)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            problem = _measure(node, MAX_DEPTH, MAX_VALUES)
            if problem:
                raise StackFileError(f"{where}: {problem}")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise StackFileError(f"{where}: not valid YAML: {exc}") from None
    except RecursionError:
        raise StackFileError(f"{where}: nested too deeply to read") from None


@dataclass(frozen=True)
class StackFile:
    project: str
    stack: str
    path: Path
    config: dict[str, Any]


def find_project(start: Path, hint: str = "run from the project") -> Path:
    """The nearest folder from `start` up holding Pulumi.yaml; `hint` says how else to name one (`plan` has
    --project, the other commands do not)."""
    for d in [start, *start.parents]:
        if (d / "Pulumi.yaml").is_file():
            return d
    raise StackFileError(f"no Pulumi.yaml in {start} or any folder above it ({hint})")


def load_stack(project_dir: Path, stack: str) -> StackFile:
    meta = load_yaml(_read(project_dir / "Pulumi.yaml"), project_dir / "Pulumi.yaml") or {}
    if not isinstance(meta, dict):
        raise StackFileError(f"{project_dir / 'Pulumi.yaml'}: must be a mapping")
    config_dir = project_dir / str(meta.get("stackConfigDir", "."))
    path = config_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        have = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in config_dir.glob("Pulumi.*.yaml"))
        raise StackFileError(f"no stack file {path}; stacks here: {', '.join(have) or 'none'}")
    doc = load_yaml(_read(path), path) or {}
    if not isinstance(doc, dict):
        raise StackFileError(f"{path}: must be a mapping with a `config` key")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackFileError(f"{path}: `config` must be a mapping")
    return StackFile(str(meta.get("name", "spotstack")), stack, path, config)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StackFileError(f"{path}: cannot read: {exc}") from None
