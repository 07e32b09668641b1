"""The plan as the store holds it: ``_cleanup/plans/<plan-id>/`` (I10, I18, I19).

Local plan directories are caches. What gates deletion lives in the store, created
with conditional creates so that nothing is replaced:

- ``plan.json``, ``manifest.parquet``, ``signatures/author.json`` (+ ``.sig``),
  ``signatures/approvals/NAME.json`` (+ ``.sig``): published by ``plan`` and
  ``approve``; the store's Last-Modified of each signature is the moment it counts from
  (I18).
- ``challenges/ACTION.STAGE.NONCE.json``: what a runner publishes when it starts an
  ``execute`` or ``purge``; ``...witness.NAME.json`` (+ ``.sig``) a witness's signature
  over it; ``...consumed`` the one audit entry that used it (I8).
- ``stages/N/started.json``, ``finished.json``, ``halted.json``, ``purged.SEQ.json`` and
  ``stages/N/batches/B.json`` (the keys each batch removed and where to): written by
  execution only, each signed by the runner that wrote it (a ``signature`` field: an
  SSHSIG in the ``cleanup-record`` namespace over the rest of the record). The stage
  gate, halts, retention, resume and purge count only records signed by a principal
  holding the runner role in the verified trust root, naming this plan, this stage (and
  batch) and this event: a record a person created with a write grant under
  ``_cleanup/plans/`` (or copied from another plan) does not move a stage on (I10, I11).
  Holds are measured with the store's clock.

Every key is joined through :func:`key` (one join: no ``..``, no absolute path, no NUL).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.core.canonical import canonical_json
from cleanup.core.names import I6, I10, I19
from cleanup.core.paths import RESERVED_PREFIX
from cleanup.core.timeutil import format_time
from cleanup.errors import InvariantViolation, UsageError
from cleanup.model import StageState

if TYPE_CHECKING:
    from cleanup.stores.base import Store

PLANS_PREFIX = RESERVED_PREFIX + "plans/"
ACTIONS = ("execute", "restore", "purge")
_ID = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"^[A-Za-z0-9._@+~-]{1,128}$")


def check_plan_id(plan_id: str) -> str:
    if not _ID.match(plan_id):
        raise UsageError(f"plan id {plan_id!r} is not 64 lowercase hex digits")
    return plan_id


def key(plan_id: str, *parts: str) -> str:
    """The one join of a published plan's keys (I19): each part a plain name."""
    check_plan_id(plan_id)
    for p in parts:
        if not _PART.match(p) or p in (".", ".."):
            raise InvariantViolation(I19, f"refusing store path part {p!r} under the plan "
                                          f"{plan_id[:16]}...")
    return PLANS_PREFIX + "/".join((plan_id, *parts))


@dataclass(frozen=True)
class Record:
    """An object of the published plan and the store's time of recording it."""

    key: str
    data: bytes
    recorded_at: datetime

    def doc(self) -> dict[str, Any]:
        try:
            out = json.loads(self.data)
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}


@dataclass(frozen=True)
class RecordTrust:
    """Who may write a plan's stage records: the runners of the verified trust root
    (``allowed``: its allowed_signers file), and -- for a run that writes -- the runner
    signing now (``principal`` with ``key``)."""

    allowed: str
    is_runner: Callable[[str], bool]
    principal: str | None = None
    key: str | None = None


