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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup import audit
from cleanup.bundle import PlanBundle
from cleanup.core.paths import parse_store
from cleanup.core.timeutil import format_duration, format_time, parse_time
from cleanup.errors import InvariantViolation, ReconciliationHalt, SignoffError, UsageError
from cleanup.journal import Journal
from cleanup.model import Plan, StageState
from cleanup.model import Witness as WitnessDoc
from cleanup.presence import consume, require_witness
from cleanup.published import Published, RecordTrust, referenced_heads, stage_doc
from cleanup.published import stage_state as store_stage_state
from cleanup.retire import CopyCheck, open_copy_check, recheck_copies
from cleanup.stores.base import ObjectInfo, VersionedStore, capability, quarantine_key
from cleanup.stores.bulk import BulkRestoreStore
from cleanup.stores.wrappers import DryRunStore
from cleanup.watchdog import Watchdog, WatchSettings, check_settings

if TYPE_CHECKING:
    from cleanup.lock import Lock
    from cleanup.reconcile import Reconciler
    from cleanup.stores.base import Store
    from cleanup.trust import VerifiedRoot

from cleanup.core.names import I9, I10, I11, I13, I17, I19

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExecuteOptions:
    plan_dir: str
    stage: int
    executor: str
    key: str
    #: the pinned digest of the trust root's version 1 (None: CLEANUP_TRUST_ROOT, then
    #: trust_root in ``config`` or ./cleanup.toml) -- the runner's configuration (I17)
    trust_root: str | None = None
    config: str | None = None
    #: the plan records its reconciliation source; a value here must be the same (I19)
    reconcile_with: str | None = None
    reconcile_query: str | None = None
    #: seconds to wait for a witness of the challenge this run publishes (I8)
    wait: float = 0.0
    #: a second store that receives a copy of the audit head after every append (I14)
    anchor: str | None = None
    dry_run: bool = False
    endpoint_url: str | None = None
    region: str | None = None
    break_lock: bool = False
    batch_size: int = 1000
    reconcile_max_age: timedelta = timedelta(minutes=5)
    health_checks: tuple[str, ...] = ()
    health_timeout: float = 300.0
    #: the in-stage watchdog (cleanup.watchdog): check every N batches or T seconds,
    #: whichever first; on a failure halt the stage and restore it (or only halt)
    watch_every_batches: int = 10
    watch_every_seconds: float = 30.0
    on_failure: str = "restore"  # restore | halt
    canary_sample: int = 20
    progress: Progress | None = None
    now: datetime | None = None  # library tests inject a clock; the CLI never does
    #: a store lock (I12) the caller already holds on this plan's store (``cleanup run``
    #: takes every layer's lock in one order first); used instead of taking one, and
    #: left for the caller to release
    held_lock: Lock | None = None

    def __post_init__(self) -> None:
        check_settings(self.watch_every_batches, self.watch_every_seconds, self.on_failure,
                       self.canary_sample)


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
    # Azure's blob API cannot report an account's location: the runner declares it
    # (--region or AZURE_STORAGE_REGION), never the plan, or I13 would hold by construction.
    own_region = ref.kind == "local" or ref.provider == "azure"
    store = open_store(ref, endpoint_url=endpoint_url,
                       region=region if own_region else (region or plan.region),
                       trust_mtime=ref.kind == "local"
                       and plan.inputs.inventory.time_source == "mtime")
    actual = store.region()
    if actual != plan.region:
        raise InvariantViolation(I13, f"store {ref.url} is in region {actual}, the plan is bound "
                                      f"to {plan.region}",
                                 hint="execute in the plan's region; plans, quarantine and "
                                      "copies never leave it")
    return store


