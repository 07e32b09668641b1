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
from cleanup.core.paths import parse_store, sql_literal
from cleanup.core.policy import Policy
from cleanup.core.timeutil import format_duration, format_time, parse_time
from cleanup.errors import InvariantViolation, ReconciliationHalt, SignoffError, UsageError
from cleanup.journal import Journal, StageState, journal_path, stage_state
from cleanup.stores.base import ObjectInfo, quarantine_key

if TYPE_CHECKING:
    from cleanup.stores.base import Store

from cleanup.core.names import I9, I11, I13

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def open_plan_store(plan: dict[str, Any], endpoint_url: str | None,
                    region: str | None) -> Store:
    """Open the plan's store and refuse one whose region differs from the plan's (I13)."""
    from cleanup.stores import open_store

    ref = parse_store(str(plan["store"]))
    # A plan made from an mtime-only listing (--trust-mtime, recorded and shown to
    # reviewers) is re-checked with the same clock; the etag still catches any rewrite.
    inventory = plan.get("inputs", {}).get("inventory", {})
    store = open_store(ref, endpoint_url=endpoint_url,
                       region=region if ref.kind == "local" else (region or plan.get("region")),
                       trust_mtime=ref.kind == "local" and inventory.get("time_source") == "mtime")
    actual = store.region()
    if actual != plan.get("region"):
        raise InvariantViolation(I13, f"store {ref.url} is in region {actual}, the plan is bound "
                                      f"to {plan.get('region')}",
                                 hint="execute in the plan's region; plans, quarantine and "
                                      "copies never leave it")
    return store


def stage_gate(plan_dir: str, plan: dict[str, Any], stage: int, now: datetime) -> None:
    """I10, the part the journal can answer: order, flags, skip ratio and hold."""
    from cleanup.core.stages import PrevStage
    from cleanup.core.stages import stage_gate as gate

    stages = {int(s["stage"]): s for s in plan.get("stages", [])}
    if stage not in stages:
        raise UsageError(f"plan has no stage {stage} (stages: {sorted(stages)})")
    prev = None
    if stage > 0:
        st = stage_state(plan_dir, stage - 1)
        prev = PrevStage(stage - 1, st.state,
                         parse_time(st.finished_at) if st.finished_at else None,
                         int(stages[stage - 1]["objects"]), sum(st.skipped.values()))
    policy = Policy.from_json(plan.get("policy", {}))
    gate(stage, prev, hold=_parse_hold(plan), max_skip_fraction=policy.max_skip_fraction,
         now=now).raise_if_failed()


def health_gate(opts: ExecuteOptions, plan: dict[str, Any], store: Store, rec: Any,
                journal: Journal, plan_id: str) -> None:
    """I10's health gate before stage k > 0: read probe and user health checks."""
    from cleanup.health import read_probe, run_health_checks

    if opts.stage == 0:
        return
    policy = Policy.from_json(plan.get("policy", {}))
    checks = [read_probe(store, rec, plan, opts.plan_dir, opts.stage - 1, policy.probe_sample)]
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


def _parse_hold(plan: dict[str, Any]) -> timedelta:
    from cleanup.core.timeutil import parse_duration

    return parse_duration(str(plan.get("hold", "24h")))


def _require_versioning(store: Store) -> None:
    """Versioning mode needs versioning Enabled: on a Suspended bucket a delete destroys
    the null version, so nothing would be recoverable (I11)."""
    from cleanup.stores.s3 import S3Store

    if not isinstance(store, S3Store):
        raise UsageError("quarantine mode 'versioning' needs an S3 store")
    status = store.versioning_status()
    if status != "Enabled":
        raise InvariantViolation(I11, f"bucket {store.ref.bucket} has versioning "
                                      f"{status or 'never enabled'}; versioning mode needs "
                                      "Enabled (a delete on a Suspended bucket destroys data)",
                                 hint="enable versioning, or re-plan with --quarantine copy")


