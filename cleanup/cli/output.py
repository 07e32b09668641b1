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
    """A live bar (count, bytes, rate) on a terminal; a plain line every 10 s otherwise."""
    import time

    from cleanup.show import human_bytes

    start = time.monotonic()

    def rate(n: int) -> str:
        elapsed = max(time.monotonic() - start, 1e-6)
        return f"{n / elapsed:,.0f} {unit}/s"

    if sys.stderr.isatty() and not os.environ.get("CI"):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                      TextColumn("{task.fields[count]:,} " + unit + ", {task.fields[size]}, "
                                 "{task.fields[rate]}"),
                      TimeElapsedColumn(), transient=True, console=_stderr_console()) as prog:
            task = prog.add_task(label, count=0, size="0 B", rate="")

            def update(n: int, b: int) -> None:
                prog.update(task, count=n, size=human_bytes(b), rate=rate(n))

            yield update
    else:
        last = [start]

        def update_plain(n: int, b: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 10:
                last[0] = now
                click.echo(f"{label}: {n:,} {unit}, {human_bytes(b)}, {rate(n)}", err=True)

        yield update_plain


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
