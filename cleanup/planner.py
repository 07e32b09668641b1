"""``cleanup plan``: from an inventory and a snapshot to a signed, content-addressed plan.

Order of work: read the inputs' facts, check I3 and I1 (no store access yet),
probe the store's clock and region (I15, I13), run the DuckDB anti-join, check
I2, I4, I5 and I16 on the result, assign stages, then write the bundle into a
temporary directory beside the target and rename it into place only after the
author's signature exists. A refusal therefore leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup import __version__
from cleanup.bundle import MANIFEST, BundleLayout, PlanBundle
from cleanup.core import invariants as inv
from cleanup.core.canonical import canonical_json, sha256_file, sha256_hex
from cleanup.core.names import I10, I11, I13, I19
from cleanup.core.paths import StoreRef, normalize_ref, parse_store
from cleanup.core.policy import Policy
from cleanup.core.stages import (
    DEFAULT_TENANT_PATTERN,
    assign_stage,
    compile_tenant_pattern,
    parse_stages,
)
from cleanup.core.timeutil import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_DURATION,
    format_duration,
    format_time,
    parse_time,
)
from cleanup.errors import InvariantViolation, UsageError
from cleanup.inputs import check_inventory, check_snapshot, input_meta, input_sha256
from cleanup.model import (
    PLAN_FORMAT,
    CheckRecord,
    Inputs,
    InventoryInfo,
    ManifestInfo,
    Plan,
    ReconcileInfo,
    ReferencesInfo,
    Scope,
    Signature,
    SnapshotInfo,
    Stage,
    Stamp,
    TableInfo,
    Tool,
    TrustInfo,
)

if TYPE_CHECKING:
    from cleanup.engine import EngineResult, PlanEngine
    from cleanup.retire import CopyOptions, CopyPlan

QUARANTINE_MODES = ("copy", "versioning", "none")


@dataclass(frozen=True)
class PlanOptions:
    store: str
    inventory: str
    snapshot: str
    out: str
    author: str
    key: str
    buffer: timedelta | None = None
    cutoff: datetime | None = None
    region: str | None = None
    endpoint_url: str | None = None
    tenant_pattern: str = DEFAULT_TENANT_PATTERN
    internal: tuple[str, ...] = ()
    stages: str = "10%,100%"
    hold: timedelta | None = None
    quarantine: str = "copy"
    policy: Policy = field(default_factory=Policy)
    policy_overrides: tuple[str, ...] = ()
    override_minimums: bool = False
    sentinels: tuple[str, ...] = ()
    memory_limit: str = "1GB"
    threads: int | None = None
    engine: str = "duckdb"  # or "spark" (cleanup.engine.ENGINES)
    spark_master: str | None = None
    spark_conf: tuple[str, ...] = ()  # k=v
    unsafe_store_without_conditional_writes: bool = False
    foreign_refs_ok: tuple[str, ...] = ()
    accept_near_misses: bool = False
    #: the live metadata execution reconciles against (I9), signed with the plan (I19)
    reconcile_with: str | None = None
    reconcile_query: str | None = None
    #: the pinned trust root (I17): option, else CLEANUP_TRUST_ROOT, else config
    trust_root: str | None = None
    config: str | None = None
    trust: TrustInfo | None = None  # resolved by make_plan from the store's chain
    now: datetime | None = None  # tests only: the CLI always uses the real clock
    #: --retire-to / --require-copy-in (cleanup.retire); a retirement may have no snapshot
    copies: CopyOptions | None = None


@dataclass(frozen=True)
class PlanResult:
    path: str
    plan_id: str
    plan: Plan


@dataclass(frozen=True)
class Facts:
    """What the planner learnt before running the engine: the inputs' metadata, the
    resolved policy and durations, the cutoff, the store's region, precision and clocks,
    and the checks made so far (I3, I1, I15)."""

    ref: StoreRef
    inv_meta: dict[str, str]
    snap_meta: dict[str, str]
    policy: Policy
    buffer: timedelta
    hold: timedelta
    overrides: list[str]
    taken_at: datetime
    snapshot_rows: int | None
    cutoff: datetime
    listed_at: datetime
    precision: timedelta
    region: str
    skews: dict[str, timedelta]
    checks: list[inv.Check]
    sentinels: tuple[str, ...]
    stage_pcts: list[float]
    #: the prepared copy verification (cleanup.retire), regions already checked (I13)
    copy_plan: CopyPlan | None = None


def _retiring(opts: PlanOptions) -> bool:
    """A retirement without a reference snapshot: the copies are what keeps objects."""
    return opts.copies is not None and opts.copies.mode == "retire" and not opts.snapshot


def _input_facts(path: str, kind: str) -> dict[str, str]:
    """An input's metadata: a file, or a directory or glob of shards (cleanup.inputs)."""
    return input_meta(path, kind)