def stage_gate(pub: Published, plan: Plan, stage: int, now: datetime) -> None:
    """I10 from the store's stage records: order, flags, skip ratio and the hold, measured
    from the previous stage's ``finished`` record time to the store's clock ``now``."""
    from cleanup.core.stages import PrevStage
    from cleanup.core.stages import stage_gate as gate

    stages = {s.stage: s for s in plan.stages}
    if stage not in stages:
        raise UsageError(f"plan has no stage {stage} (stages: {sorted(stages)})")
    prev = None
    if stage > 0:
        st = store_stage_state(pub, stage - 1)
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
        audit.append(store, "health-gate", plan_id=plan_id, principal=opts.executor, key=opts.key,
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
        raise UsageError("quarantine mode 'versioning' needs an S3 or GCS store")
    return versioned


def _digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def store_now(store: Store, injected: datetime | None) -> datetime:
    """The store's clock now (I18: a fresh probe's Last-Modified), which holds, retention
    and signature ages are measured with. Library tests may inject a clock."""
    if injected is not None:
        return injected
    return store.probe_clock().store_time


def _prove_runner(opts: ExecuteOptions, trust: VerifiedRoot, allowed: str, plan_id: str,
                  now: datetime) -> None:
    """The runner proves who it is: a signature by its key, checked against the trust
    root's principals now; it must hold the runner role."""
    from cleanup.core.canonical import canonical_json
    from cleanup.signing import NS_WITNESS, sign_file, ssh_verify

    if not trust.has_role(opts.executor, "runner"):
        raise SignoffError(f"{I17}: {opts.executor} has no runner role in trust root version "
                           f"{trust.version}",
                           hint="execute, restore and purge run as a runner principal")
    doc = WitnessDoc(plan_id, opts.stage, opts.executor, now, role="executor").to_json()
    with tempfile.TemporaryDirectory(prefix="cleanup-runner-") as d:
        path = os.path.join(d, "runner.json")
        with open(path, "wb") as fh:
            fh.write(canonical_json(doc))
        sig = sign_file(path, opts.key, NS_WITNESS)
        state, _fpr, detail = ssh_verify(path, sig, allowed, opts.executor, NS_WITNESS, now)
    if state != "valid":
        raise SignoffError(f"{I17}: runner {opts.executor}: {state} ({detail})",
                           hint="the runner signs with its own key, listed in the trust root")


@dataclass
class _Context:
    """What authorization established: the plan as the store holds it (a verified
    private copy), the verified trust root and its allowed_signers file, the store."""

    plan: Plan
    plan_id: str
    bundle: PlanBundle
    store: Store
    pub: Published
    trust: VerifiedRoot
    allowed: str
    now: datetime


def authorize(plan_dir: str, *, trust_root: str | None, config: str | None,
              endpoint_url: str | None, region: str | None, injected_now: datetime | None,
              stack: ExitStack, read_only: bool = False, anchor: str | None = None) -> _Context:
    """I13, I17, I6, I7 and I18 for an action on ``plan_dir``'s plan: only its id is taken
    from the local directory; plan, manifest and signatures are read from the store into
    a private copy, and verified against the pinned trust root's principals."""
    from cleanup import trust as trust_mod
    from cleanup.signoff import require_report, verify_bundle

    with PlanBundle.open(plan_dir) as local:
        local_plan, plan_id = local.plan, local.plan_id
    store = open_plan_store(local_plan, endpoint_url, region)
    trust = trust_mod.current(store, trust_root, config)
    _use_anchor(anchor, config, endpoint_url, stack)
    allowed = stack.enter_context(trust.allowed_signers())
    bundle = PlanBundle.fetch(store, plan_id, work_root=plan_dir)
    stack.callback(bundle.close)
    # The store's clock (a probe write); a dry run writes nothing and reads ours.
    now = injected_now or datetime.now(UTC) if read_only else store_now(store, injected_now)
    rep = require_report(verify_bundle(bundle, allowed, now, trust))
    bundle.check_manifest()
    # Stage records count only when a runner of this trust root signed them (I10).
    pub = Published(store, plan_id, RecordTrust(allowed, lambda n: trust.has_role(n, "runner")))
    return _Context(rep.plan, plan_id, bundle, store, pub, trust, allowed, now)


def _use_anchor(anchor: str | None, config: str | None, endpoint_url: str | None,
                stack: ExitStack) -> None:
    """The runner's audit anchor (I14): ``--anchor``, else ``[audit] anchor`` in its
    cleanup.toml. Every append copies the head there; the log is verified against it."""
    from cleanup.core.policy import read_config
    from cleanup.stores import open_store

    if anchor is None:
        path = config or ("cleanup.toml" if os.path.isfile("cleanup.toml") else None)
        table = read_config(path).get("audit", {}) if path else {}
        anchor = table.get("anchor") if isinstance(table, dict) else None
    if anchor:
        audit.use_anchor(open_store(str(anchor), endpoint_url=endpoint_url))
        stack.callback(audit.use_anchor, None)


def _reconcile_source(opts: ExecuteOptions, plan: Plan) -> tuple[str, str | None]:
    """The reconciliation source and query of the signed plan (I19); an option naming
    another is refused."""
    if plan.reconcile is None:
        raise InvariantViolation(I19, "the plan records no reconciliation source",
                                 hint="re-plan with --reconcile-with SOURCE [--reconcile-query "
                                      "SQL]: it is signed with the plan")
    src, query = plan.reconcile.source, plan.reconcile.query
    if opts.reconcile_with is not None and (opts.reconcile_with != src or (
            opts.reconcile_query is not None and opts.reconcile_query != query)):
        raise InvariantViolation(I19, f"--reconcile-with {opts.reconcile_with} is not the "
                                      f"plan's signed reconciliation source {src}",
                                 hint="leave --reconcile-with out: execution reads it from "
                                      "the plan")
    return src, query


def execute(opts: ExecuteOptions) -> ExecuteResult:
    with ExitStack() as stack:
        ctx = authorize(opts.plan_dir, trust_root=opts.trust_root, config=opts.config,
                        endpoint_url=opts.endpoint_url, region=opts.region,
                        injected_now=opts.now, stack=stack, read_only=opts.dry_run,
                        anchor=opts.anchor)
        return _execute(opts, ctx, stack)


def _execute(opts: ExecuteOptions, ctx: _Context, stack: ExitStack) -> ExecuteResult:
    plan, plan_id, store, pub = ctx.plan, ctx.plan_id, ctx.store, ctx.pub
    state = store_stage_state(pub, opts.stage)
    if state.state == "complete" and not opts.dry_run:
        return _already_complete(plan_id, opts.stage, state)
    _refuse_halted(state, opts)
    source, _query = _reconcile_source(opts, plan)
    if not opts.dry_run:
        _prove_runner(opts, ctx.trust, ctx.allowed, plan_id, ctx.now)
        pub.as_runner(opts.executor, opts.key)
    intact = audit.require_intact(store, referenced=referenced_heads(pub))
    head = intact.head_ref
    # The gate first: a stage that may not start yet publishes no challenge, so nobody
    # witnesses a run that cannot happen.
    stage_gate(pub, plan, opts.stage, ctx.now)
    found = None
    if not opts.dry_run:
        found = require_witness(pub, "execute", opts.stage, plan, ctx.trust, ctx.allowed,
                                executor=opts.executor, audit_head=head, now=ctx.now,
                                wait=opts.wait, used=intact.consumed,
                                clock=None if opts.now else lambda: store_now(store, None))
    if plan.quarantine == "versioning":
        _require_versioning(store)
    cutoff, precision = _cutoff_rule(plan, store)
    run = _Resources()
    stack.callback(run.close)
    try:
        if found is not None:
            state = _lock_and_reread(run, opts, plan, plan_id, ctx.bundle, store, pub)
            if state.state == "complete":
                return _already_complete(plan_id, opts.stage, state)
            consume(pub, found, executor=opts.executor, audit_head=head, now=ctx.now)
            audit.append(store, "witness-consumed", plan_id=plan_id, principal=opts.executor,
                         key=opts.key,
                         details={"stage": opts.stage, "action": "execute",
                                  "challenge": found.challenge, "witness": found.witness})
        else:
            # A dry run takes no lock: it gets a private scratch and removes only that.
            os.makedirs(ctx.bundle.journal_dir, exist_ok=True)
            run.scratch = run.private_scratch = tempfile.mkdtemp(
                prefix=".scratch-dry-run-", dir=ctx.bundle.journal_dir)
        rec = run.rec = _reconciler(source, plan, store, plan.inputs.snapshot.taken_at.time,
                                    run.scratch, opts)
        return _run_stage(opts, ctx, rec, run.lock, state, cutoff=cutoff,
                          precision=precision)
    except ReconciliationHalt as exc:
        if not opts.dry_run:
            entry = audit.append(store, "halt", plan_id=plan_id, principal=opts.executor,
                                 key=opts.key,
                                 details={"stage": opts.stage, "reason": exc.message[:2000]})
            pub.write_stage_record(opts.stage, "halted", stage_doc(
                plan_id, opts.stage, "halted", executor=opts.executor,
                audit_head=audit.head_of(entry), now=datetime.now(UTC),
                reason=exc.message[:2000]))
        raise


@dataclass
class _Resources:
    """What one execution holds; :meth:`close` releases it whatever happened."""

    lock: Lock | None = None
    rec: Reconciler | None = None
    scratch: str | None = None
    private_scratch: str | None = None  # a dry run's own scratch, removed at the end
    borrowed_lock: bool = False  # ExecuteOptions.held_lock: the caller releases it

    def close(self) -> None:
        if self.rec is not None:
            self.rec.close()
        if self.private_scratch is not None:
            shutil.rmtree(self.private_scratch, ignore_errors=True)
        if self.lock is not None and not self.borrowed_lock:
            self.lock.release()


def _lock_and_reread(run: _Resources, opts: ExecuteOptions, plan: Plan, plan_id: str,
                     bundle: PlanBundle, store: Store, pub: Published) -> StageState:
    """Take the store lock (I12), clear the shared scratch and read the stage again."""
    from cleanup.lock import Lock

    if opts.held_lock is not None:
        if opts.held_lock.store.ref.url != store.ref.url:
            raise UsageError(f"the lock handed over is for {opts.held_lock.store.ref.url}, "
                             f"not the plan's store {store.ref.url}")
        run.lock, run.borrowed_lock, broken = opts.held_lock, True, None
    else:
        run.lock, broken = Lock.acquire(
            store, executor=opts.executor, plan_id=plan_id, break_lock=opts.break_lock,
            unsafe_store=plan.unsafe_store_without_conditional_writes)
    if broken is not None:
        audit.append(store, "lock-broken", plan_id=plan_id, principal=opts.executor, key=opts.key,
                     details={"previous": broken})
    # Only now, holding the store lock, is the shared scratch ours to clear: what is
    # in it was left by a killed run, never by a running one (that would hold the
    # lock). The stage records, too, are read again: they may have moved on.
    run.scratch = bundle.scratch_dir
    shutil.rmtree(run.scratch, ignore_errors=True)
    state = store_stage_state(pub, opts.stage)
    _refuse_halted(state, opts)
    return state


def _reconciler(source: str, plan: Plan, store: Store, plan_taken: datetime,
                scratch: str | None, opts: ExecuteOptions) -> Reconciler:
    from cleanup.reconcile import Reconciler

    return Reconciler(source, parse_store(plan.store), plan_taken,
                      query=plan.reconcile.query if plan.reconcile else None,
                      max_age=opts.reconcile_max_age, workdir=scratch,
                      encoding=plan.references.encoding, base=plan.references.base,
                      exists=lambda ks: store.current(list(ks)).keys(), refuse_claimed=True)


def _run_stage(opts: ExecuteOptions, ctx: _Context, rec: Reconciler, lock: Lock | None,
               state: StageState, *, cutoff: datetime, precision: timedelta) -> ExecuteResult:
    """Audit, journal and record the stage around its batches; the health gate first."""
    bundle, plan_id, store, pub = ctx.bundle, ctx.plan_id, ctx.store, ctx.pub
    if not opts.dry_run:
        entry = audit.append(store, "stage-start", plan_id=plan_id, principal=opts.executor,
                             key=opts.key,
                             details={"stage": opts.stage, "resume": state.batches_done > 0})
        if pub.stage_record(opts.stage, "started") is None:
            pub.write_stage_record(opts.stage, "started", stage_doc(
                plan_id, opts.stage, "started", executor=opts.executor,
                audit_head=audit.head_of(entry), now=ctx.now))
    journal = Journal(bundle.journal_path(opts.stage, opts.dry_run))
    if opts.dry_run and os.path.exists(journal.path):
        os.unlink(journal.path)
    if state.batches_done == 0:
        health_gate(opts, bundle, store, rec, journal, plan_id)
    journal.write("stage-start", executor=opts.executor, plan_id=plan_id,
                  batch_size=opts.batch_size, dry_run=opts.dry_run)
    watchdog = _start_watchdog(opts, ctx, rec, journal, lock)
    result = _run_batches(opts, bundle, ctx.plan.quarantine, store, rec, journal,
                          state.done_batches, lock, pub, cutoff=cutoff, precision=precision,
                          watchdog=watchdog)
    if watchdog is not None:
        watchdog.finish()  # a stage is never recorded finished over a failing check
    journal.write("stage-complete", moved=result.moved, skipped=result.skipped)
    if not opts.dry_run:
        entry = audit.append(store, "stage-end", plan_id=plan_id, principal=opts.executor,
                             key=opts.key,
                             details=result.to_json())
        pub.write_stage_record(opts.stage, "finished", stage_doc(
            plan_id, opts.stage, "finished", executor=opts.executor,
            audit_head=audit.head_of(entry), now=datetime.now(UTC), moved=result.moved,
            moved_bytes=result.moved_bytes, skipped=result.skipped))
    return result


def _start_watchdog(opts: ExecuteOptions, ctx: _Context, rec: Reconciler, journal: Journal,
                    lock: Lock | None) -> Watchdog | None:
    """The in-stage watchdog (cleanup.watchdog): its canary chosen and measured now; on a
    failed check it halts the stage and restores it through :func:`_restore_stage`. A dry
    run removes nothing and is not watched."""
    if opts.dry_run:
        return None
    settings = WatchSettings(opts.watch_every_batches, opts.watch_every_seconds,
                             opts.on_failure, opts.canary_sample, opts.health_checks,
                             opts.health_timeout)
    return Watchdog.start(
        settings, store=ctx.store, pub=ctx.pub, journal=journal, rec=rec, bundle=ctx.bundle,
        stage=opts.stage, executor=opts.executor, key=opts.key,
        # The batch records a runner signed (the view the stage itself wrote through).
        restore=lambda: _restore_stage(ctx.store, ctx.pub, ctx.bundle, opts.stage, None,
                                       opts.executor),
        heartbeat=lock.refresh if lock is not None else None)


def _refuse_halted(state: StageState, opts: ExecuteOptions) -> None:
    if state.state == "halted" and not opts.dry_run:
        by = "the watchdog" if (state.halt or {}).get("by") == "watchdog" else "reconciliation"
        raise InvariantViolation(I10 if by == "the watchdog" else I9,
                                 f"stage {opts.stage} was halted by {by} "
                                 "(store record); a halt is lifted only by a new signed "
                                 "plan", hint="make a new plan from fresh inputs")


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
                 lock: Lock | None, pub: Published, *, cutoff: datetime,
                 precision: timedelta, watchdog: Watchdog | None = None) -> ExecuteResult:
    """The stage's batches in order: those the store's batch records show done are
    counted from them, the others run. Rows come from the bundle's verified private copy
    of the manifest (the bytes that were checked are the bytes used). A dry run sees the
    store through :class:`DryRunStore` (nothing is touched) and looks at every batch
    again."""
    plan_id = bundle.plan_id
    if opts.dry_run:
        store, done = DryRunStore(store), {}
    runner = _BatchRunner(opts, plan_id, mode, store, rec, journal, cutoff, precision,
                          _versioned(store) if mode == "versioning" else None,
                          None if opts.dry_run else pub,
                          open_copy_check(bundle.plan.copies, store, opts.endpoint_url))
    res = ExecuteResult(plan_id, opts.stage, opts.dry_run)
    totals: Counter[str] = Counter()

    def account(b: int, moved: int, moved_bytes: int, skipped: Counter[str],
                ran: bool) -> None:
        res.moved += moved
        res.moved_bytes += moved_bytes
        totals.update(skipped)
        if ran:
            if lock is not None:
                lock.refresh()
            if opts.progress:
                opts.progress(res.moved, res.moved_bytes)
            if watchdog is not None:  # may halt the stage here, before the next batch
                watchdog.after_batch(b)

    # Pipelined (issue 18): while batch k is being removed (a worker thread), batch k+1 is
    # reconciled and re-checked here. Batch k+1 is touched only after both, and only after
    # batch k has finished (record and journal written) and passed the watchdog (I9).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="remove") as pool:
        pending: tuple[int, Future[tuple[int, int, Counter[str]]]] | None = None

        def settle() -> None:
            nonlocal pending
            if pending is not None:
                pb, fut = pending
                pending = None
                account(pb, *fut.result(), ran=True)

        try:
            for b, batch in enumerate(bundle.iter_stage(opts.stage, opts.batch_size)):
                digest = _digest([o.key for o in batch])
                res.batches += 1
                if b in done:
                    settle()
                    account(b, *_journaled_batch(b, done[b], digest), ran=False)
                    res.resumed_batches += 1
                    continue
                prepared = runner.prepare(b, batch, digest)
                settle()
                pending = (b, pool.submit(runner.finish, prepared))
            settle()
        finally:
            if pending is not None:  # an error here: let the batch in flight finish
                pending[1].exception()
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
class _Prepared:
    """A batch reconciled and re-checked, not yet touched: what to remove, the skip
    reasons so far, and what an earlier run already removed."""

    b: int
    batch: list[ObjectInfo]
    digest: str
    to_remove: list[ObjectInfo]
    skipped: Counter[str]
    already: set[str]
    markers: dict[str, str]


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
    pub: Published | None  # where batch records go (None: a dry run records nothing)
    copies: CopyCheck | None = None  # a retirement's copies, re-verified per batch (I11)

    def run(self, b: int, batch: list[ObjectInfo], digest: str) -> tuple[int, int, Counter[str]]:
        """(objects removed, their bytes, skip reasons) of batch ``b``."""
        return self.finish(self.prepare(b, batch, digest))

    def prepare(self, b: int, batch: list[ObjectInfo], digest: str) -> _Prepared:
        """Reconcile (I9) and re-check batch ``b``; nothing of it is touched here."""
        keys = [o.key for o in batch]
        self.journal.write("batch-start", batch=b, digest=digest, keys=len(keys))
        self._reconcile(b, keys)
        self.journal.write("batch-reconciled", batch=b)
        recheck_copies(self.copies, batch, b, self.journal)
        cur = self.store.current(keys)
        already, markers = self._already_removed([o for o in batch if o.key not in cur])
        to_remove, skipped = self._select(batch, cur, already)
        self.journal.write("batch-checked", batch=b, remove=len(to_remove), already=len(already))
        return _Prepared(b, batch, digest, to_remove, skipped, already, markers)

    def finish(self, p: _Prepared) -> tuple[int, int, Counter[str]]:
        """Remove what :meth:`prepare` selected, record and journal the batch: (objects
        removed, their bytes, skip reasons)."""
        b, batch, digest, skipped, already, markers = (p.b, p.batch, p.digest, p.skipped,
                                                       p.already, p.markers)
        outcome, new_markers = self._remove(p.to_remove)
        markers.update(new_markers)
        sizes = {o.key: o.size for o in batch}
        moved = [k for k, err in outcome.items() if err is None] + sorted(already)
        for err in outcome.values():
            if err is not None:
                skipped[err if err in ("changed", "missing") else "error"] += 1
        moved_bytes = sum(sizes[k] for k in moved)
        if self.pub is not None:
            # The store's record of what this batch removed, and where to: restore and
            # purge touch only these (I11), the stage gate and resume count them (I10).
            removed = {k: markers.get(k) or quarantine_key(self.plan_id, k) for k in moved}
            self.pub.write_batch_record(self.opts.stage, b, {
                "type": "cleanup-batch-record", "plan_id": self.plan_id,
                "stage": self.opts.stage, "batch": b, "digest": digest, "mode": self.mode,
                "moved": len(moved), "moved_bytes": moved_bytes, "skipped": dict(skipped),
                "removed": removed})
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


