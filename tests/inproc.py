"""Run the CLI in this process, through the same error-to-exit-code map as the console
script (:func:`cleanup.cli.main.main`): much faster than a subprocess per call."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence

from tests.conftest import Run


def run_inproc(args: Sequence[str]) -> Run:
    from cleanup.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    debug = os.environ.pop("CLEANUP_DEBUG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if debug is not None:
            os.environ["CLEANUP_DEBUG"] = debug
    return Run(code, out.getvalue(), err.getvalue())
