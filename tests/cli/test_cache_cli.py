"""`spotstack cache serve|pull` with a bad token or a busy port: one line and exit 1, never a traceback
(hardening issue, item 13); usage errors exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def cache(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotstack.cli.main", "cache", *args], capture_output=True, text=True, timeout=60
    )


def one_error_line(r: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr


@pytest.mark.parametrize("command", ["serve", "pull"])
def test_a_missing_token_file(tmp_path: Path, command: str) -> None:
    extra = ["model-url", "--dest", str(tmp_path / "d")] if command == "pull" else ["--port", "0"]
    r = cache(command, *extra, "--store", str(tmp_path / "s"), "--token-file", str(tmp_path / "nope"))
    one_error_line(r, 1, "cannot read the token file")


@pytest.mark.parametrize("command", ["serve", "pull"])
def test_a_short_token(tmp_path: Path, command: str) -> None:
    (tmp_path / "t").write_text("short\n")
    extra = ["model-url", "--dest", str(tmp_path / "d")] if command == "pull" else ["--port", "0"]
    r = cache(command, *extra, "--store", str(tmp_path / "s"), "--token-file", str(tmp_path / "t"))
    one_error_line(r, 1, "at least 16")


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("x" * 32)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cache("serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(tmp_path / "s"),
                  "--token-file", str(tmp_path / "t"))  # fmt: skip
    one_error_line(r, 1, f"cannot listen on 127.0.0.1:{port}")


def test_no_token_at_all_is_a_usage_error(tmp_path: Path) -> None:
    r = cache("serve", "--port", "0", "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_verify_names_each_mismatch(tmp_path: Path) -> None:
    from tests.runtime.cachekit import MiB, make_model

    make_model(tmp_path / "m", {"a.bin": 2 * MiB + 7, "b.bin": 100})
    ok = cache("verify", str(tmp_path / "m"))
    assert ok.returncode == 0 and "every chunk and file matches" in ok.stderr, ok.stderr
    data = bytearray((tmp_path / "m" / "a.bin").read_bytes())
    data[MiB + 3] ^= 0xFF  # one flipped byte in the second chunk
    (tmp_path / "m" / "a.bin").write_bytes(bytes(data))
    (tmp_path / "m" / "b.bin").write_bytes(b"short")
    bad = cache("verify", str(tmp_path / "m"))
    assert bad.returncode == 1
    assert "a.bin: chunk 1 does not match its blake3 digest" in bad.stderr and "a.bin: sha256" in bad.stderr
    assert "b.bin: 5 bytes, the manifest says 100" in bad.stderr
    missing = cache("verify", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "manifest of" in missing.stderr
