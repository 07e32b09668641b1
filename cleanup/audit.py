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
from collections.abc import Sequence
from contextvars import ContextVar
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
#: detached SSHSIG signatures of entries (namespace cleanup-audit) by their principal
SIG_PREFIX = RESERVED_PREFIX + "audit-sig/"
#: in an anchor store: copies of other stores' heads, one object per sequence number
ANCHOR_PREFIX = RESERVED_PREFIX + "audit-anchor/"
ANCHOR_RETENTION_DAYS = 400
#: the newest entry's seq and hash, updated by compare-and-swap after every append (I14)
HEAD_KEY = RESERVED_PREFIX + "audit-head.json"
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


_ANCHOR: ContextVar[Store | None] = ContextVar("cleanup_audit_anchor", default=None)


def use_anchor(anchor: Store | None) -> None:
    """Copy the head to ``anchor`` (a second store) after every append of this process
    (``--anchor`` / ``[audit] anchor`` in the runner's cleanup.toml), with S3 Object Lock
    retention where the anchor bucket has it (I14)."""
    _ANCHOR.set(anchor)


def _anchor_key(store: Store, seq: int) -> str:
    sid = hashlib.sha256(store.ref.url.encode()).hexdigest()[:16]
    return f"{ANCHOR_PREFIX}{sid}/{seq:012d}.json"


def _write_anchor(store: Store, seq: int, digest: str) -> None:
    from cleanup.stores.base import RetainingStore, capability

    anchor = _ANCHOR.get()
    if anchor is None:
        return
    body = canonical_json({"store": store.ref.url, "seq": seq, "hash": digest,
                           "time": format_time(datetime.now(UTC))})
    locked = capability(anchor, RetainingStore)
    if locked is not None and locked.retention_supported():
        locked.put_retained(_anchor_key(store, seq), body, ANCHOR_RETENTION_DAYS)
    else:
        anchor.put_if_absent(_anchor_key(store, seq), body)


def _sign_entry(store: Store, seq: int, principal: str, data: bytes, key: str) -> None:
    """The acting principal's SSHSIG over the entry's bytes (namespace cleanup-audit)."""
    from cleanup.signing import NS_AUDIT, sign_bytes

    store.put_if_absent(f"{SIG_PREFIX}{seq:012d}.{principal}.sig",
                        sign_bytes(data, key, NS_AUDIT))


def append(store: Store, event: str, *, plan_id: str | None = None,
           details: dict[str, Any] | None = None, principal: str | None = None,
           now: datetime | None = None, key: str | None = None) -> dict[str, Any]:
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
            data = canonical_json(entry)
            if store.put_if_absent(_key(seq), data):
                if key is not None and principal is not None:
                    _sign_entry(store, seq, principal, data, key)
                digest = hashlib.sha256(data).hexdigest()
                _advance_head(store, seq, digest)
                _write_anchor(store, seq, digest)
                return entry
            last = _key(seq)  # somebody else's entry seq: chain onto it next
        attempt += 1
        if time.monotonic() > deadline:
            raise StoreError(f"could not append to the audit log in {APPEND_TIMEOUT_S}s "
                             f"({attempt} attempts): too many concurrent writers")
        time.sleep(random.uniform(0, min(0.25, 0.002 * 2 ** min(attempt, 8))))  # noqa: S311


def head_of(entry: dict[str, Any]) -> str:
    """``SEQ:SHA256`` of an appended entry: what a record that saw it carries."""
    return f"{entry['seq']}:{hashlib.sha256(canonical_json(entry)).hexdigest()}"


def read_head(store: Store) -> tuple[int, str, str | None] | None:
    """(seq, hash, etag) of the head object, or None if there is none."""
    data = store.get_bytes(HEAD_KEY)
    if data is None:
        return None
    try:
        doc = json.loads(data)
        seq, digest = int(doc["seq"]), str(doc["hash"])
    except (ValueError, KeyError, TypeError):
        return (-1, "", None)
    info = store.current([HEAD_KEY]).get(HEAD_KEY)
    return seq, digest, info.etag if info else None


def _advance_head(store: Store, seq: int, digest: str) -> None:
    """Move the head object forward to (seq, digest), never backwards: compare-and-swap
    where the store has it (If-Match), so concurrent appenders cannot lose an update."""
    from cleanup.stores.base import ReplaceableStore, capability

    cas = capability(store, ReplaceableStore)
    body = canonical_json({"seq": seq, "hash": digest})
    for _ in range(50):
        cur = read_head(store)
        if cur is not None and cur[0] >= seq:
            return
        etag = cur[2] if cur is not None else None
        if cas is None:
            store.put(HEAD_KEY, body)
            return
        if cas.put_if_match(HEAD_KEY, body, etag):
            return
        time.sleep(random.uniform(0, 0.05))  # noqa: S311
    raise StoreError("could not advance the audit head: too many concurrent writers")


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
    last_seq: int = 0
    #: challenges that a ``witness-consumed`` entry names (I8: used, whatever else says)
    consumed: frozenset[str] = frozenset()

    @property
    def head_ref(self) -> str:
        """``SEQ:SHA256`` of the newest entry (``0:000...`` for an empty log)."""
        return f"{self.last_seq}:{self.head}"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "head": self.head, "ok": self.ok,
                "problems": self.problems, "head_ref": self.head_ref}


