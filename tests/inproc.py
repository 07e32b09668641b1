"""Run the CLI in this process, through the same error-to-exit-code map as the console
script (:func:`cleanup.cli.main.main`): much faster than a subprocess per call.

:func:`run_cli` has the signature of :func:`tests.conftest.run_cli` (the real process),
so a test module switches with its import. Keep the subprocess where the process is
the point: SIGKILL/crash tests, fault-injection environment variables read at import,
``python -m cleanup`` itself, concurrency between processes.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conftest import Run


@contextlib.contextmanager
def _environment(env: dict[str, str] | None, cwd: Path | None) -> Iterator[None]:
    saved = dict(os.environ)
    old_cwd = os.getcwd() if cwd is not None else None
    os.environ.update(env or {})
    os.environ.pop("CLEANUP_DEBUG", None)  # tracebacks would change what stderr holds
    if cwd is not None:
        os.chdir(cwd)
    _forget_boto3_session()
    try:
        yield
    finally:
        if old_cwd is not None:
            os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(saved)
        _forget_boto3_session()


def _forget_boto3_session() -> None:
    """boto3's default session keeps the credentials and region it first resolved; a
    real process starts without one, so each in-process command does too."""
    import sys

    boto3 = sys.modules.get("boto3")
    if boto3 is not None:
        setattr(boto3, "DEFAULT_SESSION", None)  # noqa: B010


def run_inproc(args: Sequence[str]) -> Run:
    from cleanup.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _environment(None, None), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Run(code, out.getvalue(), err.getvalue())


def run_cli(args: Sequence[str], *, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 300) -> Run:
    """:func:`tests.conftest.run_cli` in this process (``timeout`` is the test's own)."""
    del timeout
    if env and any(k.startswith("CLEANUP_FAULT_") for k in env):
        raise AssertionError("fault injection kills the process: use tests.conftest.run_cli")
    with _environment(env, cwd):
        return run_inproc(args)