def _recorded_keys(pub: Published, bundle: PlanBundle, stage: int,
                   key: str | None) -> dict[str, str]:
    """I11: the keys the store's batch records show this stage removed, that are also
    rows of the stage in the signed manifest and confined store paths (a record naming
    anything else is ignored): key -> delete-marker version, or its quarantine key."""
    from cleanup.core.paths import unsafe_key_reason

    kind = parse_store(bundle.plan.store).kind
    recorded = pub.quarantined(stage)
    planned = {o.key for batch in bundle.iter_stage(stage, 1000) for o in batch
               if o.key in recorded}
    return {k: v for k, v in recorded.items()
            if k in planned and (key is None or k == key)
            and unsafe_key_reason(k, kind=kind) is None}


def restore(plan_dir: str, *, stage: int | None = None, key: str | None = None,
            endpoint_url: str | None = None, region: str | None = None,
            principal: str | None = None) -> dict[str, int]:
    """Bring quarantined objects back; never overwrite an object written since. Only
    keys the store's stage records show removed are touched (I11). Restoring needs no
    second person: it is the way back, and must not wait in an incident."""
    with PlanBundle.open(plan_dir) as local:
        local_plan, plan_id = local.plan, local.plan_id
    store = open_plan_store(local_plan, endpoint_url, region)
    pub = Published(store, plan_id)
    bundle = PlanBundle.fetch(store, plan_id, work_root=plan_dir)
    try:
        plan = bundle.plan
        bundle.check_manifest()
        counts: Counter[str] = Counter()
        stages = [stage] if stage is not None else [s.stage for s in plan.stages]
        for st in stages:
            counts.update(_restore_stage(store, pub, bundle, st, key, principal))
        audit.append(store, "restore", plan_id=plan_id, principal=principal,
                     details={"stage": stage, "key": key, "counts": dict(counts)})
        return dict(counts)
    finally:
        bundle.close()


