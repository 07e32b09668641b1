"""The Store contract.

A store lists objects exactly once per listing (no key twice, every key that
existed for the whole listing at least once), reports ``last_modified`` as the
time the object's current content was written (never earlier: an earlier time
could make a fresh file look old), and states the ``precision`` of that time.
Keys are store-relative; the reserved ``_cleanup/`` prefix is never listed.

Optional capabilities are separate runtime-checkable protocols
(:class:`VersionedStore`, :class:`ConditionalStore`); ask for one with
:func:`capability`, which also sees through wrappers such as
:class:`cleanup.stores.wrappers.DryRunStore`. Never test for a concrete class.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, runtime_checkable

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, confined
from cleanup.errors import UsageError

if TYPE_CHECKING:
    import pyarrow as pa


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
    """What every store provides. Keys are store-relative strings.

    Errors: a key that does not exist is never an exception -- each method says how it
    reports one (``None``, left out, an outcome string, ``False``). Transient failures
    (throttling, a dropped connection) are retried inside the store; what still fails is
    raised as :class:`cleanup.errors.StoreError` (exit 1; retrying the whole command is
    safe because every mutation below is idempotent) or, for a missing bucket, denied
    credentials or an unreachable endpoint, :class:`cleanup.errors.UsageError` (exit 2;
    retrying will not help). Batch mutations (:meth:`quarantine`, :meth:`delete`) never
    raise for one key: a key the store refuses gets an ``error`` outcome and the others
    proceed.
    """

    ref: StoreRef

    @property
    def precision(self) -> timedelta:
        """How much later than a listed last_modified an object may have been written
        (local: 1 us, S3 listings: 1 s). A listing never reports a time earlier than the
        write; the true write time is in ``[last_modified, last_modified + precision)``."""
        ...

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every object under the store except ``_cleanup/``, each exactly once.

        Exactly once: no key is yielded twice, and every key that existed for the whole
        listing is yielded. A key created or removed during the listing may or may not
        appear. Symlinks and special files (local) are not objects. Order is unspecified.
        """
        ...

    def probe_clock(self) -> ClockProbe:
        """Write and read back a probe under ``_cleanup/clock/`` (removed again, or the one
        object ``_cleanup/clock/probe`` overwritten each time where principals may not
        delete): the store's clock bracketed by ours (I15, I18). This writes: a dry run
        cannot do it."""
        ...

    def region(self) -> str:
        """The store's region as the store itself reports it (``local`` for directories)."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; False if it did (nothing written).

        Atomic: a reader sees no object or the whole of ``data``, never a prefix.
        Local: temp file + ``link`` (exclusive). S3: ``If-None-Match: *`` -- which some
        servers ignore; see :class:`ConditionalStore` (I12 relies on it only when
        honoured).
        """
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The object's whole content, or None if it does not exist."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (store-relative, reserved prefix included), sorted.

        For bookkeeping under ``_cleanup/`` (audit, lock); not the exactly-once listing.
        """
        ...

    def put(self, key: str, data: bytes) -> None:
        """Create or replace ``key``, atomically (all of ``data`` or the old object)."""
        ...

    def delete_key(self, key: str) -> None:
        """Remove ``key`` if present; absent is not an error. Unconditional, so meant for
        reserved-prefix bookkeeping only: user objects go through :meth:`quarantine` or
        :meth:`delete`, which check the etag."""
        ...

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        """The current state of each existing key in ``keys``; absent keys (and paths the
        store cannot hold) are left out. Read-only."""
        ...

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Move each object to :func:`quarantine_key` ``(plan_id, key)`` in this store (I11).

        Returns an outcome for every key of ``objs``: None (moved), ``missing`` (no
        object at the key), ``changed`` (size or etag no longer what ``objs`` says: not
        moved) or any other string: an error, not moved (``error: ...``, ``copy failed:
        ...``). Per key the move is atomic as far as the store allows: local ``rename``
        moves it whole; S3 copies (``CopySourceIfMatch``) then deletes, so a crash in
        between leaves the object in both places and a repeat copies again and deletes.
        Idempotent: calling it again for an already moved key reports ``missing`` and
        touches nothing.
        """
        ...

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Remove for good (``quarantine = none``). Same outcomes and per-key checks as
        :meth:`quarantine`; nothing is kept."""
        ...

    def restore(self, plan_id: str, key: str) -> str:
        """Move a quarantined object back to ``key``. Never overwrites: returns
        ``restored``, ``exists`` (an object was written at the key since: the quarantined
        copy stays), ``not-quarantined`` (no copy, e.g. already restored or purged) or,
        local, an ``error: ...`` string (S3 raises :class:`StoreError`). Idempotent."""
        ...

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        """Remove the quarantined copies of ``keys`` for good; return how many were removed.
        Keys without a copy are skipped (not errors), so a repeat returns 0. Only
        quarantine copies are touched, never an object at the key itself."""
        ...


C = TypeVar("C")


@runtime_checkable
class VersionedStore(Protocol):
    """Optional: a store with object versions (S3 with versioning), for the
    ``versioning`` quarantine mode, where a delete marker hides the object and the data
    stays as a noncurrent version. Obtain it with ``capability(store, VersionedStore)``."""

    def versioning_status(self) -> str:
        """``Enabled``, ``Suspended`` or ``""`` (never enabled). Only ``Enabled`` is safe:
        a delete on a Suspended bucket destroys the null version."""
        ...

    def marker_for(self, key: str, etag: str | None) -> str | None:
        """Read-only. The version id of the latest delete marker of ``key`` if it hides a
        version with ``etag`` (our own earlier, unjournaled delete), else None."""
        ...

    def delete_to_markers(self, objs: Sequence[ObjectInfo]
                          ) -> tuple[dict[str, str | None], dict[str, str]]:
        """Put a delete marker on each object (conditional on its etag where supported).
        Returns (outcome per key, as :meth:`Store.quarantine`; key -> marker version id
        for every key whose outcome is None)."""
        ...

    def remove_marker(self, key: str, marker: str) -> str:
        """Undo :meth:`delete_to_markers` for one key: remove ``marker`` only if it is still
        the latest version. ``restored``, ``exists`` (newer version written since: it stays
        current) or ``not-quarantined`` (marker gone)."""
        ...

    def purge_versions(self, key: str, marker: str) -> int:
        """Remove ``marker`` and the version it hides for good, only if the marker is still
        the latest; 1 if removed, 0 otherwise. Idempotent."""
        ...


@runtime_checkable
class ConditionalStore(Protocol):
    """Optional: a store that can say whether :meth:`Store.put_if_absent` is really
    exclusive. Without it the lock (I12) probes by creating a key twice."""

    def conditional_writes_honoured(self) -> bool:
        """True if a second ``put_if_absent`` of an existing key is refused."""
        ...


@runtime_checkable
class ReplaceableStore(Protocol):
    """Optional: compare-and-swap of one object (S3 ``If-Match`` on PutObject; local: an
    exclusive lock and an etag compare). The audit log's head object uses it so that its
    updates are linearizable (I14)."""

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        """Replace ``key`` only if its current etag is ``etag`` (``None``: only if absent);
        False if it changed (nothing written)."""
        ...


@runtime_checkable
class RetainingStore(Protocol):
    """Optional: write an object under retention that nobody can shorten (S3 Object Lock,
    compliance mode), for the audit anchor (I14)."""

    def retention_supported(self) -> bool:
        """True if the bucket has Object Lock enabled."""
        ...

    def put_retained(self, key: str, data: bytes, days: int) -> None:
        """Create ``key`` (if absent) locked for ``days`` days."""
        ...


@runtime_checkable
class StoreWrapper(Protocol):
    """A store that delegates to ``inner`` (dry run, fault injection). It decides how an
    inner capability is exposed: a dry run must never hand out the inner store's
    mutating methods unguarded."""

    inner: Store

    def wrap_capability(self, proto: Callable[..., C], cap: C) -> C | None:
        """This wrapper's view of ``cap`` (the inner store's ``proto`` capability), or
        None to hide it."""
        ...


def capability(store: object, proto: Callable[..., C]) -> C | None:
    """``store`` as ``proto`` (a runtime-checkable capability protocol) if it has that
    capability, else None. Looks through :class:`StoreWrapper` layers: the wrapper's
    ``wrap_capability`` view of the inner store's capability is returned, never the
    inner store itself.

    ``proto`` is typed as a callable, not ``type[C]``: mypy refuses a Protocol class
    where ``type[C]`` is expected (``type-abstract``, python/mypy#4717).
    """
    if isinstance(store, cast("type[Any]", proto)):
        return cast(C, store)
    if isinstance(store, StoreWrapper):
        cap = capability(store.inner, proto)
        return None if cap is None else store.wrap_capability(proto, cap)
    return None


@dataclass(frozen=True)
class ListingMeta:
    """Where a listing came from and how far its times can be trusted (the inventory
    file's metadata): ``listed_at`` by ``listed_at_clock`` (``local``, ``s3-inventory``,
    ``gcs-inventory`` or ``azure-inventory``), ``precision`` of last_modified, ``source``
    (``listing`` or ``<kind>-inventory:<manifest>``) and ``time_source``."""

    store: str
    listed_at: datetime
    listed_at_clock: str
    precision: timedelta
    source: str
    time_source: str


class ListingSource(Protocol):
    """Something that lists a store's objects for ``cleanup inventory``: a live listing
    (:meth:`Store.iter_objects`) or an S3 Inventory report. Each object at most once,
    keys store-relative, ``_cleanup/`` left out."""

    def meta(self) -> ListingMeta:
        ...

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Record batches of :func:`cleanup.formats.inventory_schema` rows."""
        ...


def quarantine_key(plan_id: str, key: str) -> str:
    """Where ``key`` goes in quarantine: inside the same store, so the same region (I13).

    The key must be a confined object key (I19: no ``..``, absolute path, NUL or reserved
    prefix), so a quarantine path can never point at a live object."""
    if not _PLAN_ID.fullmatch(plan_id):
        raise UsageError(f"plan id {plan_id[:80]!r} is not a sha256 hex digest")
    return f"{RESERVED_PREFIX}quarantine/{plan_id}/{confined(key, kind='s3')}"


_PLAN_ID = re.compile(r"[0-9a-f]{64}")


#: content checksum algorithms, strongest first (cleanup.retire compares the first one
#: both sides state)
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "md5", "crc64nvme", "crc32c", "crc32")