def iter_stage(plan_dir: str, stage: int, batch_size: int) -> Iterator[list[ObjectInfo]]:
    """The stage's manifest rows in key order, ``batch_size`` at a time."""
    import duckdb

    con = duckdb.connect()
    try:
        reader = con.sql(
            "SELECT key, size, epoch_us(last_modified) AS lm, etag FROM "
            f"read_parquet({sql_literal(os.path.join(plan_dir, 'manifest.parquet'))}) "
            f"WHERE stage = {int(stage)} ORDER BY key").to_arrow_reader(batch_size)
        batch: list[ObjectInfo] = []
        for rb in reader:
            for key, size, lm, etag in zip(*(rb.column(i).to_pylist() for i in range(4)),
                                           strict=True):
                if key is None or size is None or lm is None:
                    raise _incomplete_row(plan_dir, key)
                batch.append(ObjectInfo(key, int(size), _EPOCH + timedelta(microseconds=lm),
                                        etag))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
    finally:
        con.close()


def check_manifest(plan_dir: str) -> None:
    """Refuse (usage error, before anything is touched) a manifest with a row that lacks
    its key, size or last_modified: planning refuses such inventories, an old plan may not."""
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT key FROM "
            f"read_parquet({sql_literal(os.path.join(plan_dir, 'manifest.parquet'))}) "
            "WHERE key IS NULL OR size IS NULL OR last_modified IS NULL LIMIT 1").fetchone()
    except duckdb.Error as exc:
        raise UsageError(f"{plan_dir}: cannot read manifest.parquet "
                         f"({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    if row is not None:
        raise _incomplete_row(plan_dir, row[0])


def _incomplete_row(plan_dir: str, key: str | None) -> UsageError:
    return UsageError(f"{plan_dir}: manifest row {key!r} has no size or last_modified "
                      "(NULL); this plan cannot be executed, restored or purged as is",
                      hint="make a new plan; quarantined objects stay under "
                           "_cleanup/quarantine/<plan-id>/ until then")


def _digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def _sign_executor(opts: ExecuteOptions, plan_id: str, now: datetime) -> None:
    """The executor proves who it is: a signature checked against allowed_signers now."""
    from cleanup.core.canonical import canonical_json
    from cleanup.signing import NS_WITNESS, sign_file
    from cleanup.signoff import ssh_verify

    doc = {"plan_id": plan_id, "stage": opts.stage, "signer": opts.executor,
           "signed_at": format_time(now), "role": "executor"}
    path = os.path.join(opts.plan_dir, "journal", f"stage-{opts.stage}.executor."
                                                  f"{opts.executor}.json")
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
    from cleanup.core.names import I8
    from cleanup.lock import Lock
    from cleanup.reconcile import Reconciler
    from cleanup.signoff import check_presence, require_verified

    now = opts.now or datetime.now(UTC)
    rep = require_verified(opts.plan_dir, opts.allowed_signers, now)  # I6 -> 3, I7 -> 4
    plan, plan_id = rep.plan, rep.plan_id
    check_manifest(opts.plan_dir)
    done_state = stage_state(opts.plan_dir, opts.stage)
    if done_state.state == "complete" and not opts.dry_run:
        return _already_complete(plan_id, opts.stage, done_state)
    if not opts.dry_run:
        presence, _w = check_presence(opts.plan_dir, opts.stage, opts.executor,
                                      opts.allowed_signers, now)
        if not presence.ok:
            raise SignoffError(f"{I8}: {presence.detail}", hint=presence.hint)
        _sign_executor(opts, plan_id, now)
    stage_gate(opts.plan_dir, plan, opts.stage, now)
    store = open_plan_store(plan, opts.endpoint_url, opts.region)
    audit.require_intact(store)  # a tampered audit log stops all cleanup (I14)
    mode = str(plan.get("quarantine", "copy"))
    if mode == "versioning":
        _require_versioning(store)
    state = stage_state(opts.plan_dir, opts.stage)
    _refuse_halted(state, opts)
    plan_taken = parse_time(plan["inputs"]["snapshot"]["taken_at"]["time"])
    cutoff, precision = _cutoff_rule(plan, store)
    journal_dir = os.path.join(opts.plan_dir, "journal")
    lock = None
    rec = None
    scratch: str | None = None
    try:
        if not opts.dry_run:
            lock, broken = Lock.acquire(
                store, executor=opts.executor, plan_id=plan_id, break_lock=opts.break_lock,
                unsafe_store=bool(plan.get("unsafe_store_without_conditional_writes")))
            if broken is not None:
                audit.append(store, "lock-broken", plan_id=plan_id, principal=opts.executor,
                             details={"previous": broken})
            # Only now, holding the store lock, is the shared scratch ours to clear: what is
            # in it was left by a killed run, never by a running one (that would hold the
            # lock). The journal, too, is read again: it may have moved on while we waited.
            scratch = os.path.join(journal_dir, ".scratch")
            shutil.rmtree(scratch, ignore_errors=True)
            state = stage_state(opts.plan_dir, opts.stage)
            _refuse_halted(state, opts)
            if state.state == "complete":
                return _already_complete(plan_id, opts.stage, state)
        else:
            # A dry run takes no lock: it gets a private scratch and removes only that.
            os.makedirs(journal_dir, exist_ok=True)
            scratch = tempfile.mkdtemp(prefix=".scratch-dry-run-", dir=journal_dir)
        refs = plan.get("references") or {}
        rec = Reconciler(opts.reconcile_with, parse_store(str(plan["store"])), plan_taken,
                         query=opts.reconcile_query, max_age=opts.reconcile_max_age,
                         workdir=scratch, encoding=refs.get("encoding"),
                         base=refs.get("base"),
                         exists=lambda ks: store.current(list(ks)).keys())
        if not opts.dry_run:
            audit.append(store, "stage-start", plan_id=plan_id, principal=opts.executor,
                         details={"stage": opts.stage, "resume": state.batches_done > 0})
        journal = Journal(journal_path(opts.plan_dir, opts.stage, opts.dry_run))
        if opts.dry_run and os.path.exists(journal.path):
            os.unlink(journal.path)
        if state.batches_done == 0:
            health_gate(opts, plan, store, rec, journal, plan_id)
        journal.write("stage-start", executor=opts.executor, plan_id=plan_id,
                      batch_size=opts.batch_size, dry_run=opts.dry_run)
        result = _run_batches(opts, plan_id, mode, store, rec, journal, state.done_batches, lock,
                              cutoff=cutoff, precision=precision)
        journal.write("stage-complete", moved=result.moved, skipped=result.skipped)
        if not opts.dry_run:
            audit.append(store, "stage-end", plan_id=plan_id, principal=opts.executor,
                         details=result.to_json())
    except ReconciliationHalt as exc:
        if not opts.dry_run:
            audit.append(store, "halt", plan_id=plan_id, principal=opts.executor,
                         details={"stage": opts.stage, "reason": exc.message[:2000]})
        raise
    else:
        return result
    finally:
        if rec is not None:
            rec.close()
        if opts.dry_run and scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if lock is not None:
            lock.release()


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


def _cutoff_rule(plan: dict[str, Any], store: Store) -> tuple[datetime, timedelta]:
    """The plan's cutoff and the precision its I2 rule is applied with at execution:
    the larger of the inventory's precision and the store's own listing precision."""
    from cleanup.core.timeutil import parse_duration

    try:
        cutoff = parse_time(str(plan["cutoff"]["time"]))
        listed = parse_duration(str(plan["inputs"]["inventory"]["precision"]))
    except (KeyError, TypeError):
        raise UsageError("plan.json has no cutoff time or inventory precision",
                         hint="make a new plan with this version of cleanup") from None
    return cutoff, max(listed, store.precision)


def _run_batches(opts: ExecuteOptions, plan_id: str, mode: str, store: Store, rec: Any,
                 journal: Journal, done: dict[int, dict[str, Any]], lock: Any, *,
                 cutoff: datetime, precision: timedelta) -> ExecuteResult:
    res = ExecuteResult(plan_id, opts.stage, opts.dry_run)
    totals: Counter[str] = Counter()
    for b, batch in enumerate(iter_stage(opts.plan_dir, opts.stage, opts.batch_size)):
        keys = [o.key for o in batch]
        digest = _digest(keys)
        res.batches += 1
        if b in done and not opts.dry_run:
            if done[b].get("digest") != digest:
                raise UsageError(f"journal batch {b} does not match the manifest "
                                 "(batch size changed?)", hint="resume with the same settings")
            res.moved += int(done[b].get("moved", 0))
            res.moved_bytes += int(done[b].get("moved_bytes", 0))
            totals.update({k: int(v) for k, v in done[b].get("skipped", {}).items()})
            res.resumed_batches += 1
            continue
        journal.write("batch-start", batch=b, digest=digest, keys=len(keys))
        hits = rec.referenced(keys)
        if hits:
            journal.write("halt", batch=b, referenced=hits[:1000], count=len(hits))
            raise ReconciliationHalt(
                f"I9 reconcile: {len(hits)} key(s) of stage {opts.stage} batch {b} are "
                f"referenced by live metadata, e.g. {hits[0]!r}; nothing in this batch was "
                "touched and the stage is halted",
                hint="investigate, then make a new plan from fresh inputs")
        journal.write("batch-reconciled", batch=b)
        cur = store.current(keys)
        missing = [o for o in batch if o.key not in cur]
        already: set[str] = set()
        markers: dict[str, str] = {}
        if missing and mode == "copy":
            q = store.current([quarantine_key(plan_id, o.key) for o in missing])
            already = {o.key for o in missing
                       if (qi := q.get(quarantine_key(plan_id, o.key))) and qi.size == o.size}
        elif missing and mode == "versioning" and not opts.dry_run:
            for o in missing:
                m = store.marker_for(o.key, o.etag)  # type: ignore[attr-defined]
                if m is not None:
                    already.add(o.key)
                    markers[o.key] = m
        skipped: Counter[str] = Counter()
        to_remove = []
        for o in batch:
            c = cur.get(o.key)
            if c is None:
                if o.key not in already:
                    skipped["missing"] += 1
            elif (c.size != o.size or (c.etag != o.etag and o.etag is not None)
                  or c.last_modified + precision > cutoff):
                # Rewritten since the inventory, or written at or after the cutoff by the
                # I2 rule (same content re-uploaded keeps an S3 etag, not its time).
                skipped["changed"] += 1
            else:
                to_remove.append(o)
        journal.write("batch-checked", batch=b, remove=len(to_remove), already=len(already))
        if opts.dry_run:
            outcome: dict[str, str | None] = {o.key: None for o in to_remove}
        elif mode == "none":
            outcome = store.delete(to_remove)
        elif mode == "versioning":
            outcome, new_markers = store.delete_to_markers(to_remove)  # type: ignore[attr-defined]
            markers.update(new_markers)
        else:
            outcome = store.quarantine(plan_id, to_remove)
        sizes = {o.key: o.size for o in batch}
        moved = [k for k, err in outcome.items() if err is None] + sorted(already)
        for err in outcome.values():
            if err is not None:
                skipped[err if err in ("changed", "missing") else "error"] += 1
        moved_bytes = sum(sizes[k] for k in moved)
        journal.write("batch-done", batch=b, digest=digest, moved=len(moved),
                      moved_bytes=moved_bytes, skipped=dict(skipped), markers=markers,
                      errors={k: e for k, e in outcome.items()
                              if e not in (None, "changed", "missing")})
        res.moved += len(moved)
        res.moved_bytes += moved_bytes
        totals.update(skipped)
        if lock is not None:
            lock.refresh()
        if opts.progress:
            opts.progress(res.moved, res.moved_bytes)
    res.skipped = dict(totals)
    return res


def restore(plan_dir: str, *, stage: int | None = None, key: str | None = None,
            endpoint_url: str | None = None, region: str | None = None) -> dict[str, int]:
    """Bring quarantined objects back; never overwrite an object written since."""
    from cleanup.show import load_plan

    plan, plan_id = load_plan(plan_dir)
    check_manifest(plan_dir)
    store = open_plan_store(plan, endpoint_url, region)
    counts: Counter[str] = Counter()
    stages = [stage] if stage is not None else [int(s["stage"]) for s in plan["stages"]]
    for st in stages:
        stage_counts: Counter[str] = Counter()
        if plan.get("quarantine") == "versioning":
            for k, marker in _markers(plan_dir, st).items():
                if key is None or k == key:
                    stage_counts[store.remove_marker(k, marker)] += 1  # type: ignore[attr-defined]
        else:
            for batch in iter_stage(plan_dir, st, 1000):
                for o in batch:
                    if key is None or o.key == key:
                        stage_counts[store.restore(plan_id, o.key)] += 1
        if stage_counts.get("restored"):
            Journal(journal_path(plan_dir, st)).write("restored", key=key,
                                                      counts=dict(stage_counts))
        counts.update(stage_counts)
    audit.append(store, "restore", plan_id=plan_id,
                 details={"stage": stage, "key": key, "counts": dict(counts)})
    return dict(counts)


def purge(plan_dir: str, *, stage: int, allowed_signers: str, executor: str,
          endpoint_url: str | None = None, region: str | None = None,
          now: datetime | None = None) -> int:
    """Remove a finished stage's quarantine for good, after its retention (I11)."""
    from cleanup.core.names import I8
    from cleanup.signoff import check_presence, require_verified

    now = now or datetime.now(UTC)
    rep = require_verified(plan_dir, allowed_signers, now)
    check_manifest(plan_dir)
    presence, _w = check_presence(plan_dir, stage, executor, allowed_signers, now)
    if not presence.ok:
        raise SignoffError(f"{I8}: {presence.detail}", hint=presence.hint)
    st = stage_state(plan_dir, stage)
    retention = Policy.from_json(rep.plan.get("policy", {})).retention
    if st.state != "complete" or st.finished_at is None:
        raise InvariantViolation(I11, f"stage {stage} is {st.state}; only a completed stage's "
                                      "quarantine can be purged")
    finished = parse_time(st.finished_at)
    if now < finished + retention:
        raise InvariantViolation(I11, f"stage {stage} finished at {format_time(finished)}; its "
                                      f"retention of {format_duration(retention)} ends at "
                                      f"{format_time(finished + retention)}",
                                 hint="quarantine is purged only after the retention")
    store = open_plan_store(rep.plan, endpoint_url, region)
    if rep.plan.get("quarantine") == "versioning":
        n = sum(store.purge_versions(k, m)  # type: ignore[attr-defined]
                for k, m in _markers(plan_dir, stage).items())
    else:
        keys = [o.key for batch in iter_stage(plan_dir, stage, 1000) for o in batch]
        n = store.purge(rep.plan_id, keys)
    Journal(journal_path(plan_dir, stage)).write("purged", removed=n)
    audit.append(store, "purge", plan_id=rep.plan_id, principal=executor,
                 details={"stage": stage, "removed": n})
    return n


def _markers(plan_dir: str, stage: int) -> dict[str, str]:
    """Delete-marker version ids recorded by a versioning-mode stage (key -> version)."""
    from cleanup.journal import read_records

    out: dict[str, str] = {}
    for rec in read_records(journal_path(plan_dir, stage)):
        if rec.get("event") == "batch-done":
            out.update(rec.get("markers") or {})
    return out