def _restore_stage(store: Store, pub: Published, bundle: PlanBundle, st: int, key: str | None,
                   principal: str | None) -> Counter[str]:
    """Restore one stage's recorded, planned, confined keys (I11) and record it (the
    journal and a store restore record); the caller audits. ``cleanup restore`` and the
    watchdog's automatic restore (cleanup.watchdog) both come here."""
    plan_id = bundle.plan_id
    keys = _recorded_keys(pub, bundle, st, key)
    if bundle.plan.quarantine == "versioning":
        stage_counts = _restore_markers(keys, store)
    else:
        bulk = capability(store, BulkRestoreStore)  # S3: listings, not HEADs (issue 18)
        stage_counts = (Counter(bulk.restore_many(plan_id, sorted(keys)).values())
                        if bulk is not None and keys else
                        _each_key(store, lambda k: store.restore(plan_id, k), sorted(keys)))
    if stage_counts.get("restored"):
        Journal(bundle.journal_path(st)).write("restored", key=key, counts=dict(stage_counts))
        pub.create_doc(("stages", str(st), f"restored.{os.urandom(8).hex()}.json"),
                       {"type": "cleanup-restore-record", "plan_id": plan_id,
                        "stage": st, "key": key, "counts": dict(stage_counts),
                        "principal": principal})
    return stage_counts


