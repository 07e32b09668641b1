"""``cleanup execute``: remove one stage of a verified, witnessed plan (I6-I13).

Before anything: verify (I6, I7), presence (I8), the stage gate (I10), the
store's region (I13) and the store lock (I12). Then the stage's manifest is
streamed in batches; each batch is (a) reconciled against live metadata (I9:
any referenced key halts everything before the batch is touched, exit 5),
(b) re-checked against the store's current size and etag (a changed or
missing object is skipped and reported, never removed), (c) moved to
quarantine in the same store (I11) or, only when the plan says
``quarantine = none``, deleted. Every step is journaled and idempotent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup import audit
from cleanup.bundle import PlanBundle
from cleanup.core.paths import parse_store
from cleanup.core.timeutil import format_duration, format_time, parse_time
from cleanup.errors import InvariantViolation, ReconciliationHalt, SignoffError, UsageError
from cleanup.journal import Journal, StageState, stage_state
from cleanup.model import Plan
from cleanup.model import Witness as WitnessDoc
from cleanup.stores.base import ObjectInfo, VersionedStore, capability, quarantine_key
from cleanup.stores.wrappers import DryRunStore

if TYPE_CHECKING:
    from cleanup.lock import Lock
    from cleanup.reconcile import Reconciler
    from cleanup.stores.base import Store

from cleanup.core.names import I9, I11, I13

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExecuteOptions:
    plan_dir: str
    stage: int
    allowed_signers: str
    reconcile_with: str
    executor: str
    key: str
    reconcile_query: str | None = None
    dry_run: bool = False
    endpoint_url: str | None = None
    region: str | None = None
    break_lock: bool = False
    batch_size: int = 1000
    reconcile_max_age: timedelta = timedelta(minutes=5)
    health_checks: tuple[str, ...] = ()
    health_timeout: float = 300.0
    progress: Progress | None = None
    now: datetime | None = None  # library tests inject a clock; the CLI never does


@dataclass
class ExecuteResult:
    plan_id: str
    stage: int
    dry_run: bool
    batches: int = 0
    moved: int = 0
    moved_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    resumed_batches: int = 0
    already_complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "stage": self.stage, "dry_run": self.dry_run,
                "batches": self.batches, "removed": self.moved, "removed_bytes": self.moved_bytes,
                "skipped": self.skipped, "resumed_batches": self.resumed_batches,
                "already_complete": self.already_complete}


def open_plan_store(plan: Plan, endpoint_url: str | None, region: str | None) -> Store:
    """Open the plan's store and refuse one whose region differs from the plan's (I13)."""
    from cleanup.stores import open_store

    ref = parse_store(plan.store)
    # A plan made from an mtime-only listing (--trust-mtime, recorded and shown to
    # reviewers) is re-checked with the same clock; the etag still catches any rewrite.
    store = open_store(ref, endpoint_url=endpoint_url,
                       region=region if ref.kind == "local" else (region or plan.region),
                       trust_mtime=ref.kind == "local"
                       and plan.inputs.inventory.time_source == "mtime")
    actual = store.region()
    if actual != plan.region:
        raise InvariantViolation(I13, f"store {ref.url} is in region {actual}, the plan is bound "
                                      f"to {plan.region}",
                                 hint="execute in the plan's region; plans, quarantine and "
                                      "copies never leave it")
    return store


def stage_gate(plan_dir: str, plan: Plan, stage: int, now: datetime) -> None:
    """I10, the part the journal can answer: order, flags, skip ratio and hold."""
    from cleanup.core.stages import PrevStage
    from cleanup.core.stages import stage_gate as gate

    stages = {s.stage: s for s in plan.stages}
    if stage not in stages:
        raise UsageError(f"plan has no stage {stage} (stages: {sorted(stages)})")
    prev = None
    if stage > 0:
        st = stage_state(plan_dir, stage - 1)
        prev = PrevStage(stage - 1, st.state,
                         parse_time(st.finished_at) if st.finished_at else None,
                         stages[stage - 1].objects, sum(st.skipped.values()))
    gate(stage, prev, hold=plan.hold, max_skip_fraction=plan.policy.max_skip_fraction,
         now=now).raise_if_failed()


def health_gate(opts: ExecuteOptions, bundle: PlanBundle, store: Store, rec: Any,
                journal: Journal, plan_id: str) -> None:
    """I10's health gate before stage k > 0: read probe and user health checks."""
    from cleanup.health import read_probe, run_health_checks

    if opts.stage == 0:
        return
    checks = [read_probe(store, rec, bundle, opts.stage - 1, bundle.plan.policy.probe_sample)]
    if checks[0].ok and opts.health_checks:
        checks.append(run_health_checks(list(opts.health_checks), opts.health_timeout))
    passed = all(c.ok for c in checks)
    results = [c.to_json() for c in checks]
    journal.write("gate", passed=passed, results=results)
    if not opts.dry_run:
        audit.append(store, "health-gate", plan_id=plan_id, principal=opts.executor,
                     details={"stage": opts.stage, "passed": passed, "results": results})
    for c in checks:
        c.raise_if_failed()