def _check_store_matches(ref: StoreRef, inv_meta: dict[str, str]) -> None:
    listed = inv_meta.get("store", "")
    try:
        same = parse_store(listed) == ref
    except UsageError:
        same = False
    if not same:
        raise InvariantViolation(
            inv.I4, f"the inventory lists store {listed!r}, but the plan is for {ref.url!r}",
            hint="list the same store the plan names: keys are relative to the store root")


def _resolve_policy(opts: PlanOptions) -> tuple[Policy, timedelta, timedelta, list[str]]:
    """Apply --buffer/--hold against the policy; lowering a floor needs --override-minimums."""
    policy = opts.policy
    overrides = list(opts.policy_overrides)
    buffer = opts.buffer if opts.buffer is not None else policy.min_buffer
    hold = opts.hold if opts.hold is not None else policy.min_hold
    if buffer < policy.min_buffer and opts.override_minimums:
        overrides.append(f"min_buffer lowered from {format_duration(policy.min_buffer)} "
                         f"to {format_duration(buffer)} (--override-minimums)")
        policy = policy.with_values({"min_buffer": buffer})
    if hold < policy.min_hold:
        if not opts.override_minimums:
            raise InvariantViolation(
                I10, f"hold {format_duration(hold)} is below the minimum "
                              f"{format_duration(policy.min_hold)}",
                hint="use a longer --hold, or --override-minimums (recorded for reviewers)")
        overrides.append(f"min_hold lowered from {format_duration(policy.min_hold)} "
                         f"to {format_duration(hold)} (--override-minimums)")
        policy = policy.with_values({"min_hold": hold})
    overrides += policy.check_floors(opts.override_minimums)
    if opts.accept_near_misses:
        overrides.append("accept_near_misses: references that differ from an inventory key "
                         "only by encoding or Unicode form are taken as different files (I4)")
    if opts.foreign_refs_ok:
        overrides.append("foreign_refs_ok: references into " + ", ".join(opts.foreign_refs_ok)
                         + " are accepted as outside this store (I4)")
    if opts.unsafe_store_without_conditional_writes:
        overrides.append("unsafe_store_without_conditional_writes: the store lock (I12) cannot "
                         "exclude a second executor")
    return policy, buffer, hold, sorted(set(overrides))


def _store_region(ref: StoreRef, store: Any, requested: str | None) -> str:
    actual = str(store.region())
    if ref.kind == "s3" and requested and requested != actual:
        raise InvariantViolation(
            I13, f"--region {requested} but bucket {ref.bucket} is in {actual}",
            hint=f"plan with --region {actual}: a plan is bound to the store's own region")
    return actual