def etag_md5(etag: str | None) -> str | None:
    """The MD5 (lower-case hex) a single-part S3 ETag of 32 hex digits is, else None (a
    multipart ETag ``...-N`` is an MD5 of part MD5s, never of the content)."""
    if etag is None or len(etag) != 32:
        return None
    low = etag.lower()
    return low if all(c in "0123456789abcdef" for c in low) else None


@dataclass(frozen=True)
class Checksums:
    """An object's size and the whole-content checksums a store states for it, as
    lowercase hex by algorithm (:data:`CHECKSUM_ALGORITHMS`). Only checksums of the
    whole content appear: an S3 multipart ETag (``...-N``) or a COMPOSITE checksum
    (a checksum of part checksums) is never reported as one."""

    key: str
    size: int
    sums: dict[str, str]
    etag: str | None
    last_modified: datetime
    #: algorithms the object has whose values this answer does not carry (a listing
    #: names S3 additional checksums without their values): ask :meth:`checksums`
    more: tuple[str, ...] = ()


@runtime_checkable
class ChecksumStore(Protocol):
    """Optional, read-only: what copy verification (:mod:`cleanup.retire`) reads. S3:
    HeadObject with ChecksumMode=ENABLED; local: computed by reading the file."""

    def checksums(self, key: str) -> Checksums | None:
        """The object's size and checksums, or None if it does not exist."""
        ...

    def read_chunks(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        """The object's content in chunks of at most ``chunk_size`` bytes (bounded
        memory), or None if it does not exist."""
        ...


@runtime_checkable
class ListedChecksumStore(Protocol):
    """Optional, read-only: the checksums of many keys from a listing (S3: one
    ListObjectsV2 page per 1,000 keys; MD5 from single-part ETags, other algorithms
    named in ``more``)."""

    def list_checksums(self, keys: Sequence[str]) -> dict[str, Checksums] | None:
        """Each existing key's :class:`Checksums` (absent keys left out), or None when a
        listing would not be cheaper than asking key by key."""
        ...