def _require_versioning(store: Store) -> VersionedStore:
    """Versioning mode needs versioning Enabled: on a Suspended bucket a delete destroys
    the null version, so nothing would be recoverable (I11)."""
    versioned = _versioned(store)
    status = versioned.versioning_status()
    if status != "Enabled":
        raise InvariantViolation(I11, f"bucket {store.ref.bucket} has versioning "
                                      f"{status or 'never enabled'}; versioning mode needs "
                                      "Enabled (a delete on a Suspended bucket destroys data)",
                                 hint="enable versioning, or re-plan with --quarantine copy")
    return versioned


def _versioned(store: Store) -> VersionedStore:
    """The store's :class:`VersionedStore` capability (through wrappers), or a usage error."""
    versioned = capability(store, VersionedStore)
    if versioned is None:
        raise UsageError("quarantine mode 'versioning' needs an S3 store")
    return versioned


def iter_stage(plan_dir: str, stage: int, batch_size: int) -> Iterator[list[ObjectInfo]]:
    """The stage's manifest rows in key order, ``batch_size`` at a time (verified manifest)."""
    with PlanBundle.open(plan_dir) as bundle:
        yield from bundle.iter_stage(stage, batch_size)


def check_manifest(plan_dir: str) -> None:
    """Refuse a manifest row without key, size or last_modified (see PlanBundle)."""
    with PlanBundle.open(plan_dir) as bundle:
        bundle.check_manifest()


def _digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def _sign_executor(opts: ExecuteOptions, plan_id: str, now: datetime) -> None:
    """The executor proves who it is: a signature checked against allowed_signers now."""
    from cleanup.core.canonical import canonical_json
    from cleanup.signing import NS_WITNESS, sign_file
    from cleanup.signoff import ssh_verify

    doc = WitnessDoc(plan_id, opts.stage, opts.executor, now, role="executor").to_json()
    path = PlanBundle.layout(opts.plan_dir).executor_json(opts.stage, opts.executor)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # concurrent starts must not sign each other's bytes
    with open(tmp, "wb") as fh:
        fh.write(canonical_json(doc))
    try:
        sig = sign_file(tmp, opts.key, NS_WITNESS)
        state, _fpr, detail = ssh_verify(tmp, sig, opts.allowed_signers, opts.executor,
                                         NS_WITNESS, now)
        if state == "valid":
            os.replace(sig, path + ".sig")
            os.replace(tmp, path)
    finally:
        for p in (tmp, tmp + ".sig"):
            if os.path.exists(p):
                os.unlink(p)
    if state != "valid":
        raise SignoffError(f"executor {opts.executor}: {state} ({detail})",
                           hint="the executor must be a principal in allowed_signers with "
                                "namespace cleanup-witness")


def execute(opts: ExecuteOptions) -> ExecuteResult:
    now = opts.now or datetime.now(UTC)
    plan, plan_id, bundle, done_state = _authorize(opts, now)
    if done_state.state == "complete" and not opts.dry_run:
        return _already_complete(plan_id, opts.stage, done_state)
    stage_gate(opts.plan_dir, plan, opts.stage, now)
    store = open_plan_store(plan, opts.endpoint_url, opts.region)
    audit.require_intact(store)  # a tampered audit log stops all cleanup (I14)
    mode = plan.quarantine
    if mode == "versioning":
        _require_versioning(store)
    state = stage_state(opts.plan_dir, opts.stage)
    _refuse_halted(state, opts)
    plan_taken = plan.inputs.snapshot.taken_at.time
    cutoff, precision = _cutoff_rule(plan, store)
    run = _Resources()
    try:
        if not opts.dry_run:
            state = _lock_and_reread(run, opts, plan, plan_id, bundle, store)
            if state.state == "complete":
                return _already_complete(plan_id, opts.stage, state)
        else:
            # A dry run takes no lock: it gets a private scratch and removes only that.
            os.makedirs(bundle.journal_dir, exist_ok=True)
            run.scratch = run.private_scratch = tempfile.mkdtemp(prefix=".scratch-dry-run-",
                                                                 dir=bundle.journal_dir)
        rec = run.rec = _reconciler(opts, plan, store, plan_taken, run.scratch)
        result = _run_stage(opts, bundle, plan_id, mode, store, rec, run.lock, state,
                            cutoff=cutoff, precision=precision)
    except ReconciliationHalt as exc:
        if not opts.dry_run:
            audit.append(store, "halt", plan_id=plan_id, principal=opts.executor,
                         details={"stage": opts.stage, "reason": exc.message[:2000]})
        raise
    else:
        return result
    finally:
        run.close()


