"""The store lock (I12): one execution per store at a time.

A lease object at ``_cleanup/lock`` created with an exclusive create (local
``O_EXCL``, S3 ``If-None-Match: *``) holds executor, plan id, host, pid and
expiry; the holder refreshes it while running. Some S3-compatible servers
silently ignore conditional headers (``rclone serve s3`` does): before relying
on the lock we create a probe key twice, and a store where the second create
succeeds is refused unless the plan records
``unsafe_store_without_conditional_writes``.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup.core.canonical import canonical_json
from cleanup.core.names import I12
from cleanup.core.paths import RESERVED_PREFIX
from cleanup.core.timeutil import format_time, parse_time
from cleanup.errors import InvariantViolation, LockHeld, UsageError

if TYPE_CHECKING:
    from cleanup.stores.base import Store

LOCK_KEY = RESERVED_PREFIX + "lock"

DEFAULT_TTL = timedelta(minutes=10)


def probe_conditional_writes(store: Store) -> bool:
    """True if the store refuses a second exclusive create of the same key: as the store
    states it (:class:`ConditionalStore`), else by creating a probe key twice."""
    from cleanup.stores.base import ConditionalStore, capability

    known = capability(store, ConditionalStore)
    if known is not None:
        return known.conditional_writes_honoured()
    key = f"{RESERVED_PREFIX}probe/conditional-{uuid.uuid4().hex}"
    try:
        first = store.put_if_absent(key, b"1")
        second = store.put_if_absent(key, b"2")
    finally:
        store.delete_key(key)
    return first and not second


@dataclass
class Lock:
    store: Store
    holder: dict[str, Any]
    ttl: timedelta
    refreshed_at: datetime

    @classmethod
    def acquire(cls, store: Store, *, executor: str, plan_id: str, ttl: timedelta = DEFAULT_TTL,
                break_lock: bool = False, unsafe_store: bool = False,
                now: datetime | None = None) -> tuple[Lock, dict[str, Any] | None]:
        """Take the lease; return (lock, the broken previous holder or None)."""
        if not probe_conditional_writes(store):
            if not unsafe_store:
                raise InvariantViolation(
                    I12, f"store {store.ref.url} ignores conditional creates "
                         "(If-None-Match: *), so its lock cannot exclude a second execution",
                    hint="use a store that enforces them, or re-plan with "
                         "--unsafe-store-without-conditional-writes (shown to reviewers) and "
                         "make sure only one executor runs")
        now = now or datetime.now(UTC)
        holder = {"executor": executor, "plan_id": plan_id, "host": socket.gethostname(),
                  "pid": os.getpid(), "token": uuid.uuid4().hex,
                  "acquired_at": format_time(now), "expires_at": format_time(now + ttl)}
        broken = None
        if not store.put_if_absent(LOCK_KEY, canonical_json(holder)):
            current = read_holder(store)
            expires = _expiry(current)
            if _holder_is_dead(current):
                # Our own host, and the holding process is gone (a crash or kill -9):
                # the lease protects nobody, so resuming may take it over (audited).
                store.delete_key(LOCK_KEY)
                if not store.put_if_absent(LOCK_KEY, canonical_json(holder)):
                    raise LockHeld(f"store {store.ref.url} was locked by another executor "
                                   "while recovering a dead holder's lock")
                return cls(store, holder, ttl, now), {**current, "reason": "holder process gone"}
            if expires is not None and expires > now:
                raise LockHeld(
                    f"store {store.ref.url} is locked by {current.get('executor')} "
                    f"(plan {str(current.get('plan_id'))[:16]}..., host {current.get('host')}, "
                    f"pid {current.get('pid')}) until {format_time(expires)}",
                    hint="wait for that execution to finish; a lease that has expired can be "
                         "taken over with --break-lock")
            if not break_lock:
                raise LockHeld(
                    f"store {store.ref.url} holds an expired lock of {current.get('executor')} "
                    f"(expired {current.get('expires_at')})",
                    hint="make sure that execution is gone, then pass --break-lock (audited)")
            store.delete_key(LOCK_KEY)
            broken = current
            if not store.put_if_absent(LOCK_KEY, canonical_json(holder)):
                raise LockHeld(f"store {store.ref.url} was locked by another executor while "
                               "breaking the expired lock")
        return cls(store, holder, ttl, now), broken

    def refresh(self, now: datetime | None = None) -> None:
        """Extend the lease if a third of it has passed; fail if someone took it."""
        now = now or datetime.now(UTC)
        if now - self.refreshed_at < self.ttl / 3:
            return
        current = read_holder(self.store)
        if current.get("token") != self.holder["token"]:
            raise LockHeld(f"lost the lock on {self.store.ref.url} to "
                           f"{current.get('executor')}: stopping")
        self.holder["expires_at"] = format_time(now + self.ttl)
        self.store.put(LOCK_KEY, canonical_json(self.holder))
        self.refreshed_at = now

    def release(self) -> None:
        current = read_holder(self.store)
        if current.get("token") == self.holder["token"]:
            self.store.delete_key(LOCK_KEY)


def read_holder(store: Store) -> dict[str, Any]:
    data = store.get_bytes(LOCK_KEY)
    if data is None:
        return {}
    try:
        doc = json.loads(data)
    except ValueError:
        return {"executor": "?", "expires_at": None, "raw": data[:200].decode("utf-8", "replace")}
    return doc if isinstance(doc, dict) else {}


def _holder_is_dead(holder: dict[str, Any]) -> bool:
    """True only when the holder ran on this host and its process no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False


def _expiry(holder: dict[str, Any]) -> datetime | None:
    try:
        return parse_time(str(holder.get("expires_at")))
    except UsageError:
        return None
