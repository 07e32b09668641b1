"""The audit log (I14): append-only, hash-chained entries under ``_cleanup/audit/``.

Entry ``n`` is ``_cleanup/audit/<n:012d>.json``, canonical JSON holding
``seq``, ``prev`` (the sha256 of entry n-1's bytes; 64 zeros for the first),
``time``, ``event``, ``actor``, ``plan_id`` and ``details``. Entries are
created with an exclusive create, so two writers never both write entry n,
and appear only whole (a reader never hashes a partial entry); ``append``
refuses to chain onto a newest entry that is empty or not a canonical entry.

``verify`` detects an edited, removed or reordered entry: an edit changes the
bytes whose hash the next entry holds; a removal leaves a gap in ``seq``; a
reordering breaks the ``prev`` chain. The newest entry has no successor, so
``verify`` also returns the head hash: compare it with one recorded earlier
(each plan journal keeps the head it saw) to detect truncation at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.core.canonical import canonical_json
from cleanup.core.names import I14
from cleanup.core.paths import RESERVED_PREFIX
from cleanup.core.timeutil import format_time
from cleanup.errors import CleanupError, InvariantViolation, StoreError

if TYPE_CHECKING:
    from cleanup.stores.base import Store

AUDIT_PREFIX = RESERVED_PREFIX + "audit/"
GENESIS = "0" * 64

APPEND_TIMEOUT_S = 120
_ENTRY_NAME = re.compile(r"[0-9]{12}\.json")
_ENTRY_FIELDS = frozenset({"seq", "prev", "time", "event", "actor", "principal", "plan_id",
                           "details"})
_HASH = re.compile(r"[0-9a-f]{64}")


def _key(seq: int) -> str:
    return f"{AUDIT_PREFIX}{seq:012d}.json"


def _actor() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def _is_temp(key: str) -> bool:
    """A local store's in-flight (or crash-orphaned) temp file: not an entry, never one."""
    return os.path.basename(key).startswith(".")


def _seq_of(key: str) -> int | None:
    name = os.path.basename(key)
    if not _ENTRY_NAME.fullmatch(name):
        return None
    return int(name[:12])


def _last_entry(store: Store) -> str | None:
    """The key of the newest entry, or None for an empty log."""
    keys = [k for k in store.list_keys(AUDIT_PREFIX) if not _is_temp(k)]
    for k in reversed(keys):
        if _seq_of(k) is not None:
            return k
    return None


def _chain_onto(key: str, data: bytes) -> tuple[int, str]:
    """(next seq, prev hash) after entry ``key``; refuse an entry that is not one.

    Hashing an empty, truncated or hand-edited predecessor would extend the chain
    from garbage, and ``verify`` would then blame the honest entry we write.
    """
    seq = _seq_of(key)
    problem = None
    try:
        entry = json.loads(data) if data else None
    except ValueError:
        entry = None
    if not data:
        problem = "is empty"
    elif not isinstance(entry, dict):
        problem = "is not a JSON audit entry"
    elif canonical_json(entry) != data:
        problem = "is not in canonical form"
    elif entry.get("seq") != seq:
        problem = f"holds seq {entry.get('seq')!r}, its name says {seq}"
    elif not _ENTRY_FIELDS <= entry.keys() or not _HASH.fullmatch(str(entry["prev"])):
        problem = "is not a complete audit entry"
    if problem is not None or seq is None:
        raise InvariantViolation(I14, f"the newest audit entry {key} {problem}; refusing to "
                                      "chain a new entry onto it",
                                 hint="run `cleanup audit verify STORE` and investigate "
                                      "before any further cleanup")
    return seq + 1, hashlib.sha256(data).hexdigest()


def append(store: Store, event: str, *, plan_id: str | None = None,
           details: dict[str, Any] | None = None, principal: str | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """Append one entry; retry on a concurrent writer taking the same sequence number.

    Entries are created with ``put_if_absent``, which (local: temp file + link;
    S3: ``If-None-Match: *``) only ever shows a complete entry. A writer that
    loses entry n chains onto the winner's entry n next, with a jittered pause,
    so many concurrent writers all get in, in some order.
    """
    deadline = time.monotonic() + APPEND_TIMEOUT_S
    last: str | None = None
    relist = True
    attempt = 0
    while True:
        if relist:
            last = _last_entry(store)
            relist = False
        seq, prev = 1, GENESIS
        if last is not None:
            data = store.get_bytes(last)
            if data is None:
                relist = True  # gone (or not yet visible) since the listing: look again
            else:
                seq, prev = _chain_onto(last, data)
        if not relist:
            entry = {"seq": seq, "prev": prev,
                     "time": format_time(now or datetime.now(UTC)), "event": event,
                     "actor": _actor(), "principal": principal, "plan_id": plan_id,
                     "details": details or {}}
            if store.put_if_absent(_key(seq), canonical_json(entry)):
                return entry
            last = _key(seq)  # somebody else's entry seq: chain onto it next
        attempt += 1
        if time.monotonic() > deadline:
            raise StoreError(f"could not append to the audit log in {APPEND_TIMEOUT_S}s "
                             f"({attempt} attempts): too many concurrent writers")
        time.sleep(random.uniform(0, min(0.25, 0.002 * 2 ** min(attempt, 8))))  # noqa: S311


def try_append(store: Store | None, event: str, **kwargs: Any) -> str | None:
    """Append, but never let an audit failure mask the error being reported.

    Returns a warning line if the entry could not be written.
    """
    if store is None:
        return None
    try:
        append(store, event, **kwargs)
    except (CleanupError, OSError) as exc:
        return f"warning: audit entry {event!r} not written: {exc}"
    return None


@dataclass(frozen=True)
class AuditReport:
    entries: int
    head: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "head": self.head, "ok": self.ok,
                "problems": self.problems}


def verify(store: Store) -> AuditReport:
    """Walk the chain from entry 1; report every break."""
    keys = [k for k in store.list_keys(AUDIT_PREFIX) if not _is_temp(k)]
    problems: list[str] = []
    prev = GENESIS
    expected = 1
    for key in keys:
        name = os.path.basename(key)
        try:
            seq = int(name.split(".")[0])
        except ValueError:
            problems.append(f"{key}: not an audit entry name")
            continue
        if seq != expected:
            problems.append(f"entry {expected} is missing (next present: {seq})"
                            if seq > expected else f"{key}: out of order")
        data = store.get_bytes(key) or b""
        try:
            entry = json.loads(data)
        except ValueError:
            problems.append(f"{key}: not JSON")
            entry = {}
        if isinstance(entry, dict):
            if entry.get("seq") != seq:
                problems.append(f"{key}: holds seq {entry.get('seq')}, expected {seq}")
            if entry.get("prev") != prev:
                problems.append(f"{key}: prev hash does not match entry {seq - 1} "
                                "(an earlier entry was edited, removed or reordered)")
            if canonical_json(entry) != data:
                problems.append(f"{key}: not in canonical form (edited by hand?)")
        prev = hashlib.sha256(data).hexdigest()
        expected = seq + 1
    return AuditReport(len(keys), prev, problems)


def require_intact(store: Store) -> AuditReport:
    rep = verify(store)
    if not rep.ok:
        raise InvariantViolation(I14, "; ".join(rep.problems[:3]),
                                 hint="the audit log was tampered with; investigate before "
                                      "any further cleanup")
    return rep
