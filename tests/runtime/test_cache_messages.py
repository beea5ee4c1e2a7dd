"""What a pull says when it cannot (hardening round 3, item 17): the real cause, one line, and no empty model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from spotstack.runtime.cache.manifest import Manifest
from spotstack.runtime.cache.pull import PullError
from spotstack.runtime.cache.sources import resolve_manifest
from tests.runtime.cachekit import TOKEN, MiB, do_pull, make_model


def test_a_short_origin_is_named_not_blamed_on_peers(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": 3 * MiB})
    with open(tmp_path / "model" / "w.bin", "r+b") as f:
        f.truncate(2 * MiB + 100)  # the object changed under its manifest
    with pytest.raises(PullError) as caught:
        do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")
    said = str(caught.value)
    assert "the origin: origin returned" in said and "peers failed" not in said and "\n" not in said


def test_a_manifest_with_no_files_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        Manifest.model_validate({"chunk_size": MiB, "files": []})


def test_a_dest_that_is_a_file_says_so(tmp_path: Path) -> None:
    m = make_model(tmp_path / "model", {"w.bin": MiB})
    (tmp_path / "dest").write_text("a file")
    with pytest.raises(PullError, match="is a file; give a folder"):
        do_pull(tmp_path / "store", m, tmp_path / "dest", [], tmp_path / "model")


def test_a_bad_manifest_is_one_line_not_a_pydantic_dump(tmp_path: Path) -> None:
    make_model(tmp_path / "model", {"w.bin": MiB})
    doc = json.loads((tmp_path / "model" / "spotstack-manifest.json").read_text())
    doc["files"][0]["size"] = -1
    doc["chunk_size"] = 3
    (tmp_path / "model" / "spotstack-manifest.json").write_text(json.dumps(doc))
    with pytest.raises(PullError) as caught:
        resolve_manifest(str(tmp_path / "model"), [], TOKEN)
    said = str(caught.value)
    assert "\n" not in said and "For further information visit" not in said and "chunk_size" in said
