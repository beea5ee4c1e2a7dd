"""The documentation: the README stays a front page with the two quick-start commands, every page is in the site's
navigation, and the spec reference is what `components/spec.py` says (`mkdocs build --strict` runs in `make docs`)."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from tests.conftest import ROOT


def test_the_readme_is_a_front_page_with_two_quick_start_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", quick, re.S)
    assert [ln.split()[:2] for ln in block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]


def test_every_page_is_in_the_navigation_and_every_link_in_the_readme_resolves() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == listed
    for target in re.findall(r"\]\((docs/[^)#]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).is_file(), target


def test_the_spec_reference_is_current() -> None:
    out = subprocess.run([sys.executable, "scripts/spec_reference.py", "--check"], cwd=ROOT, capture_output=True)
    assert out.returncode == 0, out.stderr.decode()
    text = (ROOT / "docs" / "reference" / "spec.md").read_text()
    assert "## GatewaySpec" in text and "| `max_request_s` |" in text