def verify(store: Store, referenced: Sequence[str] = (), *, anchor: Store | None = None,
           allowed_signers: str | None = None) -> AuditReport:
    """Walk the chain from entry 1; report every break. Then the anchors of its end
    (I14): the head object and every ``SEQ:SHA256`` head that a record saw
    (``referenced``) must be entries of this chain -- a log truncated, rewritten
    shorter or removed fails here."""
    keys = [k for k in store.list_keys(AUDIT_PREFIX) if not _is_temp(k)]
    problems: list[str] = []
    hashes: dict[int, str] = {}
    consumed: set[str] = set()
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
            details = entry.get("details")
            if entry.get("event") == "witness-consumed" and isinstance(details, dict):
                consumed.add(str(details.get("challenge")))
        prev = hashlib.sha256(data).hexdigest()
        hashes[seq] = prev
        expected = seq + 1
    last = max(hashes, default=0)
    head = read_head(store)
    if head is not None and (head[0] < 1 or hashes.get(head[0]) != head[1]):
        problems.append(f"the head object names entry {head[0]}, which "
                        + ("is not in the log (truncated or removed)" if head[0] not in hashes
                           else "has other bytes (rewritten)"))
    for ref in referenced:
        seq_s, _, digest = ref.partition(":")
        if not seq_s.isdigit() or int(seq_s) == 0:
            continue
        if hashes.get(int(seq_s)) != digest:
            problems.append(f"a record saw audit entry {seq_s} ({digest[:12]}...), which "
                            + ("is not in the log (truncated or removed)"
                               if int(seq_s) not in hashes else "has other bytes now"))
    if anchor is not None:
        problems += _check_anchor(store, anchor, hashes)
    if allowed_signers is not None:
        problems += _check_signatures(store, keys, allowed_signers)
    return AuditReport(len(keys), prev, problems, last, frozenset(consumed))


def _check_anchor(store: Store, anchor: Store, hashes: dict[int, str]) -> list[str]:
    """Every head copied to the anchor store must be an entry of this log, as it was."""
    out = []
    prefix = _anchor_key(store, 0).rsplit("/", 1)[0] + "/"
    for k in anchor.list_keys(prefix):
        try:
            doc = json.loads(anchor.get_bytes(k) or b"{}")
            seq, digest = int(doc["seq"]), str(doc["hash"])
        except (ValueError, KeyError, TypeError):
            out.append(f"anchor {k} is not an anchor record")
            continue
        if hashes.get(seq) != digest:
            out.append(f"the anchor holds entry {seq} ({digest[:12]}...), which "
                       + ("is not in the log (truncated or removed)" if seq not in hashes
                          else "has other bytes now"))
    return out


def _check_signatures(store: Store, keys: list[str], allowed: str) -> list[str]:
    """An entry naming a principal must carry that principal's valid signature."""
    import tempfile

    from cleanup.signing import NS_AUDIT, ssh_verify

    out = []
    with tempfile.TemporaryDirectory(prefix="cleanup-audit-") as d:
        for k in keys:
            data = store.get_bytes(k) or b""
            try:
                entry = json.loads(data)
            except ValueError:
                continue
            who = entry.get("principal") if isinstance(entry, dict) else None
            seq = entry.get("seq") if isinstance(entry, dict) else None
            if not who or not isinstance(seq, int):
                continue
            sig = store.get_bytes(f"{SIG_PREFIX}{seq:012d}.{who}.sig")
            if sig is None:
                out.append(f"entry {seq} names {who} but carries no signature of theirs")
                continue
            doc, sp = os.path.join(d, f"{seq}.json"), os.path.join(d, f"{seq}.sig")
            with open(doc, "wb") as fh:
                fh.write(data)
            with open(sp, "wb") as fh:
                fh.write(sig)
            state, _f, detail = ssh_verify(doc, sp, allowed, str(who), NS_AUDIT, None)
            if state != "valid":
                out.append(f"entry {seq}: the signature of {who} is {state} ({detail})")
    return out


def require_intact(store: Store, referenced: Sequence[str] = ()) -> AuditReport:
    rep = verify(store, referenced, anchor=_ANCHOR.get())
    if not rep.ok:
        raise InvariantViolation(I14, "; ".join(rep.problems[:3]),
                                 hint="the audit log was tampered with; investigate before "
                                      "any further cleanup")
    return rep