def _authorize(opts: ExecuteOptions, now: datetime
               ) -> tuple[Plan, str, PlanBundle, StageState]:
    """Verify the plan (I6 -> 3, I7 -> 4) and its manifest; unless this is a dry run or
    the stage is already complete, check presence (I8) and sign as the executor."""
    from cleanup.core.names import I8
    from cleanup.signoff import check_presence, require_verified

    rep = require_verified(opts.plan_dir, opts.allowed_signers, now)
    bundle = rep.bundle or PlanBundle.open(opts.plan_dir)
    bundle.check_manifest()
    done_state = stage_state(opts.plan_dir, opts.stage)
    if not opts.dry_run and done_state.state != "complete":
        presence, _w = check_presence(opts.plan_dir, opts.stage, opts.executor,
                                      opts.allowed_signers, now)
        if not presence.ok:
            raise SignoffError(f"{I8}: {presence.detail}", hint=presence.hint)
        _sign_executor(opts, rep.plan_id, now)
    return rep.plan, rep.plan_id, bundle, done_state


@dataclass
class _Resources:
    """What one execution holds; :meth:`close` releases it whatever happened."""

    lock: Lock | None = None
    rec: Reconciler | None = None
    scratch: str | None = None
    private_scratch: str | None = None  # a dry run's own scratch, removed at the end

    def close(self) -> None:
        if self.rec is not None:
            self.rec.close()
        if self.private_scratch is not None:
            shutil.rmtree(self.private_scratch, ignore_errors=True)
        if self.lock is not None:
            self.lock.release()


def _lock_and_reread(run: _Resources, opts: ExecuteOptions, plan: Plan, plan_id: str,
                     bundle: PlanBundle, store: Store) -> StageState:
    """Take the store lock (I12), clear the shared scratch and read the stage again."""
    from cleanup.lock import Lock

    run.lock, broken = Lock.acquire(
        store, executor=opts.executor, plan_id=plan_id, break_lock=opts.break_lock,
        unsafe_store=plan.unsafe_store_without_conditional_writes)
    if broken is not None:
        audit.append(store, "lock-broken", plan_id=plan_id, principal=opts.executor,
                     details={"previous": broken})
    # Only now, holding the store lock, is the shared scratch ours to clear: what is
    # in it was left by a killed run, never by a running one (that would hold the
    # lock). The journal, too, is read again: it may have moved on while we waited.
    run.scratch = bundle.scratch_dir
    shutil.rmtree(run.scratch, ignore_errors=True)
    state = stage_state(opts.plan_dir, opts.stage)
    _refuse_halted(state, opts)
    return state


def _reconciler(opts: ExecuteOptions, plan: Plan, store: Store, plan_taken: datetime,
                scratch: str | None) -> Reconciler:
    from cleanup.reconcile import Reconciler

    return Reconciler(opts.reconcile_with, parse_store(plan.store), plan_taken,
                      query=opts.reconcile_query, max_age=opts.reconcile_max_age,
                      workdir=scratch, encoding=plan.references.encoding,
                      base=plan.references.base,
                      exists=lambda ks: store.current(list(ks)).keys())


