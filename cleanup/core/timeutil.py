"""Durations, ISO 8601 times, cutoff and precision arithmetic (pure).

Durations are written ``90s``, ``45m``, ``24h``, ``7d`` (and ``500ms``, ``1us``
for precisions). Times are ISO 8601 with a zone; a naive time is refused,
because guessing a zone is exactly how a cutoff lands after the snapshot.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from cleanup.errors import UsageError

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(us|ms|s|m|h|d)\s*$")
_UNITS = {
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
# Bounds that keep every sum and difference of times and durations inside datetime's
# range (years 1-9999): no duration beyond 100 years, no time outside years 1000-8999.
MAX_DURATION = timedelta(days=36525)
EARLIEST_TIME = datetime(1000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """Parse ``24h``-style durations; raise :class:`UsageError` otherwise."""
    m = _DURATION_RE.match(text)
    if not m:
        raise UsageError(
            f"invalid duration {text!r}", hint="write a whole number and a unit: 90s, 45m, 24h, 7d"
        )
    digits, unit = m.group(1), m.group(2)
    if len(digits.lstrip("0")) > 18 or int(digits) > MAX_DURATION // _UNITS[unit]:
        shown = text.strip() if len(text.strip()) <= 30 else text.strip()[:24] + "..."
        raise UsageError(f"duration {shown!r} is longer than 100 years",
                         hint="write a duration of at most 36525d")
    return int(digits) * _UNITS[unit]


def format_duration(d: timedelta) -> str:
    """The shortest exact spelling of ``d`` in the units :func:`parse_duration` reads."""
    us = d // timedelta(microseconds=1)
    if us < 0:
        return "-" + format_duration(-d)
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS[unit] // timedelta(microseconds=1)
        if unit == "d" and us < 2 * size:
            continue  # "24h" reads better than "1d" next to hour-sized buffers
        if us and us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time that carries a zone; return it in UTC."""
    raw = text.strip()
    try:
        t = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}", hint="use ISO 8601 with a zone, e.g. 2026-05-14T21:30:00Z"
        ) from None
    if t.tzinfo is None:
        raise UsageError(
            f"time {text!r} has no zone",
            hint="add one (Z for UTC): a guessed zone can move a cutoff past the snapshot",
        )
    try:
        utc = t.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIME <= utc < LATEST_TIME:
        raise UsageError(f"time {text!r} is out of range",
                         hint="give a time between the years 1000 and 8999 (UTC)")
    return utc


def format_time(t: datetime) -> str:
    """UTC ISO 8601 with ``Z``; microseconds only when present."""
    if t.tzinfo is None:
        raise ValueError("naive datetime")
    u = t.astimezone(UTC)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if u.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return u.strftime(spec)


def is_candidate_time(last_modified: datetime, precision: timedelta, cutoff: datetime) -> bool:
    """I2 timestamp-precision: could the object have been written at or after ``cutoff``?

    A listing that truncates to whole seconds reports 12:00:00 for a write at
    12:00:00.999, so an object is old enough only if ``last_modified +
    precision <= cutoff``. Keeping a file we could have deleted is fine;
    deleting one written after the cutoff is not.
    """
    return last_modified + precision <= cutoff
