"""Output: every command renders its result through one :class:`Output` (JSON under
``--json``, text otherwise), and errors through :func:`error_line`. Only the CLI prints."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import click

from cleanup.errors import CleanupError


class Rich:
    """Renderables for rich (markup strings, tables): printed with a rich console, which
    is imported only then (rich is slow to import)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


Text: TypeAlias = str | Rich | Iterable[str | Rich]


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def say(msg: str) -> None:
    click.echo(msg)


def warn(msg: str) -> None:
    """A line on stderr, in either output mode."""
    click.echo(msg, err=True)


class Output:
    """How a command prints its result: as JSON (``--json``) or as text.

    (Plain classes here, not dataclasses: importing dataclasses costs ``--help`` time.)
    """

    __slots__ = ("as_json",)

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json

    def result(self, data: Any | Callable[[], Any], text: Text | Callable[[], Text]) -> None:
        """The command's result: ``data`` as JSON, or ``text`` (see :meth:`text`).
        Either may be a function, called only in its own mode."""
        if self.as_json:
            emit_json(data() if callable(data) else data)
        else:
            self.text(text() if callable(text) else text)

    def text(self, text: Text) -> None:
        """Text-mode output (nothing under ``--json``): a line, rich renderables, or a
        sequence of either."""
        if self.as_json:
            return
        for part in [text] if isinstance(text, str | Rich) else text:
            if isinstance(part, Rich):
                from rich.console import Console

                console = Console()
                for item in part.items:
                    console.print(item)
            else:
                say(part)


TEXT = Output(as_json=False)


def error_line(exc: BaseException) -> str:
    if isinstance(exc, CleanupError):
        text = f"cleanup: error: {exc.message}"
        if exc.hint:
            text += f"\n  hint: {exc.hint}"
        return text
    return f"cleanup: internal error (a bug, exit 1): {type(exc).__name__}: {exc}"


@contextmanager
def progress_bar(label: str, unit: str = "objects") -> Iterator[Callable[[int, int], None]]:
    """A live bar (count, bytes, rate) on a terminal; a plain line every 10 s otherwise."""
    from cleanup.show import human_bytes  # slow to import: not at start-up

    start = time.monotonic()

    def rate(n: int) -> str:
        elapsed = max(time.monotonic() - start, 1e-6)
        return f"{n / elapsed:,.0f} {unit}/s"

    if sys.stderr.isatty() and not os.environ.get("CI"):
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                      TextColumn("{task.fields[count]:,} " + unit + ", {task.fields[size]}, "
                                 "{task.fields[rate]}"),
                      TimeElapsedColumn(), transient=True,
                      console=Console(stderr=True)) as prog:
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
                warn(f"{label}: {n:,} {unit}, {human_bytes(b)}, {rate(n)}")

        yield update_plain