def _run_stage(opts: ExecuteOptions, bundle: PlanBundle, plan_id: str, mode: str,
               store: Store, rec: Reconciler, lock: Lock | None, state: StageState, *,
               cutoff: datetime, precision: timedelta) -> ExecuteResult:
    """Audit and journal the stage around its batches; the health gate before the first."""
    if not opts.dry_run:
        audit.append(store, "stage-start", plan_id=plan_id, principal=opts.executor,
                     details={"stage": opts.stage, "resume": state.batches_done > 0})
    journal = Journal(bundle.journal_path(opts.stage, opts.dry_run))
    if opts.dry_run and os.path.exists(journal.path):
        os.unlink(journal.path)
    if state.batches_done == 0:
        health_gate(opts, bundle, store, rec, journal, plan_id)
    journal.write("stage-start", executor=opts.executor, plan_id=plan_id,
                  batch_size=opts.batch_size, dry_run=opts.dry_run)
    result = _run_batches(opts, bundle, mode, store, rec, journal, state.done_batches, lock,
                          cutoff=cutoff, precision=precision)
    journal.write("stage-complete", moved=result.moved, skipped=result.skipped)
    if not opts.dry_run:
        audit.append(store, "stage-end", plan_id=plan_id, principal=opts.executor,
                     details=result.to_json())
    return result


def _refuse_halted(state: StageState, opts: ExecuteOptions) -> None:
    if state.state == "halted" and not opts.dry_run:
        raise InvariantViolation(I9, f"stage {opts.stage} was halted by "
                                                 "reconciliation; it stays halted",
                                 hint="make a new plan from fresh inputs")


def _already_complete(plan_id: str, stage: int, state: StageState) -> ExecuteResult:
    """Running a finished stage again (e.g. after a kill right at the end) reports what it
    did and touches nothing."""
    return ExecuteResult(plan_id, stage, False, batches=state.batches_done, moved=state.moved,
                         moved_bytes=state.moved_bytes, skipped=dict(state.skipped),
                         resumed_batches=state.batches_done, already_complete=True)


def _cutoff_rule(plan: Plan, store: Store) -> tuple[datetime, timedelta]:
    """The plan's cutoff and the precision its I2 rule is applied with at execution:
    the larger of the inventory's precision and the store's own listing precision."""
    return plan.cutoff.time, max(plan.inputs.inventory.precision, store.precision)


def _run_batches(opts: ExecuteOptions, bundle: PlanBundle, mode: str, store: Store,
                 rec: Reconciler, journal: Journal, done: dict[int, dict[str, Any]],
                 lock: Lock | None, *, cutoff: datetime, precision: timedelta) -> ExecuteResult:
    """The stage's batches in order: journaled ones are counted from the journal, the
    others run. Rows come from the bundle's verified private copy of the manifest (the
    bytes that were checked are the bytes used). A dry run sees the store through
    :class:`DryRunStore` (nothing is touched) and looks at every batch again."""
    plan_id = bundle.plan_id
    if opts.dry_run:
        store, done = DryRunStore(store), {}
    runner = _BatchRunner(opts, plan_id, mode, store, rec, journal, cutoff, precision,
                          _versioned(store) if mode == "versioning" else None)
    res = ExecuteResult(plan_id, opts.stage, opts.dry_run)
    totals: Counter[str] = Counter()
    for b, batch in enumerate(bundle.iter_stage(opts.stage, opts.batch_size)):
        digest = _digest([o.key for o in batch])
        res.batches += 1
        if b in done:
            moved, moved_bytes, skipped = _journaled_batch(b, done[b], digest)
            res.resumed_batches += 1
        else:
            moved, moved_bytes, skipped = runner.run(b, batch, digest)
        res.moved += moved
        res.moved_bytes += moved_bytes
        totals.update(skipped)
        if b not in done:
            if lock is not None:
                lock.refresh()
            if opts.progress:
                opts.progress(res.moved, res.moved_bytes)
    res.skipped = dict(totals)
    return res


def _journaled_batch(b: int, rec: dict[str, Any], digest: str) -> tuple[int, int, Counter[str]]:
    """A batch the journal says is done: its counts, if it is the same batch."""
    if rec.get("digest") != digest:
        raise UsageError(f"journal batch {b} does not match the manifest "
                         "(batch size changed?)", hint="resume with the same settings")
    return (int(rec.get("moved", 0)), int(rec.get("moved_bytes", 0)),
            Counter({k: int(v) for k, v in rec.get("skipped", {}).items()}))


