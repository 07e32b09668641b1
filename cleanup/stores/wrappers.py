"""Stores that wrap a store: :class:`DryRunStore` and :class:`FaultStore`.

Both implement :class:`~cleanup.stores.base.Store` by delegating to ``inner`` and are
:class:`~cleanup.stores.base.StoreWrapper` s, so :func:`~cleanup.stores.base.capability`
finds an inner store's optional capabilities through them -- as the wrapper's own view
of the capability (a dry run's versioned view mutates nothing either).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar, cast

from cleanup.errors import StoreError
from cleanup.stores.base import (
    ChecksumStore,
    ClockProbe,
    ConditionalStore,
    ListedChecksumStore,
    ObjectInfo,
    VersionedStore,
    quarantine_key,
)

if TYPE_CHECKING:
    from cleanup.stores.base import Store

C = TypeVar("C")


def _would_remove(store: Store, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
    """The outcome quarantine/delete would report now, by the Store contract's checks:
    ``missing``, ``changed`` (size, or etag where one was listed) or None."""
    cur = store.current([o.key for o in objs])
    out: dict[str, str | None] = {}
    for o in objs:
        c = cur.get(o.key)
        if c is None:
            out[o.key] = "missing"
        elif c.size != o.size or (o.etag is not None and c.etag != o.etag):
            out[o.key] = "changed"
        else:
            out[o.key] = None
    return out


class DryRunStore:
    """Reads pass through to ``inner``; every mutation reports what it would do and
    touches nothing. ``actions`` records each would-be mutation as
    ``(method, key or plan id, ...)``.

    The reports follow the Store contract, computed from reads of the store as it is
    now (there is no overlay: a read after a would-be write sees the unchanged store).
    :meth:`probe_clock` writes by nature and raises :class:`StoreError`.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.ref = inner.ref
        self.actions: list[tuple[str, ...]] = []

    # --- reads ---------------------------------------------------------------------

    @property
    def precision(self) -> timedelta:
        return self.inner.precision

    def iter_objects(self) -> Iterator[ObjectInfo]:
        return self.inner.iter_objects()

    def region(self) -> str:
        return self.inner.region()

    def get_bytes(self, key: str) -> bytes | None:
        return self.inner.get_bytes(key)

    def list_keys(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        return self.inner.current(keys)

    # --- mutations: reported, never done --------------------------------------------

    def probe_clock(self) -> ClockProbe:
        raise StoreError(f"{self.ref.url}: a dry run cannot probe the store clock "
                         "(the probe writes an object)")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.actions.append(("put_if_absent", key))
        return not self.inner.current([key])

    def put(self, key: str, data: bytes) -> None:
        self.actions.append(("put", key))

    def delete_key(self, key: str) -> None:
        self.actions.append(("delete_key", key))

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        out = _would_remove(self.inner, objs)
        self.actions += [("quarantine", plan_id, k) for k, err in out.items() if err is None]
        return out

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        out = _would_remove(self.inner, objs)
        self.actions += [("delete", k) for k, err in out.items() if err is None]
        return out

    def restore(self, plan_id: str, key: str) -> str:
        q = quarantine_key(plan_id, key)
        cur = self.inner.current([q, key])
        if q not in cur:
            return "not-quarantined"
        if key in cur:
            return "exists"
        self.actions.append(("restore", plan_id, key))
        return "restored"

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        found = self.inner.current([quarantine_key(plan_id, k) for k in keys])
        self.actions += [("purge", plan_id, k) for k in keys
                         if quarantine_key(plan_id, k) in found]
        return len(found)

    def wrap_capability(self, proto: Callable[..., C], cap: C) -> C | None:
        if proto is VersionedStore:
            return cast(C, _DryRunVersioned(self, cast(VersionedStore, cap)))
        if proto in (ConditionalStore, ChecksumStore, ListedChecksumStore):
            return cap  # a statement about the store, or reads: no mutation
        return None  # an unknown capability might mutate: hidden


class _DryRunVersioned:
    """A dry run's :class:`VersionedStore`: reads pass through, mutations are reported.

    Without reading version listings directly, ``remove_marker``/``purge_versions``
    answer from whether the key currently has an object (hidden by a marker or not)."""

    def __init__(self, dry: DryRunStore, inner: VersionedStore) -> None:
        self.dry, self.inner = dry, inner

    def versioning_status(self) -> str:
        return self.inner.versioning_status()

    def marker_for(self, key: str, etag: str | None) -> str | None:
        return self.inner.marker_for(key, etag)

    def delete_to_markers(self, objs: Sequence[ObjectInfo]
                          ) -> tuple[dict[str, str | None], dict[str, str]]:
        out = _would_remove(self.dry.inner, objs)
        self.dry.actions += [("delete_to_marker", k) for k, err in out.items() if err is None]
        return out, {}

    def remove_marker(self, key: str, marker: str) -> str:
        if self.dry.inner.current([key]):
            return "exists"
        self.dry.actions.append(("remove_marker", key, marker))
        return "restored"

    def purge_versions(self, key: str, marker: str) -> int:
        if self.dry.inner.current([key]):
            return 0
        self.dry.actions.append(("purge_versions", key, marker))
        return 1


class InjectedFault(StoreError):
    """Raised by :class:`FaultStore` where it was told to fail."""


Fault = str | BaseException


class FaultStore:
    """``inner`` with failures injected, for tests.

    ``fail_calls``: method name -> the 1-based call numbers of that method that raise
    (:class:`InjectedFault`, or ``exc(method, n)``) before reaching ``inner``.
    ``key_faults``: key -> a fault applied when a batch mutation (quarantine, delete,
    delete_to_markers) or restore reaches that key. A string is reported as the key's
    outcome and the object is left alone; an exception is raised at that point, after
    the keys before it in the same call were applied to ``inner`` -- a crash in the
    middle of a batch. ``calls`` counts every method call.
    """

    def __init__(self, inner: Store, *, fail_calls: Mapping[str, Collection[int]] | None = None,
                 key_faults: Mapping[str, Fault] | None = None,
                 exc: Callable[[str, int], BaseException] | None = None) -> None:
        self.inner = inner
        self.ref = inner.ref
        self.fail_calls = dict(fail_calls or {})
        self.key_faults = dict(key_faults or {})
        self.exc = exc or (lambda m, n: InjectedFault(f"injected fault: {m} call {n}"))
        self.calls: Counter[str] = Counter()

    def _tick(self, method: str) -> None:
        self.calls[method] += 1
        n = self.calls[method]
        if n in self.fail_calls.get(method, ()):
            raise self.exc(method, n)

    def _per_key(self, method: str, objs: Sequence[ObjectInfo],
                 apply: Callable[[Sequence[ObjectInfo]], dict[str, str | None]]
                 ) -> dict[str, str | None]:
        """Apply ``apply`` to runs of ``objs`` between faulted keys, in order."""
        self._tick(method)
        out: dict[str, str | None] = {}
        run: list[ObjectInfo] = []
        for o in objs:
            fault = self.key_faults.get(o.key)
            if fault is None:
                run.append(o)
                continue
            if run:
                out.update(apply(run))
                run = []
            if isinstance(fault, BaseException):
                raise fault
            out[o.key] = fault
        if run:
            out.update(apply(run))
        return out

    @property
    def precision(self) -> timedelta:
        return self.inner.precision

    def iter_objects(self) -> Iterator[ObjectInfo]:
        self._tick("iter_objects")
        return self.inner.iter_objects()

    def probe_clock(self) -> ClockProbe:
        self._tick("probe_clock")
        return self.inner.probe_clock()

    def region(self) -> str:
        self._tick("region")
        return self.inner.region()

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._tick("put_if_absent")
        return self.inner.put_if_absent(key, data)

    def get_bytes(self, key: str) -> bytes | None:
        self._tick("get_bytes")
        return self.inner.get_bytes(key)

    def list_keys(self, prefix: str) -> list[str]:
        self._tick("list_keys")
        return self.inner.list_keys(prefix)

    def put(self, key: str, data: bytes) -> None:
        self._tick("put")
        self.inner.put(key, data)

    def delete_key(self, key: str) -> None:
        self._tick("delete_key")
        self.inner.delete_key(key)

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        self._tick("current")
        return self.inner.current(keys)

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        return self._per_key("quarantine", objs, lambda run: self.inner.quarantine(plan_id, run))

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        return self._per_key("delete", objs, self.inner.delete)

    def restore(self, plan_id: str, key: str) -> str:
        self._tick("restore")
        fault = self.key_faults.get(key)
        if isinstance(fault, BaseException):
            raise fault
        return fault if fault is not None else self.inner.restore(plan_id, key)

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        self._tick("purge")
        return self.inner.purge(plan_id, keys)

    def wrap_capability(self, proto: Callable[..., C], cap: C) -> C | None:
        if proto is VersionedStore:
            return cast(C, _FaultVersioned(self, cast(VersionedStore, cap)))
        return cap  # faults are injected into the Store methods only


class _FaultVersioned:
    """A :class:`FaultStore`'s :class:`VersionedStore`: the same call counting and
    ``fail_calls``; ``key_faults`` apply to ``delete_to_markers``."""

    def __init__(self, fault: FaultStore, inner: VersionedStore) -> None:
        self.fault, self.inner = fault, inner

    def versioning_status(self) -> str:
        self.fault._tick("versioning_status")
        return self.inner.versioning_status()

    def marker_for(self, key: str, etag: str | None) -> str | None:
        self.fault._tick("marker_for")
        return self.inner.marker_for(key, etag)

    def delete_to_markers(self, objs: Sequence[ObjectInfo]
                          ) -> tuple[dict[str, str | None], dict[str, str]]:
        markers: dict[str, str] = {}

        def apply(run: Sequence[ObjectInfo]) -> dict[str, str | None]:
            out, new = self.inner.delete_to_markers(run)
            markers.update(new)
            return out

        return self.fault._per_key("delete_to_markers", objs, apply), markers

    def remove_marker(self, key: str, marker: str) -> str:
        self.fault._tick("remove_marker")
        return self.inner.remove_marker(key, marker)

    def purge_versions(self, key: str, marker: str) -> int:
        self.fault._tick("purge_versions")
        return self.inner.purge_versions(key, marker)
