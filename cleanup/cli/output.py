"""Output and the one error-to-exit-code map. Only the CLI prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def say(msg: str) -> None:
    click.echo(msg)


def error_line(exc: BaseException) -> str:
    from cleanup.errors import CleanupError

    if isinstance(exc, CleanupError):
        text = f"cleanup: error: {exc.message}"
        if exc.hint:
            text += f"\n  hint: {exc.hint}"
        return text
    return f"cleanup: internal error (a bug, exit 1): {type(exc).__name__}: {exc}"


@contextmanager
def progress_bar(label: str, unit: str = "objects") -> Iterator[Callable[[int, int], None]]:
    """A live bar on a terminal; periodic plain lines otherwise (CI logs)."""
    if sys.stderr.isatty() and not os.environ.get("CI"):
        from rich.progress import (
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                      TextColumn("{task.fields[count]} " + unit + ", {task.fields[size]}"),
                      TimeElapsedColumn(), transient=True, console=_stderr_console()) as prog:
            task = prog.add_task(label, count=0, size="0 B")

            def update(n: int, b: int) -> None:
                from cleanup.show import human_bytes

                prog.update(task, count=n, size=human_bytes(b))

            yield update
    else:
        last = [0]

        def update_plain(n: int, b: int) -> None:
            if n - last[0] >= 1_000_000:
                last[0] = n
                click.echo(f"{label}: {n} {unit}", err=True)

        yield update_plain


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