@dataclass
class _BatchRunner:
    """One batch: reconcile (I9), re-check against the store, remove, journal each step."""

    opts: ExecuteOptions
    plan_id: str
    mode: str  # copy | none | versioning
    store: Store
    rec: Reconciler
    journal: Journal
    cutoff: datetime
    precision: timedelta
    versioned: VersionedStore | None  # the store's capability, in versioning mode

    def run(self, b: int, batch: list[ObjectInfo], digest: str) -> tuple[int, int, Counter[str]]:
        """(objects removed, their bytes, skip reasons) of batch ``b``."""
        keys = [o.key for o in batch]
        self.journal.write("batch-start", batch=b, digest=digest, keys=len(keys))
        self._reconcile(b, keys)
        self.journal.write("batch-reconciled", batch=b)
        cur = self.store.current(keys)
        already, markers = self._already_removed([o for o in batch if o.key not in cur])
        to_remove, skipped = self._select(batch, cur, already)
        self.journal.write("batch-checked", batch=b, remove=len(to_remove), already=len(already))
        outcome, new_markers = self._remove(to_remove)
        markers.update(new_markers)
        sizes = {o.key: o.size for o in batch}
        moved = [k for k, err in outcome.items() if err is None] + sorted(already)
        for err in outcome.values():
            if err is not None:
                skipped[err if err in ("changed", "missing") else "error"] += 1
        moved_bytes = sum(sizes[k] for k in moved)
        self.journal.write("batch-done", batch=b, digest=digest, moved=len(moved),
                           moved_bytes=moved_bytes, skipped=dict(skipped), markers=markers,
                           errors={k: e for k, e in outcome.items()
                                   if e not in (None, "changed", "missing")})
        return len(moved), moved_bytes, skipped

    def _reconcile(self, b: int, keys: list[str]) -> None:
        """I9: any key referenced by live metadata halts the stage before the batch."""
        hits = self.rec.referenced(keys)
        if hits:
            self.journal.write("halt", batch=b, referenced=hits[:1000], count=len(hits))
            raise ReconciliationHalt(
                f"I9 reconcile: {len(hits)} key(s) of stage {self.opts.stage} batch {b} are "
                f"referenced by live metadata, e.g. {hits[0]!r}; nothing in this batch was "
                "touched and the stage is halted",
                hint="investigate, then make a new plan from fresh inputs")

    def _already_removed(self, missing: list[ObjectInfo]) -> tuple[set[str], dict[str, str]]:
        """Of the keys no longer in the store, those an earlier, unjournaled run of this
        batch removed: their quarantine copy has the size (copy mode), or our delete
        marker hides the planned version (versioning mode; key -> marker)."""
        already: set[str] = set()
        markers: dict[str, str] = {}
        if missing and self.mode == "copy":
            q = self.store.current([quarantine_key(self.plan_id, o.key) for o in missing])
            already = {o.key for o in missing
                       if (qi := q.get(quarantine_key(self.plan_id, o.key)))
                       and qi.size == o.size}
        elif missing and self.versioned is not None:
            for o in missing:
                m = self.versioned.marker_for(o.key, o.etag)
                if m is not None:
                    already.add(o.key)
                    markers[o.key] = m
        return already, markers

    def _select(self, batch: list[ObjectInfo], cur: dict[str, ObjectInfo],
                already: set[str]) -> tuple[list[ObjectInfo], Counter[str]]:
        """The objects still as planned (to remove) and the skip reasons of the others."""
        skipped: Counter[str] = Counter()
        to_remove = []
        for o in batch:
            c = cur.get(o.key)
            if c is None:
                if o.key not in already:
                    skipped["missing"] += 1
            elif (c.size != o.size or (c.etag != o.etag and o.etag is not None)
                  or c.last_modified + self.precision > self.cutoff):
                # Rewritten since the inventory, or written at or after the cutoff by the
                # I2 rule (same content re-uploaded keeps an S3 etag, not its time).
                skipped["changed"] += 1
            else:
                to_remove.append(o)
        return to_remove, skipped

    def _remove(self, objs: list[ObjectInfo]) -> tuple[dict[str, str | None], dict[str, str]]:
        """Quarantine, delete (``quarantine = none``) or hide behind delete markers."""
        if self.mode == "none":
            return self.store.delete(objs), {}
        if self.versioned is not None:
            return self.versioned.delete_to_markers(objs)
        return self.store.quarantine(self.plan_id, objs), {}


