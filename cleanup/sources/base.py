"""Reference sources: where the set of referenced keys comes from.

A source yields its references together with ``taken_at``, the time as of
which the set is complete, read from the metadata system's own clock where it
has one. ``taken_at`` must never be later than the moment the read snapshot
was really taken: an early taken_at only moves the cutoff earlier, which is
safe; a late one is the incident this tool exists to prevent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RawSnapshot:
    """References staged for :func:`cleanup.snapshot.finalize_snapshot`.

    ``from_sql`` is a DuckDB relation with one column ``key`` (VARCHAR).
    ``metadata_skew`` is the metadata clock minus the local clock, where it
    could be measured (I15); ``None`` when taken_at is a claim.
    """

    from_sql: str
    taken_at: datetime
    taken_at_clock: str
    source: str
    metadata_skew: timedelta | None = None


def skew_from_bracket(server: datetime, before: datetime, after: datetime) -> timedelta:
    """Server clock minus local clock, 0 when the reading falls within [before, after]."""
    if server < before:
        return server - before
    if server > after:
        return server - after
    return timedelta(0)