#: concurrent single-key restores on a remote store: each is a few round trips, where
#: removal copies many at a time and deletes in batches (restore must not be the slow way)
RESTORE_WORKERS = 16


def _each_key(store: Store, fn: Callable[[str], str], keys: list[str]) -> Counter[str]:
    """``fn`` over ``keys`` (one outcome each), concurrently unless the store is local."""
    if store.ref.kind == "local" or len(keys) < 2:
        return Counter(fn(k) for k in keys)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=RESTORE_WORKERS) as pool:
        return Counter(pool.map(fn, keys))


def _restore_markers(markers: dict[str, str], store: Store) -> Counter[str]:
    """Versioning mode: remove the delete markers the stage's records name."""
    if not markers:
        return Counter()
    versioned = _versioned(store)
    return _each_key(store, lambda k: versioned.remove_marker(k, markers[k]), sorted(markers))


@dataclass(frozen=True)
class PurgeOptions:
    plan_dir: str
    stage: int
    executor: str
    key: str
    trust_root: str | None = None
    config: str | None = None
    wait: float = 0.0
    anchor: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    now: datetime | None = None  # library tests inject the store clock; the CLI never does


def purge(opts: PurgeOptions) -> int:
    """Remove a finished stage's quarantine for good, after its retention (I11): same
    sign-off as execution, a witness of a purge challenge (I8), retention measured from
    the store's ``finished`` record by the store's clock (I10, I18)."""
    with ExitStack() as stack:
        ctx = authorize(opts.plan_dir, trust_root=opts.trust_root, config=opts.config,
                        endpoint_url=opts.endpoint_url, region=opts.region,
                        injected_now=opts.now, stack=stack, anchor=opts.anchor)
        eopts = ExecuteOptions(plan_dir=opts.plan_dir, stage=opts.stage,
                               executor=opts.executor, key=opts.key)
        _prove_runner(eopts, ctx.trust, ctx.allowed, ctx.plan_id, ctx.now)
        pub, store = ctx.pub, ctx.store
        pub.as_runner(opts.executor, opts.key)
        _require_retention_over(pub, opts.stage, ctx.plan.policy.retention, ctx.now)
        intact = audit.require_intact(store, referenced=referenced_heads(pub))
        head = intact.head_ref
        found = require_witness(pub, "purge", opts.stage, ctx.plan, ctx.trust, ctx.allowed,
                                executor=opts.executor, audit_head=head, now=ctx.now,
                                wait=opts.wait, used=intact.consumed,
                                clock=None if opts.now else lambda: store_now(store, None))
        consume(pub, found, executor=opts.executor, audit_head=head, now=ctx.now)
        audit.append(store, "witness-consumed", plan_id=ctx.plan_id, principal=opts.executor,
                     key=opts.key,
                     details={"stage": opts.stage, "action": "purge",
                              "challenge": found.challenge, "witness": found.witness})
        keys = _recorded_keys(pub, ctx.bundle, opts.stage, None)
        if ctx.plan.quarantine == "versioning":
            versioned = _versioned(store) if keys else None
            n = sum(versioned.purge_versions(k, m) for k, m in keys.items()) if versioned else 0
        else:
            n = store.purge(ctx.plan_id, sorted(keys))
        Journal(ctx.bundle.journal_path(opts.stage)).write("purged", removed=n)
        entry = audit.append(store, "purge", plan_id=ctx.plan_id, principal=opts.executor,
                             key=opts.key,
                             details={"stage": opts.stage, "removed": n})
        pub.write_signed(("stages", str(opts.stage), f"purged.{entry['seq']}.json"), stage_doc(
            ctx.plan_id, opts.stage, "purged", executor=opts.executor,
            audit_head=audit.head_of(entry), now=ctx.now, removed=n),
            stage=opts.stage, event="purged")
        return n


def _require_retention_over(pub: Published, stage: int, retention: timedelta,
                            now: datetime) -> None:
    """I11: only a completed stage's quarantine, and only after the plan's retention,
    counted from the store's record of the stage's end by the store's clock."""
    st = store_stage_state(pub, stage)
    if st.state != "complete" or st.finished_at is None:
        raise InvariantViolation(I11, f"stage {stage} is {st.state} (store records); only a "
                                      "completed stage's quarantine can be purged")
    finished = parse_time(st.finished_at)
    if now < finished + retention:
        raise InvariantViolation(I11, f"stage {stage} finished at {format_time(finished)} "
                                      f"(store clock); its retention of "
                                      f"{format_duration(retention)} ends at "
                                      f"{format_time(finished + retention)}",
                                 hint="quarantine is purged only after the retention")