def restore(plan_dir: str, *, stage: int | None = None, key: str | None = None,
            endpoint_url: str | None = None, region: str | None = None) -> dict[str, int]:
    """Bring quarantined objects back; never overwrite an object written since."""
    bundle = PlanBundle.open(plan_dir)
    plan, plan_id = bundle.plan, bundle.plan_id
    bundle.check_manifest()
    store = open_plan_store(plan, endpoint_url, region)
    counts: Counter[str] = Counter()
    stages = [stage] if stage is not None else [s.stage for s in plan.stages]
    for st in stages:
        if plan.quarantine == "versioning":
            stage_counts = _restore_markers(plan_dir, st, key, store)
        else:
            stage_counts = _restore_copies(bundle, plan_id, st, key, store)
        if stage_counts.get("restored"):
            Journal(bundle.journal_path(st)).write("restored", key=key,
                                                   counts=dict(stage_counts))
        counts.update(stage_counts)
    audit.append(store, "restore", plan_id=plan_id,
                 details={"stage": stage, "key": key, "counts": dict(counts)})
    return dict(counts)


def _restore_markers(plan_dir: str, stage: int, key: str | None,
                     store: Store) -> Counter[str]:
    """Versioning mode: remove the delete markers the stage's journal recorded."""
    counts: Counter[str] = Counter()
    markers = {k: m for k, m in _markers(plan_dir, stage).items() if key is None or k == key}
    if markers:
        versioned = _versioned(store)
        for k, marker in markers.items():
            counts[versioned.remove_marker(k, marker)] += 1
    return counts


def _restore_copies(bundle: PlanBundle, plan_id: str, stage: int, key: str | None,
                    store: Store) -> Counter[str]:
    """Copy mode: move the stage's quarantined objects back, in manifest order."""
    counts: Counter[str] = Counter()
    for batch in bundle.iter_stage(stage, 1000):
        for o in batch:
            if key is None or o.key == key:
                counts[store.restore(plan_id, o.key)] += 1
    return counts


def purge(plan_dir: str, *, stage: int, allowed_signers: str, executor: str,
          endpoint_url: str | None = None, region: str | None = None,
          now: datetime | None = None) -> int:
    """Remove a finished stage's quarantine for good, after its retention (I11)."""
    from cleanup.core.names import I8
    from cleanup.signoff import check_presence, require_verified

    now = now or datetime.now(UTC)
    rep = require_verified(plan_dir, allowed_signers, now)
    bundle = rep.bundle or PlanBundle.open(plan_dir)
    bundle.check_manifest()
    presence, _w = check_presence(plan_dir, stage, executor, allowed_signers, now)
    if not presence.ok:
        raise SignoffError(f"{I8}: {presence.detail}", hint=presence.hint)
    _require_retention_over(plan_dir, stage, rep.plan.policy.retention, now)
    store = open_plan_store(rep.plan, endpoint_url, region)
    if rep.plan.quarantine == "versioning":
        markers = _markers(plan_dir, stage)
        versioned = _versioned(store) if markers else None
        n = sum(versioned.purge_versions(k, m) for k, m in markers.items()) if versioned else 0
    else:
        keys = [o.key for batch in bundle.iter_stage(stage, 1000) for o in batch]
        n = store.purge(rep.plan_id, keys)
    Journal(bundle.journal_path(stage)).write("purged", removed=n)
    audit.append(store, "purge", plan_id=rep.plan_id, principal=executor,
                 details={"stage": stage, "removed": n})
    return n


def _require_retention_over(plan_dir: str, stage: int, retention: timedelta,
                            now: datetime) -> None:
    """I11: only a completed stage's quarantine, and only after the plan's retention."""
    st = stage_state(plan_dir, stage)
    if st.state != "complete" or st.finished_at is None:
        raise InvariantViolation(I11, f"stage {stage} is {st.state}; only a completed stage's "
                                      "quarantine can be purged")
    finished = parse_time(st.finished_at)
    if now < finished + retention:
        raise InvariantViolation(I11, f"stage {stage} finished at {format_time(finished)}; its "
                                      f"retention of {format_duration(retention)} ends at "
                                      f"{format_time(finished + retention)}",
                                 hint="quarantine is purged only after the retention")


def _markers(plan_dir: str, stage: int) -> dict[str, str]:
    """Delete-marker version ids recorded by a versioning-mode stage (key -> version)."""
    from cleanup.journal import read_records

    out: dict[str, str] = {}
    for rec in read_records(PlanBundle.layout(plan_dir).journal_path(stage)):
        if rec.get("event") == "batch-done":
            out.update(rec.get("markers") or {})
    return out