def make_plan(opts: PlanOptions) -> PlanResult:
    """Compute, check and write a signed plan bundle at ``opts.out``.

    A refusal writes nothing but its audit entry in the store (I14).
    """
    from cleanup import audit
    from cleanup.stores import open_store

    store = None
    try:
        store = open_store(parse_store(opts.store), endpoint_url=opts.endpoint_url,
                           region=opts.region)
        opts = replace(opts, trust=_trust_info(opts, store))
        res = _make_plan(opts, store)
    except InvariantViolation as exc:
        warning = audit.try_append(store, "plan-refused", principal=opts.author, key=opts.key,
                                   details={"invariant": exc.invariant, "detail": exc.detail,
                                            "out": os.path.abspath(opts.out)})
        if warning:
            exc.message += f" ({warning})"
        raise
    audit.append(store, "plan-created", plan_id=res.plan_id, principal=opts.author, key=opts.key,
                 details={"plan_dir": res.path, "objects": res.plan.manifest.objects,
                          "bytes": res.plan.manifest.bytes,
                          "cutoff": format_time(res.plan.cutoff.time)})
    from cleanup.published import Published

    # The store holds the plan (I10): reviewers fetch it by plan id, execution reads it
    # from there; the local directory is a cache.
    Published(store, res.plan_id).publish_dir(res.path)
    return res


def _trust_info(opts: PlanOptions, store: Any) -> TrustInfo | None:
    """The verified trust root the plan is made under (I17), if one is pinned; its floors
    bound the plan's policy. Without a pin the plan can be reviewed but not executed."""
    from cleanup import trust
    from cleanup.core.names import I17
    from cleanup.core.trust import loosened
    from cleanup.errors import SignoffError

    try:
        pin = trust.resolve_pin(opts.trust_root, opts.config)
    except SignoffError:
        return None
    root = trust.verify_chain(store, pin)
    p = opts.policy
    problems = loosened(root.root.floors, p, buffer=opts.buffer or p.min_buffer,
                        hold=opts.hold or p.min_hold)
    if problems:
        raise InvariantViolation(I17, "the plan would be looser than the trust root's floors: "
                                      + "; ".join(problems),
                                 hint="stay within the floors; only the principals can lower "
                                      "them, in a new trust root version")
    return TrustInfo(root.version, root.digest)


def _make_plan(opts: PlanOptions, store: Any) -> PlanResult:
    out = _check_options(opts)
    now = opts.now or datetime.now(UTC)
    facts = _read_facts(opts, store, now)
    if opts.copies is not None:
        from cleanup.retire import prepare

        facts = replace(facts, copy_plan=prepare(
            opts.copies, source=store, source_url=facts.ref.url, source_region=facts.region,
            endpoint_url=opts.endpoint_url, config=opts.config))
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".cleanup-plan-", dir=parent)
    try:
        layout = PlanBundle.layout(os.path.join(work, "bundle"))
        res, per_stage, checks = _run_engine(opts, facts, work, layout)
        inputs = Inputs(
            InventoryInfo(os.path.abspath(opts.inventory),
                          input_sha256(opts.inventory, "inventory"),
                          facts.inv_meta.get("source"), int(facts.inv_meta.get("rows", "0")),
                          Stamp(facts.listed_at, facts.inv_meta.get("listed_at_clock", "local")),
                          facts.precision, facts.inv_meta.get("time_source", "unknown")),
            SnapshotInfo(os.path.abspath(opts.snapshot), input_sha256(opts.snapshot, "snapshot"),
                         facts.snap_meta.get("source"), facts.snapshot_rows,
                         facts.snap_meta.get("digest"),
                         Stamp(facts.taken_at, facts.snap_meta.get("taken_at_clock", "claimed")))
            if not _retiring(opts) else _no_snapshot(facts))
        from cleanup.signing import public_key_of

        plan = compute_plan(opts, facts, res, per_stage, checks, inputs=inputs,
                            manifest_sha256=sha256_file(layout.manifest_file),
                            author_key=public_key_of(opts.key), now=now)
        plan_id = _write_bundle(plan, layout, opts)
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(layout.root, out)
        return PlanResult(out, plan_id, plan)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _no_snapshot(facts: Facts) -> SnapshotInfo:
    """A retirement without a snapshot records none: its time is the store's clock."""
    target = facts.copy_plan.target_url if facts.copy_plan else "?"
    return SnapshotInfo("", sha256_hex(b""), f"retire-to:{target}", None, None,
                        Stamp(facts.taken_at, "store"))


