from __future__ import annotations

from pathlib import Path

import pytest

from tests.boot.scratch import build_wheel, dependency_view


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The agent's wheel built from this checkout, and a view of this environment's packages for its dependencies."""
    out = tmp_path_factory.mktemp("agent-wheel")
    return build_wheel(out), dependency_view(out)
