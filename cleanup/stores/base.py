"""The Store contract.

A store lists objects exactly once per listing (no key twice, every key that
existed for the whole listing at least once), reports ``last_modified`` as the
time the object's current content was written (never earlier: an earlier time
could make a fresh file look old), and states the ``precision`` of that time.
Keys are store-relative; the reserved ``_cleanup/`` prefix is never listed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cleanup.core.paths import RESERVED_PREFIX, StoreRef


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str | None
    version_id: str | None = None


@dataclass(frozen=True)
class ClockProbe:
    """A store clock reading bracketed by the local clock.

    ``store_time`` may be truncated by ``precision``: the write happened in
    ``[store_time, store_time + precision)`` by the store's clock and in
    ``[local_before, local_after]`` by ours.
    """

    store_time: datetime
    precision: timedelta
    local_before: datetime
    local_after: datetime

    def skew(self) -> timedelta:
        """Smallest signed offset (store minus local) consistent with both intervals."""
        lo, hi = self.store_time, self.store_time + self.precision
        if hi < self.local_before:
            return hi - self.local_before
        if lo > self.local_after:
            return lo - self.local_after
        return timedelta(0)


class Store(Protocol):
    ref: StoreRef

    @property
    def precision(self) -> timedelta:
        """How much later than a listed last_modified an object may have been written."""
        ...

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every object under the store except ``_cleanup/``, each exactly once."""
        ...

    def probe_clock(self) -> ClockProbe:
        """Write, read back and remove a probe under ``_cleanup/clock/``."""
        ...

    def region(self) -> str:
        """The store's region as the store itself reports it (``local`` for directories)."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; False if it did.

        Local: exclusive create. S3: ``If-None-Match: *`` -- which some servers
        ignore (I12 probes for that before relying on it).
        """
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The object's content, or None if it does not exist."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (store-relative, reserved prefix included), sorted."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Create or replace ``key``."""
        ...

    def delete_key(self, key: str) -> None:
        """Remove ``key`` if present (reserved-prefix bookkeeping only)."""
        ...

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        """The current state of each existing key in ``keys`` (absent keys are left out)."""
        ...

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Move each object to ``_cleanup/quarantine/<plan_id>/<key>`` in this store.

        Returns key -> None on success or an error/skip reason. An object whose
        content no longer matches ``etag`` is not removed (reason ``changed``).
        """
        ...

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Remove for good (quarantine = none). Same contract as :meth:`quarantine`."""
        ...

    def restore(self, plan_id: str, key: str) -> str:
        """Move a quarantined object back. Returns ``restored``, ``exists`` (a new object
        was written at the key: nothing is overwritten) or ``not-quarantined``."""
        ...

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        """Remove the quarantined copies of ``keys`` for good; return how many were removed."""
        ...


def quarantine_key(plan_id: str, key: str) -> str:
    """Where ``key`` goes in quarantine: inside the same store, so the same region (I13)."""
    return f"{RESERVED_PREFIX}quarantine/{plan_id}/{key}"