def _check_options(opts: PlanOptions) -> str:
    """Refuse bad options before reading anything; return the absolute output directory."""
    if opts.quarantine not in QUARANTINE_MODES:
        raise UsageError(f"--quarantine must be one of {', '.join(QUARANTINE_MODES)}")
    out = os.path.abspath(opts.out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"{out} already exists and is not empty",
                         hint="a plan is immutable: write a new plan to a new directory")
    if not os.path.exists(opts.key):
        raise UsageError(f"--key {opts.key} does not exist")
    if opts.quarantine == "versioning" and parse_store(opts.store).cloud not in ("s3", "gcs"):
        raise UsageError("--quarantine versioning needs an S3 or GCS store with versioning "
                         "enabled (Azure: use --quarantine copy)")
    return out


def _read_facts(opts: PlanOptions, store: Any, now: datetime) -> Facts:
    """Read the inputs' facts, check I3 and I1 (no store access yet), then probe the
    store's region and clock (I13, I15)."""
    ref = parse_store(opts.store)
    stage_pcts = parse_stages(opts.stages)
    compile_tenant_pattern(opts.tenant_pattern)
    sentinels = tuple(sorted({_sentinel_key(s, ref) for s in opts.sentinels}))
    policy, buffer, hold, overrides = _resolve_policy(opts)
    inv_meta = _input_facts(opts.inventory, "inventory")
    snap_meta = {} if _retiring(opts) else _input_facts(opts.snapshot, "snapshot")
    _check_store_matches(ref, inv_meta)
    checks: list[inv.Check] = []
    if _retiring(opts):
        from cleanup.retire import no_snapshot_check

        # No metadata snapshot: "taken at" is the store's clock now, so the I2 rule keeps
        # every object written after the plan's clock minus the buffer.
        taken_at, rows = store.probe_clock().store_time, None
        checks.append(no_snapshot_check(taken_at))
    else:
        taken_at = parse_time(snap_meta["taken_at"]) if snap_meta.get("taken_at") else None
        rows = int(snap_meta["rows"]) if snap_meta.get("rows", "").isdigit() else None
        checks.append(inv.check_snapshot_sound(rows=rows, taken_at=taken_at,
                                               digest=snap_meta.get("digest"),
                                               source=snap_meta.get("source"), now=now))
    checks[-1].raise_if_failed()
    if taken_at is None:  # unreachable: I3 refused it above
        raise RuntimeError("snapshot without taken_at passed I3")
    _check_time_range(buffer, hold, opts.cutoff)
    c1, cutoff = inv.derive_cutoff(taken_at, buffer, policy.min_buffer, opts.cutoff)
    checks.append(c1)
    c1.raise_if_failed()
    # I2: the largest of the declared precision, the column's unit and the store's.
    precision = max(check_inventory(opts.inventory).precision, store.precision)
    if not _retiring(opts):
        check_snapshot(opts.snapshot)
    listed_at = parse_time(inv_meta["listed_at"])
    region = _store_region(ref, store, opts.region)
    skews: dict[str, timedelta] = {"store": store.probe_clock().skew()}
    if snap_meta.get("metadata_skew_us"):
        skews["metadata"] = timedelta(microseconds=int(snap_meta["metadata_skew_us"]))
    checks.append(inv.check_clocks(skews, max_skew=policy.max_clock_skew, buffer=buffer))
    checks[-1].raise_if_failed()
    return Facts(ref, inv_meta, snap_meta, policy, buffer, hold, overrides, taken_at, rows,
                 cutoff, listed_at, precision, region, skews, checks, sentinels, stage_pcts)