class Published:
    """One plan's records in one store. With ``trust`` the stage records are signed when
    written and checked when read; without it (``cleanup status`` with no pinned trust
    root, restore -- which only ever moves objects back) they are read as they are."""

    def __init__(self, store: Store, plan_id: str, trust: RecordTrust | None = None) -> None:
        self.store = store
        self.plan_id = check_plan_id(plan_id)
        self.trust = trust
        self._checked: dict[tuple[str, bytes], bool] = {}

    def key(self, *parts: str) -> str:
        return key(self.plan_id, *parts)

    # ------------------------------------------------------------------ writing

    def create(self, parts: tuple[str, ...], data: bytes) -> bool:
        """Create the object once; True if created now, False if the same bytes were
        there already. Different bytes under the same name are refused: published
        records are never replaced."""
        k = self.key(*parts)
        if self.store.put_if_absent(k, data):
            return True
        if self.store.get_bytes(k) == data:
            return False
        raise UsageError(f"{k} exists in the store with other content; published records "
                         "are never replaced")

    def create_doc(self, parts: tuple[str, ...], doc: dict[str, Any]) -> bool:
        return self.create(parts, canonical_json(doc))

    def publish_dir(self, plan_dir: str) -> list[str]:
        """Publish plan.json, the manifest and every signature of a local bundle."""
        with open(os.path.join(plan_dir, "plan.json"), "rb") as fh:
            raw = fh.read()
        if hashlib.sha256(raw).hexdigest() != self.plan_id:
            raise InvariantViolation(I6, "plan.json does not hash to the plan id")
        done = []
        for rel in _bundle_files(plan_dir):
            with open(os.path.join(plan_dir, *rel), "rb") as fh:
                target = _published_name(plan_dir, rel)
                if self.create(target, fh.read()):
                    done.append("/".join(target))
        return done

    # ------------------------------------------------------------------ reading

    def get(self, *parts: str) -> Record | None:
        k = self.key(*parts)
        data = self.store.get_bytes(k)
        if data is None:
            return None
        info = self.store.current([k]).get(k)
        if info is None:
            return None
        return Record(k, data, info.last_modified.astimezone(UTC))

    def names(self, *parts: str) -> list[str]:
        """The plain names directly under ``parts`` (one level)."""
        prefix = self.key(*parts) + "/"
        out = set()
        for k in self.store.list_keys(prefix):
            rest = k[len(prefix):]
            if rest and "/" not in rest and not rest.startswith("."):
                out.add(rest)
        return sorted(out)

    def subdirs(self, *parts: str) -> list[str]:
        """The plain names of the folders directly under ``parts``."""
        prefix = self.key(*parts) + "/"
        out = set()
        for k in self.store.list_keys(prefix):
            rest = k[len(prefix):]
            if "/" in rest and not rest.startswith("."):
                out.add(rest.split("/", 1)[0])
        return sorted(out)

    def fetch(self, dest: str) -> dict[str, datetime]:
        """Copy the published bundle into ``dest`` (a private directory); return each
        signature file's store record time by its local path (I18). plan.json must hash
        to the plan id; the manifest is checked against plan.json by the bundle."""
        plan = self.get("plan.json")
        if plan is None:
            raise InvariantViolation(I6, f"plan {self.plan_id[:16]}... is not published in "
                                         f"{self.store.ref.url}: its plan.json was changed "
                                         "since, or it was never published",
                                     hint="`cleanup publish PLAN_DIR` publishes an unchanged "
                                          "plan (the plan command does it); a changed plan "
                                          "needs a new plan and new sign-off")
        if hashlib.sha256(plan.data).hexdigest() != self.plan_id:
            raise InvariantViolation(I6, "the published plan.json does not hash to its id")
        times: dict[str, datetime] = {}
        _write_private(dest, ("plan.json",), plan.data)
        manifest = self.store.get_bytes(self.key("manifest.parquet"))
        if manifest is not None:
            _write_private(dest, ("manifest.parquet",), manifest)
        for rel in (("signatures", "author.json"), ("signatures", "author.sig")):
            rec = self.get(*rel)
            if rec is not None:
                times[_write_private(dest, rel, rec.data)] = rec.recorded_at
        for name in self.names("signatures", "approvals"):
            rec = self.get("signatures", "approvals", name)
            if rec is not None:
                times[_write_private(dest, ("signatures", "approvals", name), rec.data)] = \
                    rec.recorded_at
        return times

    # ------------------------------------------------------------------ stage records

    @property
    def verifying(self) -> bool:
        """Whether stage records are checked against the trust root's runners."""
        return self.trust is not None

    def signed(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with the writing runner's signature over its canonical bytes."""
        from cleanup.signing import NS_RECORD, sign_bytes

        t = self.trust
        if t is None or t.principal is None or t.key is None:
            raise UsageError("internal: a stage record is written without a runner key")
        sig = sign_bytes(canonical_json(doc), t.key, NS_RECORD).decode("ascii")
        return {**doc, "signature": {"principal": t.principal, "sshsig": sig}}

    def trusted(self, rec: Record, **expect: Any) -> bool:
        """True if ``rec`` is a stage record a runner of the trust root signed for this
        plan, with the fields ``expect`` names (stage, event, batch); always True when
        this view does not verify."""
        if self.trust is None:
            return True
        memo = (rec.key, rec.data)
        if memo not in self._checked:
            self._checked[memo] = self._check(rec, self.trust, expect)
        return self._checked[memo]

    def _check(self, rec: Record, trust: RecordTrust, expect: dict[str, Any]) -> bool:
        from cleanup.signing import NS_RECORD, ssh_verify

        doc = rec.doc()
        sig = doc.pop("signature", None)
        if not isinstance(sig, dict) or doc.get("plan_id") != self.plan_id:
            return False
        who, armored = sig.get("principal"), sig.get("sshsig")
        if not isinstance(who, str) or not isinstance(armored, str) \
                or not trust.is_runner(who):
            return False
        if any(doc.get(k) != v for k, v in expect.items()):
            return False
        with tempfile.TemporaryDirectory(prefix="cleanup-record-") as d:
            doc_path, sig_path = os.path.join(d, "doc"), os.path.join(d, "doc.sig")
            with open(doc_path, "wb") as fh:
                fh.write(canonical_json(doc))
            with open(sig_path, "w", encoding="ascii", errors="replace") as fh:
                fh.write(armored)
            state, _fpr, _detail = ssh_verify(doc_path, sig_path, trust.allowed, who,
                                              NS_RECORD, rec.recorded_at)
        return state == "valid"

    def stage_record(self, stage: int, what: str) -> Record | None:
        """The stage's ``what`` record (started, finished, halted), if a runner signed it."""
        rec = self.get("stages", str(stage), f"{what}.json")
        if rec is None or not self.trusted(rec, stage=stage, event=what):
            return None
        return rec

    def stage_record_present(self, stage: int, what: str) -> bool:
        """Whether any object holds the record's name (signed or not): a name taken by an
        unsigned object cannot be written again, and the runner must say so."""
        return self.store.get_bytes(self.key("stages", str(stage), f"{what}.json")) is not None

    def as_runner(self, principal: str, key: str) -> None:
        """From now on this view writes records signed by ``principal``'s ``key`` (a runner
        that proved itself against the trust root)."""
        if self.trust is None:
            raise UsageError("internal: a runner writes stage records only with a trust root")
        self.trust = RecordTrust(self.trust.allowed, self.trust.is_runner, principal, key)

    def write_stage_record(self, stage: int, what: str, doc: dict[str, Any]) -> bool:
        return self.write_signed(("stages", str(stage), f"{what}.json"), doc,
                                 stage=stage, event=what)

    def write_batch_record(self, stage: int, batch: int, doc: dict[str, Any]) -> bool:
        return self.write_signed(("stages", str(stage), "batches", f"{batch:08d}.json"),
                                 doc, stage=stage, batch=batch)

    def write_signed(self, parts: tuple[str, ...], doc: dict[str, Any],
                      **expect: Any) -> bool:
        """Create a signed stage record. Its name taken by an object no runner signed for
        this plan (a person with a write grant, a record copied from another plan) is an
        I10 violation: the stage's records cannot be trusted any more."""
        data = canonical_json(self.signed(doc))
        k = self.key(*parts)
        if self.store.put_if_absent(k, data):
            return True
        rec = self.get(*parts)
        if rec is not None and self.trusted(rec, **expect):
            return False
        raise InvariantViolation(I10, f"{k} exists in the store but no runner of the trust "
                                      "root signed it for this plan: someone other than the "
                                      "runner wrote a stage record",
                                 hint="investigate who wrote it (the bucket's access log); "
                                      "the plan's stage records cannot be trusted: make a "
                                      "new plan")

    def batch_records(self, stage: int) -> list[Record]:
        """The stage's batch records that a runner signed for this plan, stage and batch."""
        out = []
        for name in self.names("stages", str(stage), "batches"):
            rec = self.get("stages", str(stage), "batches", name)
            if rec is None or not name.endswith(".json") or not name[:-5].isdigit():
                continue
            if self.trusted(rec, stage=stage, batch=int(name[:-5])):
                out.append(rec)
        return out

    def quarantined(self, stage: int) -> dict[str, str]:
        """key -> quarantine key (or delete-marker version) that the stage's batch
        records say were removed (I11: restore and purge touch only these)."""
        out: dict[str, str] = {}
        for rec in self.batch_records(stage):
            removed = rec.doc().get("removed")
            if isinstance(removed, dict):
                out.update({str(k): str(v) for k, v in removed.items()})
        return out

    # ------------------------------------------------------------------ challenges (I8)

    def open_challenge(self, action: str, stage: int, doc: dict[str, Any]) -> str:
        """Publish a new challenge; return its name."""
        if action not in ACTIONS:
            raise UsageError(f"unknown action {action!r}")
        nonce = secrets.token_hex(16)
        name = f"{action}.{stage}.{nonce}"
        self.create_doc(("challenges", f"{name}.json"),
                        {**doc, "nonce": nonce, "action": action, "stage": stage,
                         "plan_id": self.plan_id, "type": "cleanup-challenge"})
        return name

    def challenges(self, action: str, stage: int) -> list[str]:
        """Names of challenges for (action, stage), oldest record name first."""
        pre = f"{action}.{stage}."
        return sorted(n[:-5] for n in self.names("challenges")
                      if n.startswith(pre) and n.endswith(".json") and n.count(".") == 3)

    def consumed(self, name: str) -> Record | None:
        return self.get("challenges", f"{name}.consumed")


def _published_name(plan_dir: str, rel: tuple[str, ...]) -> tuple[str, ...]:
    """Where a local bundle file goes in the store. Approvals are published as
    ``NAME~<sha256 of the JSON, 16 hex>.json`` (+ ``.sig``): the same principal can
    approve again (a fresh approval for a purge after the first expired) without
    replacing anything published."""
    if rel[:2] != ("signatures", "approvals"):
        return rel
    stem = rel[2][: -len(".json")] if rel[2].endswith(".json") else rel[2][: -len(".sig")]
    with open(os.path.join(plan_dir, "signatures", "approvals", f"{stem}.json"), "rb") as fh:
        tag = hashlib.sha256(fh.read()).hexdigest()[:16]
    ext = ".json" if rel[2].endswith(".json") else ".sig"
    return ("signatures", "approvals", f"{stem}~{tag}{ext}")


def _bundle_files(plan_dir: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [("plan.json",), ("manifest.parquet",)]
    sig_dir = os.path.join(plan_dir, "signatures")
    for name in ("author.json", "author.sig"):
        if _regular(os.path.join(sig_dir, name)):
            out.append(("signatures", name))
    adir = os.path.join(sig_dir, "approvals")
    if os.path.isdir(adir):
        for name in sorted(os.listdir(adir)):
            stem = name.rsplit(".", 1)[0]
            if _PART.match(name) and name.endswith((".json", ".sig")) \
                    and _regular(os.path.join(adir, name)) \
                    and _regular(os.path.join(adir, f"{stem}.json")):
                out.append(("signatures", "approvals", name))
    return out


def _regular(path: str) -> bool:
    """A regular file, not followed through a symlink (a FIFO or link is never read)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _write_private(dest: str, rel: tuple[str, ...], data: bytes) -> str:
    path = os.path.join(dest, *rel)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def private_dir() -> str:
    """A fresh directory only this process's user can read (the verified private copy)."""
    return tempfile.mkdtemp(prefix="cleanup-plan-")


def stage_doc(plan_id: str, stage: int, event: str, *, executor: str, audit_head: str,
              now: datetime, **fields: Any) -> dict[str, Any]:
    return {"type": "cleanup-stage-record", "plan_id": plan_id, "stage": stage,
            "event": event, "executor": executor, "audit_head": audit_head,
            "time": format_time(now), **fields}


def halted_error(stage: int, rec: Record) -> InvariantViolation:
    return InvariantViolation(I10, f"stage {stage} was halted at {format_time(rec.recorded_at)} "
                                   "(store record); a halt is lifted only by a new signed plan",
                              hint="make a new plan from fresh inputs")


def stage_state(pub: Published, stage: int) -> StageState:
    """A stage's state from the store's records (I10): never from a local file."""
    st = StageState(stage)
    started = pub.stage_record(stage, "started")
    if started is not None:
        st.state = "running"
        st.started_at = format_time(started.recorded_at)
        st.executor = str(started.doc().get("executor"))
    for rec in pub.batch_records(stage):
        doc = rec.doc()
        b = doc.get("batch")
        if not isinstance(b, int) or b in st.done_batches:
            continue
        st.done_batches[b] = doc
        st.moved += int(doc.get("moved", 0))
        st.moved_bytes += int(doc.get("moved_bytes", 0))
        for reason, n in (doc.get("skipped") or {}).items():
            st.skipped[reason] = st.skipped.get(reason, 0) + int(n)
    for name in pub.names("stages", str(stage)):
        if name.startswith("restored.") and name.endswith(".json"):
            restored = pub.get("stages", str(stage), name)
            counts = restored.doc().get("counts") if restored else None
            if isinstance(counts, dict):
                st.restored += int(counts.get("restored", 0))
    halted = pub.stage_record(stage, "halted")
    finished = pub.stage_record(stage, "finished")
    if halted is not None:
        st.state = "halted"
        st.halt = {**halted.doc(), "recorded_at": format_time(halted.recorded_at)}
    elif finished is not None:
        st.state = "complete"
        st.finished_at = format_time(finished.recorded_at)
    st.batches_done = len(st.done_batches)
    return st


def referenced_heads(pub: Published) -> list[str]:
    """Audit heads that this plan's store records say they saw (I14: the log may not be
    shorter than any of them)."""
    out = []
    for stage in pub.subdirs("stages"):
        if not stage.isdigit():
            continue
        names = ["started.json", "finished.json", "halted.json",
                 *(n for n in pub.names("stages", stage) if n.startswith("purged."))]
        for name in names:
            rec = pub.get("stages", stage, name)
            # Only what a runner signed (a forged record's head would only block the log).
            ok = rec is not None and pub.trusted(rec, stage=int(stage),
                                                 event=name.split(".", 1)[0])
            head = rec.doc().get("audit_head") if rec and ok else None
            if isinstance(head, str) and head:
                out.append(head)
    for name in pub.names("signatures", "approvals"):
        if name.endswith(".json"):
            rec = pub.get("signatures", "approvals", name)
            head = rec.doc().get("audit_head") if rec else None
            if isinstance(head, str) and head:
                out.append(head)
    for name in pub.names("challenges"):
        if name.endswith(".consumed"):
            rec = pub.get("challenges", name)
            head = rec.doc().get("audit_head") if rec else None
            if isinstance(head, str) and head:
                out.append(head)
    return out


def all_referenced_heads(store: Store) -> list[str]:
    """:func:`referenced_heads` of every plan published in ``store``."""
    ids = {k[len(PLANS_PREFIX):].split("/", 1)[0] for k in store.list_keys(PLANS_PREFIX)}
    return [h for pid in sorted(ids) if _ID.match(pid)
            for h in referenced_heads(Published(store, pid))]
