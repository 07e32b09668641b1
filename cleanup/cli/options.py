"""Option types and the option stacks that several commands share.

- :func:`store_options`: how to reach a store (``--endpoint-url`` with
  ``AWS_ENDPOINT_URL``, ``--region``), passed as ``endpoint_url`` and ``region``;
- :func:`json_option`: ``--json``, passed as ``output``, an :class:`Output` that the
  command renders its result through (JSON or text).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from cleanup.cli.output import Output
from cleanup.core.timeutil import parse_duration, parse_time
from cleanup.errors import UsageError

FC = TypeVar("FC", bound=Callable[..., Any])

ENDPOINT_HELP = "S3-compatible endpoint."
AUDIT_ENDPOINT_HELP = "S3-compatible endpoint of the plan's store (for its audit log)."
PLAN_REGION_HELP = "Local stores: the region the plan was bound to [local]."


class Duration(click.ParamType[timedelta]):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except UsageError as exc:
            self.fail(f"{exc.message} ({exc.hint})", param, ctx)


class Time(click.ParamType[datetime]):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except UsageError as exc:
            self.fail(f"{exc.message} ({exc.hint})", param, ctx)


class MemoryLimit(click.ParamType[str]):
    """A DuckDB memory limit: a number and a unit (KB, MB, GB, TB, KiB, MiB, GiB, TiB) of at
    least 64 MiB, or a percentage (1-100%) of the machine's memory."""

    name = "SIZE"
    FORMS = "e.g. 512MB, 1GB, 1.5GiB or 80%"
    _RE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,6})?)\s*(kb|mb|gb|tb|kib|mib|gib|tib|%)\s*",
                     re.ASCII | re.IGNORECASE)
    _UNIT = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    MIN_BYTES = 64 * 2**20
    MAX_BYTES = 2**50

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = str(value)
        m = self._RE.fullmatch(text)
        if not m:
            self.fail(f"{text[:40]!r} is not a memory size ({self.FORMS})", param, ctx)
        number, unit = float(m.group(1)), m.group(2).lower()
        if unit == "%":
            if not 1 <= number <= 100:
                self.fail(f"{text!r}: a percentage must be between 1% and 100% "
                          f"({self.FORMS})", param, ctx)
        elif not self.MIN_BYTES <= number * self._UNIT[unit] <= self.MAX_BYTES:
            self.fail(f"{text!r} is out of range: give between 64MiB and 1024TiB "
                      f"({self.FORMS})", param, ctx)
        return f"{m.group(1)}{'%' if unit == '%' else unit.upper().replace('I', 'i')}"


DURATION = Duration()
TIME = Time()
MEMORY = MemoryLimit()


def store_options(region: str | None = "S3 region.",
                  endpoint: str = ENDPOINT_HELP) -> Callable[[FC], FC]:
    """``--endpoint-url`` (envvar AWS_ENDPOINT_URL) and, unless ``region`` is None,
    ``--region``, with these help texts; passed as ``endpoint_url`` and ``region``."""

    def decorate(f: FC) -> FC:
        if region is not None:
            f = click.option("--region", help=region)(f)
        return click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help=endpoint)(f)

    return decorate


def _as_output(_ctx: click.Context, _param: click.Parameter, as_json: bool) -> Output:
    return Output(as_json=bool(as_json))


def json_option(help: str = "Print the result as JSON.") -> Callable[[FC], FC]:
    """``--json``, passed to the command as ``output``: the :class:`Output` to render
    the result through."""
    return click.option("--json", "output", is_flag=True, help=help, callback=_as_output)


def check_output(path: str, option: str = "-o") -> None:
    """Refuse an output path in a missing folder before any work is done."""
    from cleanup.inputs import check_output_path

    check_output_path(path, option)


TRUST_ROOT_HELP = ("sha256 of the trust root's version 1 (the runner's pin; default: "
                   "CLEANUP_TRUST_ROOT, then trust_root in --config / ./cleanup.toml).")


def trust_options(f: FC) -> FC:
    """``--trust-root`` and ``--config``: where the runner's pin of the trust root comes
    from (I17). Principals are never read from a file named on the command line."""
    f = click.option("--config", type=click.Path(dir_okay=False),
                     help="The runner's reviewed cleanup.toml [default: ./cleanup.toml].")(f)
    return click.option("--trust-root", "trust_root", metavar="sha256:HEX",
                        help=TRUST_ROOT_HELP)(f)


def anchor_option(f: FC) -> FC:
    return click.option("--anchor", metavar="STORE",
                        help="A second store that receives a copy of the audit head after "
                             "every entry (S3 Object Lock where the bucket has it) [default: "
                             "[audit] anchor in the config].")(f)


def refuse_allowed_signers(_ctx: click.Context, _param: click.Parameter,
                           value: str | None) -> None:
    """``--allowed-signers`` cannot authorize an action (I17): refuse it with the way."""
    if value is not None:
        from cleanup.core.names import I17
        from cleanup.errors import SignoffError

        raise SignoffError(f"{I17}: --allowed-signers cannot authorize this: principals "
                           "come only from the store's trust root, pinned by the runner",
                           hint="drop --allowed-signers; pin the trust root with --trust-root, "
                                "CLEANUP_TRUST_ROOT or trust_root in cleanup.toml")


def no_allowed_signers(f: FC) -> FC:
    return click.option("--allowed-signers", hidden=True, expose_value=False,
                        callback=refuse_allowed_signers)(f)