def _run_engine(opts: PlanOptions, facts: Facts, work: str, layout: BundleLayout,
                ) -> tuple[EngineResult, list[dict[str, Any]], list[inv.Check]]:
    """Run the anti-join, check its result (I2, I4, I5, I11, I16), write the manifest."""
    from cleanup.engine import EngineInput
    from cleanup.engines import open_engine
    from cleanup.sources.tables import decode_roots

    snapshot = os.path.abspath(opts.snapshot) if not _retiring(opts) else None
    if snapshot is None:
        from cleanup.retire import empty_snapshot

        snapshot = empty_snapshot(os.path.join(work, "no-snapshot.parquet"))
    inp = EngineInput(
        inventory=os.path.abspath(opts.inventory), snapshot=snapshot,
        store=facts.ref, cutoff=facts.cutoff, precision=facts.precision,
        tenant_pattern=opts.tenant_pattern,
        tenant_group=compile_tenant_pattern(opts.tenant_pattern), sentinels=facts.sentinels,
        memory_limit=opts.memory_limit, threads=opts.threads,
        temp_dir=os.path.join(work, ".spill"),
        ref_encoding=facts.snap_meta.get("ref_encoding", "literal"),
        ref_base=facts.snap_meta.get("ref_base") or None,
        foreign_ok=tuple(parse_store(s) for s in opts.foreign_refs_ok), engine=opts.engine,
        spark_master=opts.spark_master, spark_conf=opts.spark_conf,
        table_roots=decode_roots(facts.snap_meta.get("table_roots")))
    if facts.copy_plan is not None:
        from cleanup.retire import verify_pass

        inp = replace(inp, exclude=verify_pass(facts.copy_plan, inp, work))
    engine = open_engine(inp)
    try:
        res = engine.compute()
        checks = [*facts.checks, *check_result(opts, facts, engine, res)]
        _raise_failed(checks)
        internal = frozenset(opts.internal)
        stage_of = {t: assign_stage(t, internal, facts.stage_pcts) for t in res.tenants}
        os.makedirs(layout.approvals_dir)
        per_stage = engine.write_manifest(stage_of, layout.manifest_file)
    finally:
        engine.close()
    return res, per_stage, checks


def check_result(opts: PlanOptions, facts: Facts, engine: PlanEngine,
                 res: EngineResult) -> list[inv.Check]:
    """The checks of the engine's result: key lengths, I2, I4, I5 and I16."""
    policy = facts.policy
    checks = [
        _check_confined(engine),
        _check_key_lengths(engine, opts.quarantine),
        inv.check_precision(newest_candidate=res.newest_candidate, precision=facts.precision,
                            cutoff=facts.cutoff),
        inv.check_paths_agree(in_scope_refs=res.in_scope_refs, missing_refs=res.missing_refs,
                              out_of_scope_refs=res.out_of_scope_refs,
                              max_missing=policy.max_missing_refs,
                              examples=res.missing_examples, foreign_refs=res.foreign_refs,
                              max_foreign=policy.max_foreign_refs,
                              foreign_where=res.foreign_where,
                              unresolvable_refs=res.unresolvable_refs,
                              unresolvable_examples=res.unresolvable_examples,
                              near_misses=res.near_misses,
                              near_miss_examples=res.near_miss_examples,
                              near_misses_accepted=opts.accept_near_misses),
        inv.check_blast_radius(candidates=res.candidates, candidate_bytes=res.candidate_bytes,
                               scope_objects=res.scope_objects, scope_bytes=res.scope_bytes,
                               max_fraction=policy.max_delete_fraction, tables=res.per_table,
                               table_totals={"objects": res.table_objects,
                                             "bytes": res.table_bytes,
                                             "candidates": res.table_candidates,
                                             "candidate_bytes": res.table_candidate_bytes},
                               max_table_fraction=policy.max_table_delete_fraction),
        inv.check_table_metadata(declared_roots=res.table_roots,
                                 uncovered_roots=res.uncovered_table_roots,
                                 uncovered_examples=res.uncovered_table_examples,
                                 protected=res.table_protected),
    ]
    if facts.sentinels:
        checks.append(inv.check_sentinels(
            facts.sentinels, in_snapshot=res.sentinels_in_snapshot,
            in_inventory=res.sentinels_in_inventory, in_candidates=res.sentinels_in_candidates))
    if facts.copy_plan is not None:
        from cleanup.retire import copy_checks

        checks = copy_checks(facts.copy_plan, checks, res, snapshot=not _retiring(opts))
    return checks


