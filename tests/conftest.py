"""Shared fixtures: SSH keys, a local store, CLI runner; S3 servers come from tests.s3servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import unavailable as unavailable  # re-exported for tests

pytest_plugins = ["tests.servers"]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run_cli(args: Sequence[str], *, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300) -> Run:
    """Run ``python -m cleanup`` as a real process (exit codes, stderr, no tracebacks)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CLEANUP_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "cleanup", *args], capture_output=True, text=True,
                       env=full_env, cwd=cwd, timeout=timeout, check=False)
    return Run(p.returncode, p.stdout, p.stderr)


def assert_one_line_error(r: Run, code: int, *needles: str) -> None:
    """Exit ``code``, no traceback, the message says what is wrong."""
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert lines, "no error message"
    assert lines[0].startswith(("cleanup: error:", "Error:", "Usage:")), r.err
    for n in needles:
        assert n in r.err, (n, r.err)


def make_key(directory: Path, name: str, kind: str = "ed25519") -> Path:
    key = directory / name
    if not key.exists():
        args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(key)]
        subprocess.run(args, check=True, stdin=subprocess.DEVNULL)
    return key


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def alice_key(keys_dir: Path) -> Path:
    return make_key(keys_dir, "alice")


@pytest.fixture(scope="session")
def bob_key(keys_dir: Path) -> Path:
    return make_key(keys_dir, "bob")
