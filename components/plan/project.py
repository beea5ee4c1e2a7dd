"""Run a Pulumi project's own Python program, as Pulumi's Python language host would, under the mock engine.

`spotstack plan` is not tied to spotstack's built-in program: whatever `__main__.py` a project holds (one that
builds its own VPC and imports the components, or the built-in one reading `spotstack:fleets`) is what runs.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pulumi

from spotstack.components.plan.engine import PlanRun, run_offline
from spotstack.components.plan.stackfile import StackFileError, load_yaml
from spotstack.components.validate import SpecError

_NEVER_FORGET = {"spotstack", "pulumi"}


class ProgramError(Exception):
    """The program stopped with an error: the message says where (a traceback for an unexpected exception)."""


def entry_point(project_dir: Path) -> Path:
    """The file Pulumi would run: `main:` from Pulumi.yaml (a folder holding `__main__.py`, or a `.py` file),
    else the project folder's `__main__.py`. Non-Python projects are refused with the reason."""
    meta_path = project_dir / "Pulumi.yaml"
    meta = load_yaml(meta_path.read_text(encoding="utf-8"), meta_path) or {}
    if not isinstance(meta, dict):
        raise StackFileError(f"{meta_path}: must be a mapping")
    runtime = meta.get("runtime")
    runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if runtime_name != "python":
        raise StackFileError(
            f"{meta_path}: runtime is {runtime_name!r}: `spotstack plan` runs Python programs (a YAML or TypeScript "
            "program uses the components through the provider: see docs/deploy.md, 'Any language')"
        )
    main = project_dir.resolve() / str(meta.get("main", "."))
    path = main / "__main__.py" if main.is_dir() else main
    if not path.is_file():
        raise StackFileError(f"{meta_path}: no program at {path} (Pulumi runs `__main__.py`, or the `main:` file)")
    return path


@contextmanager
def _as_pulumi_runs_it(program_dir: Path) -> Iterator[None]:
    """The program's folder first on sys.path and as the working directory; its own modules forgotten after,
    so that a second program with a module of the same name gets its own."""
    before_modules = set(sys.modules)
    cwd = os.getcwd()
    sys.path.insert(0, str(program_dir))
    os.chdir(program_dir)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(program_dir))
        root = program_dir.resolve()
        for name in set(sys.modules) - before_modules:
            if name.split(".")[0] in _NEVER_FORGET:
                continue
            file = getattr(sys.modules[name], "__file__", None)
            # Installed packages (a virtualenv inside the project included) stay: Pulumi's SDK and the
            # providers are still working for this run when the program returns.
            if file and "site-packages" not in Path(file).parts and Path(file).resolve().is_relative_to(root):
                del sys.modules[name]


def program_of(path: Path) -> Callable[[], None]:
    """A callable that runs the file at `path` as `__main__`; errors become ProgramError / SpecError."""

    def run() -> None:
        with _as_pulumi_runs_it(path.parent):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except (SpecError, pulumi.InputPropertiesError) as exc:
                raise ProgramError(_message(exc)) from None
            except pulumi.RunError as exc:  # what the built-in program raises for a bad spec: no traceback
                raise ProgramError(str(exc)) from None
            except Exception:
                raise ProgramError(f"{path} failed:\n{_traceback_from(path)}") from None

    return run


def run_program(path: Path, config: dict[str, Any], project: str, stack: str) -> PlanRun:
    """Run the program at `path` offline. An error raised while Pulumi resolves outputs (an Input checked inside
    `apply`) surfaces after the program returned: it is a ProgramError too."""
    try:
        return run_offline(program_of(path), config, project=project, stack=stack)
    except ProgramError:
        raise
    except (SpecError, pulumi.InputPropertiesError) as exc:
        raise ProgramError(_message(exc)) from None
    except pulumi.RunError as exc:
        raise ProgramError(str(exc)) from None
    except Exception:
        raise ProgramError(f"{path} failed while its outputs resolved:\n{traceback.format_exc().rstrip()}") from None


def _message(exc: Exception) -> str:
    if isinstance(exc, pulumi.InputPropertiesError):
        return exc.message
    return str(exc)


def _traceback_from(path: Path) -> str:
    """The traceback from the program's own frame on (runpy's and ours above it are noise to the user)."""
    frames = traceback.extract_tb(sys.exc_info()[2])
    start = next((i for i, f in enumerate(frames) if Path(f.filename) == path), 0)
    kind, value = sys.exc_info()[:2]
    lines: list[Any] = traceback.format_list(frames[start:]) + traceback.format_exception_only(kind, value)
    return "".join(lines).rstrip()