def compute_plan(opts: PlanOptions, facts: Facts, res: EngineResult,
                 per_stage: list[dict[str, Any]], checks: list[inv.Check], *, inputs: Inputs,
                 manifest_sha256: str, author_key: str, now: datetime) -> Plan:
    """The plan from the input facts, the engine's result, the policy and ``now``.

    Pure: no file, clock or store access (the caller read and measured everything).
    """
    return Plan(
        format=PLAN_FORMAT, tool=Tool("cleanup", __version__), store=facts.ref.url,
        region=facts.region, created_at=Stamp(now, "local"), author=opts.author,
        author_key=author_key, inputs=inputs, buffer=facts.buffer,
        cutoff=Stamp(facts.cutoff, "derived: snapshot taken_at minus buffer"
                     if opts.cutoff is None else "given: --cutoff, checked against "
                     "snapshot taken_at minus buffer"),
        hold=facts.hold, quarantine=opts.quarantine, policy=facts.policy,
        overrides=tuple(facts.overrides), tenant_pattern=opts.tenant_pattern,
        internal=tuple(sorted(opts.internal)),
        stages=_stage_table(per_stage, facts.stage_pcts, opts.internal),
        scope=Scope(res.scope_objects, res.scope_bytes, res.newest_in_scope),
        references=_references(opts, facts, res),
        manifest=ManifestInfo(MANIFEST, manifest_sha256, res.candidates,
                              res.candidate_bytes, res.oldest_candidate, res.newest_candidate),
        sentinels=facts.sentinels,
        unsafe_store_without_conditional_writes=opts.unsafe_store_without_conditional_writes,
        clocks=dict(facts.skews),
        invariants=tuple(CheckRecord(c.invariant, c.ok, c.detail, dict(c.facts))
                         for c in checks),
        trust=opts.trust,
        reconcile=ReconcileInfo(opts.reconcile_with, opts.reconcile_query)
        if opts.reconcile_with else None,
        tables=tuple(TableInfo(t["root"], t["objects"], t["bytes"], t["metadata_objects"],
                               t["metadata_bytes"], t["candidates"], t["candidate_bytes"])
                     for t in res.per_table),
        copies=facts.copy_plan.info() if facts.copy_plan is not None else None,
    )


def _references(opts: PlanOptions, facts: Facts, res: EngineResult) -> ReferencesInfo:
    return ReferencesInfo(
        rows=res.snapshot_rows, in_scope=res.in_scope_refs, out_of_scope=res.out_of_scope_refs,
        missing=res.missing_refs, encoding=facts.snap_meta.get("ref_encoding", "literal"),
        base=facts.snap_meta.get("ref_base") or None, folders=res.folder_refs,
        implicit_folders=res.implicit_folder_refs,
        protected_by_folder=res.protected_by_folder, foreign=res.foreign_refs,
        foreign_acknowledged=res.foreign_acknowledged,
        foreign_ok=tuple(sorted(opts.foreign_refs_ok)), foreign_where=dict(res.foreign_where),
        near_misses=res.near_misses,
        near_miss_examples=tuple((a, b) for a, b in res.near_miss_examples),
        undecodable_names=res.undecodable_names)


def _write_bundle(plan: Plan, layout: BundleLayout, opts: PlanOptions) -> str:
    """Write plan.json and the author's signature into ``layout`` (manifest already there),
    fsync it all; return the plan id."""
    from cleanup.signing import NS_PLAN, sign_file

    plan_bytes = plan.to_bytes()
    with open(layout.plan_json, "wb") as fh:
        fh.write(plan_bytes)
    plan_id = plan.plan_id
    doc = Signature(plan_id, opts.author, datetime.now(UTC), "author").to_json()
    with open(layout.author_json, "wb") as fh:
        fh.write(canonical_json(doc))
    sig = sign_file(layout.author_json, opts.key, NS_PLAN)
    os.replace(sig, layout.author_sig)
    _fsync_tree(layout.root)
    return plan_id


