"""The audit log (I14): append-only, hash-chained entries under ``_cleanup/audit/``.

Entry ``n`` is ``_cleanup/audit/<n:012d>.json``, canonical JSON holding
``seq``, ``prev`` (the sha256 of entry n-1's bytes; 64 zeros for the first),
``time``, ``event``, ``actor``, ``plan_id`` and ``details``. Entries are
created with an exclusive create, so two writers never both write entry n.

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
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.core.canonical import canonical_json
from cleanup.core.paths import RESERVED_PREFIX
from cleanup.core.timeutil import format_time
from cleanup.errors import CleanupError, InvariantViolation, StoreError

if TYPE_CHECKING:
    from cleanup.stores.base import Store

AUDIT_PREFIX = RESERVED_PREFIX + "audit/"
GENESIS = "0" * 64
I14 = "I14 audit"


def _key(seq: int) -> str:
    return f"{AUDIT_PREFIX}{seq:012d}.json"


def _actor() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def append(store: Store, event: str, *, plan_id: str | None = None,
           details: dict[str, Any] | None = None, principal: str | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """Append one entry; retry on a concurrent writer taking the same sequence number."""
    for _attempt in range(20):
        keys = store.list_keys(AUDIT_PREFIX)
        seq, prev = 1, GENESIS
        if keys:
            last = keys[-1]
            data = store.get_bytes(last)
            if data is None:
                continue
            prev = hashlib.sha256(data).hexdigest()
            seq = int(os.path.basename(last).split(".")[0]) + 1
        entry = {"seq": seq, "prev": prev, "time": format_time(now or datetime.now(UTC)),
                 "event": event, "actor": _actor(), "principal": principal,
                 "plan_id": plan_id, "details": details or {}}
        if store.put_if_absent(_key(seq), canonical_json(entry)):
            return entry
    raise StoreError("could not append to the audit log: too many concurrent writers")


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
    keys = store.list_keys(AUDIT_PREFIX)
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
