"""The CLI as a real process with test-only fault points: ``python -m tests.faultcli ARGS``.

Environment (all optional; the library's own ``CLEANUP_FAULT_KILL_AFTER_JOURNAL_WRITES``
passes through unchanged):

``CLEANUP_TEST_KILL_AT=quarantine-move:N``
    SIGKILL right after the Nth object has been renamed into quarantine by the local
    store (moved, not yet journaled).
``CLEANUP_TEST_KILL_AT=quarantine-delete:N``
    SIGKILL in the Nth S3 quarantine call after its copies were made and before the
    originals are deleted (both copies exist).
``CLEANUP_TEST_GATE=DIR``
    After the first journal write (the stage has started, the store lock is held),
    create ``DIR/ready`` and wait (polling, 120 s deadline) until ``DIR/go`` exists:
    a second process can then be run against a known state.

The hooks wrap library functions from outside; nothing in ``cleanup`` knows about them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import Run

REPO = Path(__file__).resolve().parent.parent
KILL_AT = "CLEANUP_TEST_KILL_AT"
GATE = "CLEANUP_TEST_GATE"


def wants_process(env: Mapping[str, str] | None) -> bool:
    """True when ``env`` asks for a fault that only a real process can take."""
    return any(k.startswith(("CLEANUP_FAULT_", "CLEANUP_TEST_")) for k in env or {})


def _command(args: Sequence[str], env: Mapping[str, str] | None
             ) -> tuple[list[str], dict[str, str]]:
    full = {**os.environ, **(env or {})}
    full.pop("CLEANUP_DEBUG", None)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "tests.faultcli", *args], full


def run(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300,
        **_ignored: Any) -> Run:
    cmd, full = _command(args, env)
    p = subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=REPO,
                       timeout=timeout, check=False)
    return Run(p.returncode, p.stdout, p.stderr)


def spawn(args: Sequence[str], *, env: Mapping[str, str] | None = None
          ) -> subprocess.Popen[str]:
    cmd, full = _command(args, env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full, cwd=REPO)


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(point: str, n: int) -> None:
    seen = 0
    if point == "quarantine-move":
        real_rename = os.rename

        def rename(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            nonlocal seen
            real_rename(src, dst, *a, **kw)
            if "/_cleanup/quarantine/" in str(dst):
                seen += 1
                if seen >= n:
                    _kill()

        setattr(os, "rename", rename)  # noqa: B010  # the os module cleanup.stores.local uses
    elif point == "quarantine-delete":
        from cleanup.stores.s3 import S3Store

        real_quarantine = S3Store.quarantine
        real_delete = S3Store._delete_batch
        inside = False

        def quarantine(self: S3Store, *a: Any, **kw: Any) -> dict[str, str | None]:
            nonlocal inside
            inside = True
            try:
                return real_quarantine(self, *a, **kw)
            finally:
                inside = False

        def delete_batch(self: S3Store, *a: Any, **kw: Any) -> dict[str, str | None]:
            nonlocal seen
            if inside:
                seen += 1
                if seen >= n:
                    _kill()  # the copies exist, the originals are not deleted yet
            return real_delete(self, *a, **kw)

        S3Store.quarantine = quarantine  # type: ignore[method-assign]
        S3Store._delete_batch = delete_batch  # type: ignore[method-assign]
    else:
        raise SystemExit(f"tests.faultcli: unknown kill point {point!r}")


def _install_gate(directory: Path) -> None:
    from cleanup.journal import Journal

    real_write = Journal.write
    opened = False

    def write(self: Journal, event: str, **fields: Any) -> None:
        nonlocal opened
        real_write(self, event, **fields)
        if not opened:
            opened = True
            (directory / "ready").write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not (directory / "go").exists():
                if time.monotonic() > deadline:
                    raise SystemExit("tests.faultcli: gate never opened")
                time.sleep(0.02)

    Journal.write = write  # type: ignore[method-assign]


def main(argv: Sequence[str]) -> None:
    if os.environ.get(KILL_AT):
        point, _, n = os.environ[KILL_AT].partition(":")
        _install_kill(point, int(n))
    if os.environ.get(GATE):
        _install_gate(Path(os.environ[GATE]))
    from cleanup.cli.main import main as cli_main

    cli_main(list(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