def _check_time_range(buffer: timedelta, hold: timedelta, cutoff: datetime | None) -> None:
    """Refuse durations and times whose arithmetic would leave datetime's range."""
    for option, d in (("--buffer", buffer), ("--hold", hold)):
        if d > MAX_DURATION:
            raise UsageError(f"{option} {format_duration(d)} is longer than 100 years")
    if cutoff is not None and not EARLIEST_TIME <= cutoff < LATEST_TIME:
        raise UsageError(f"--cutoff {cutoff.isoformat()} is out of range",
                         hint="give a time between the years 1000 and 8999 (UTC)")


def _check_confined(engine: Any) -> inv.Check:
    """I19: no candidate key may climb out of its place (``..``, absolute, NUL)."""
    n, examples = engine.unsafe_keys()
    if n:
        return inv.Check(I19, False,
                         f"{n} candidate key(s) are not safe store paths ('.' or '..' "
                         f"segments, absolute, NUL or empty segments), e.g. "
                         f"{', '.join(repr(e) for e in examples)}", {"unsafe_keys": n},
                         hint="such objects must be removed by hand after review: a "
                              "quarantine path built from them could name another object")
    return inv.Check(I19, True, "every candidate key is a confined store path",
                     {"unsafe_keys": 0})


def _check_key_lengths(engine: Any, quarantine: str) -> inv.Check:
    """Keys beyond the store's limits (S3 1,024 bytes; NAME_MAX/PATH_MAX locally), or
    beyond them once moved under the quarantine prefix, are refused at plan time: a
    move that fails mid-stage is the one failure quarantine must not have."""
    n, examples = engine.long_keys(quarantine == "copy")
    invariant = I11 if quarantine == "copy" else inv.I4
    if n:
        return inv.Check(invariant, False,
                         f"{n} candidate key(s) are too long for the store"
                         + (" once moved under _cleanup/quarantine/<plan id>/"
                            if quarantine == "copy" else "")
                         + f", e.g. {', '.join(repr(e) for e in examples)}",
                         {"too_long": n},
                         hint="shorten the store root or prefix, or remove these by hand "
                              "after review")
    return inv.Check(invariant, True, "every candidate key fits the store and its quarantine",
                     {"too_long": 0})


def _sentinel_key(s: str, ref: StoreRef) -> str:
    key = normalize_ref(s, ref)
    if key is None:
        raise UsageError(f"sentinel {s!r} is not inside store {ref.url}")
    return key


def _raise_failed(checks: list[inv.Check]) -> None:
    failed = [c for c in checks if not c.ok]
    if failed:
        first = failed[0]
        also = f" (also failed: {', '.join(c.invariant for c in failed[1:])})" if failed[1:] else ""
        raise InvariantViolation(first.invariant, first.detail + also, hint=first.hint)


def _stage_table(per_stage: list[dict[str, Any]], pcts: list[float],
                 internal: tuple[str, ...]) -> tuple[Stage, ...]:
    counts = {s["stage"]: s for s in per_stage}
    out = []
    prev = 0.0
    for stage in range(len(pcts) + 1):
        if stage == 0:
            selector = "internal tenants: " + (", ".join(sorted(internal)) or "(none given)")
        else:
            selector = f"tenant hash in [{prev:g}%, {pcts[stage - 1]:g}%)"
            prev = pcts[stage - 1]
        c = counts.get(stage, {})
        out.append(Stage(stage, selector, c.get("objects", 0), c.get("bytes", 0),
                         c.get("tenants", 0)))
    return tuple(out)


def _fsync_tree(path: str) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


__all__ = ["PLAN_FORMAT", "Facts", "PlanOptions", "PlanResult", "check_result", "compute_plan",
           "make_plan"]
