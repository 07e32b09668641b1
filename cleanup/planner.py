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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup import __version__
from cleanup.core import invariants as inv
from cleanup.core.canonical import canonical_json, sha256_file, sha256_hex
from cleanup.core.names import I10, I11, I13
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
from cleanup.formats import read_meta
from cleanup.inputs import check_inventory, check_snapshot

QUARANTINE_MODES = ("copy", "versioning", "none")
PLAN_FORMAT = "cleanup-plan/1"


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
    unsafe_store_without_conditional_writes: bool = False
    foreign_refs_ok: tuple[str, ...] = ()
    accept_near_misses: bool = False
    now: datetime | None = None  # tests only: the CLI always uses the real clock


@dataclass(frozen=True)
class PlanResult:
    path: str
    plan_id: str
    plan: dict[str, Any]


def _stamp(t: datetime, clock: str) -> dict[str, str]:
    """Every timestamp in plan.json says which clock it came from (I15)."""
    return {"time": format_time(t), "clock": clock}


def _input_facts(path: str, kind: str) -> dict[str, str]:
    if not os.path.isfile(path):
        raise UsageError(f"{kind} {path}: no such file",
                         hint=f"make it with `cleanup {kind} ... -o {path}`")
    meta = read_meta(path)
    if meta.get("kind") != kind:
        raise UsageError(f"{path} is not a cleanup {kind} file (kind={meta.get('kind')!r})",
                         hint=f"make it with `cleanup {kind} ... -o FILE.parquet`")
    return meta


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
        res = _make_plan(opts, store)
    except InvariantViolation as exc:
        warning = audit.try_append(store, "plan-refused", principal=opts.author,
                                   details={"invariant": exc.invariant, "detail": exc.detail,
                                            "out": os.path.abspath(opts.out)})
        if warning:
            exc.message += f" ({warning})"
        raise
    audit.append(store, "plan-created", plan_id=res.plan_id, principal=opts.author,
                 details={"plan_dir": res.path, "objects": res.plan["manifest"]["objects"],
                          "bytes": res.plan["manifest"]["bytes"],
                          "cutoff": res.plan["cutoff"]["time"]})
    return res


def _make_plan(opts: PlanOptions, store: Any) -> PlanResult:
    from cleanup.engine import Engine, EngineInput
    from cleanup.signing import NS_PLAN, public_key_of, sign_file

    if opts.quarantine not in QUARANTINE_MODES:
        raise UsageError(f"--quarantine must be one of {', '.join(QUARANTINE_MODES)}")
    out = os.path.abspath(opts.out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"{out} already exists and is not empty",
                         hint="a plan is immutable: write a new plan to a new directory")
    if not os.path.exists(opts.key):
        raise UsageError(f"--key {opts.key} does not exist")
    ref = parse_store(opts.store)
    if opts.quarantine == "versioning" and ref.kind != "s3":
        raise UsageError("--quarantine versioning needs an S3 store with versioning Enabled")
    stage_pcts = parse_stages(opts.stages)
    group = compile_tenant_pattern(opts.tenant_pattern)
    sentinels = tuple(sorted({_sentinel_key(s, ref) for s in opts.sentinels}))
    policy, buffer, hold, overrides = _resolve_policy(opts)

    inv_meta = _input_facts(opts.inventory, "inventory")
    snap_meta = _input_facts(opts.snapshot, "snapshot")
    _check_store_matches(ref, inv_meta)
    now = opts.now or datetime.now(UTC)
    checks: list[inv.Check] = []

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
    check_snapshot(opts.snapshot)
    listed_at = parse_time(inv_meta["listed_at"])

    region = _store_region(ref, store, opts.region)
    skews: dict[str, timedelta] = {"store": store.probe_clock().skew()}
    if snap_meta.get("metadata_skew_us"):
        skews["metadata"] = timedelta(microseconds=int(snap_meta["metadata_skew_us"]))
    checks.append(inv.check_clocks(skews, max_skew=policy.max_clock_skew, buffer=buffer))
    checks[-1].raise_if_failed()

    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".cleanup-plan-", dir=parent)
    try:
        engine = Engine(EngineInput(
            inventory=os.path.abspath(opts.inventory), snapshot=os.path.abspath(opts.snapshot),
            store=ref, cutoff=cutoff, precision=precision, tenant_pattern=opts.tenant_pattern,
            tenant_group=group, sentinels=sentinels, memory_limit=opts.memory_limit,
            threads=opts.threads, temp_dir=os.path.join(work, ".spill"),
            ref_encoding=snap_meta.get("ref_encoding", "literal"),
            ref_base=snap_meta.get("ref_base") or None,
            foreign_ok=tuple(parse_store(s) for s in opts.foreign_refs_ok)))
        try:
            res = engine.compute()
            checks.append(_check_key_lengths(engine, opts.quarantine))
            checks += [
                inv.check_precision(newest_candidate=res.newest_candidate, precision=precision,
                                    cutoff=cutoff),
                inv.check_paths_agree(in_scope_refs=res.in_scope_refs,
                                      missing_refs=res.missing_refs,
                                      out_of_scope_refs=res.out_of_scope_refs,
                                      max_missing=policy.max_missing_refs,
                                      examples=res.missing_examples,
                                      foreign_refs=res.foreign_refs,
                                      max_foreign=policy.max_foreign_refs,
                                      foreign_where=res.foreign_where,
                                      unresolvable_refs=res.unresolvable_refs,
                                      unresolvable_examples=res.unresolvable_examples,
                                      near_misses=res.near_misses,
                                      near_miss_examples=res.near_miss_examples,
                                      near_misses_accepted=opts.accept_near_misses),
                inv.check_blast_radius(candidates=res.candidates,
                                       candidate_bytes=res.candidate_bytes,
                                       scope_objects=res.scope_objects,
                                       scope_bytes=res.scope_bytes,
                                       max_fraction=policy.max_delete_fraction),
            ]
            if sentinels:
                checks.append(inv.check_sentinels(
                    sentinels, in_snapshot=res.sentinels_in_snapshot,
                    in_inventory=res.sentinels_in_inventory,
                    in_candidates=res.sentinels_in_candidates))
            _raise_failed(checks)
            internal = frozenset(opts.internal)
            stage_of = {t: assign_stage(t, internal, stage_pcts) for t in res.tenants}
            bundle = os.path.join(work, "bundle")
            os.makedirs(os.path.join(bundle, "signatures", "approvals"))
            manifest = os.path.join(bundle, "manifest.parquet")
            per_stage = engine.write_manifest(stage_of, manifest)
        finally:
            engine.close()
        stages = _stage_table(per_stage, stage_pcts, opts.internal)
        plan = {
            "format": PLAN_FORMAT,
            "tool": {"name": "cleanup", "version": __version__},
            "store": ref.url,
            "region": region,
            "created_at": _stamp(now, "local"),
            "author": opts.author,
            "author_key": public_key_of(opts.key),
            "inputs": {
                "inventory": {
                    "path": os.path.abspath(opts.inventory),
                    "sha256": sha256_file(opts.inventory),
                    "source": inv_meta.get("source"),
                    "rows": int(inv_meta.get("rows", "0")),
                    "listed_at": _stamp(listed_at, inv_meta.get("listed_at_clock", "local")),
                    "precision": format_duration(precision),
                    "time_source": inv_meta.get("time_source", "unknown"),
                },
                "snapshot": {
                    "path": os.path.abspath(opts.snapshot),
                    "sha256": sha256_file(opts.snapshot),
                    "source": snap_meta.get("source"),
                    "rows": rows,
                    "digest": snap_meta.get("digest"),
                    "taken_at": _stamp(taken_at, snap_meta.get("taken_at_clock", "claimed")),
                },
            },
            "buffer": format_duration(buffer),
            "cutoff": _stamp(cutoff, "derived: snapshot taken_at minus buffer"
                             if opts.cutoff is None else "given: --cutoff, checked against "
                             "snapshot taken_at minus buffer"),
            "hold": format_duration(hold),
            "quarantine": opts.quarantine,
            "policy": policy.to_json(),
            "overrides": overrides,
            "tenant_pattern": opts.tenant_pattern,
            "internal": sorted(opts.internal),
            "stages": stages,
            "scope": {"objects": res.scope_objects, "bytes": res.scope_bytes,
                      "newest_last_modified": format_time(res.newest_in_scope)
                      if res.newest_in_scope else None},
            "references": {"rows": res.snapshot_rows, "in_scope": res.in_scope_refs,
                           "out_of_scope": res.out_of_scope_refs, "missing": res.missing_refs,
                           "encoding": snap_meta.get("ref_encoding", "literal"),
                           "base": snap_meta.get("ref_base") or None,
                           "folders": res.folder_refs,
                           "implicit_folders": res.implicit_folder_refs,
                           "protected_by_folder": res.protected_by_folder,
                           "foreign": res.foreign_refs,
                           "foreign_acknowledged": res.foreign_acknowledged,
                           "foreign_ok": sorted(opts.foreign_refs_ok),
                           "foreign_where": res.foreign_where,
                           "near_misses": res.near_misses,
                           "near_miss_examples": [list(p) for p in res.near_miss_examples],
                           "undecodable_names": res.undecodable_names},
            "manifest": {"path": "manifest.parquet", "sha256": sha256_file(manifest),
                         "objects": res.candidates, "bytes": res.candidate_bytes,
                         "oldest_last_modified": format_time(res.oldest_candidate)
                         if res.oldest_candidate else None,
                         "newest_last_modified": format_time(res.newest_candidate)
                         if res.newest_candidate else None},
            "sentinels": list(sentinels),
            "unsafe_store_without_conditional_writes":
                opts.unsafe_store_without_conditional_writes,
            "clocks": {k: format_duration(v) for k, v in skews.items()},
            "invariants": [c.to_json() for c in checks],
        }
        plan_bytes = canonical_json(plan)
        with open(os.path.join(bundle, "plan.json"), "wb") as fh:
            fh.write(plan_bytes)
        plan_id = sha256_hex(plan_bytes)
        author_doc = {"plan_id": plan_id, "signer": opts.author,
                      "signed_at": format_time(datetime.now(UTC)), "role": "author",
                      "comment": ""}
        author_json = os.path.join(bundle, "signatures", "author.json")
        with open(author_json, "wb") as fh:
            fh.write(canonical_json(author_doc))
        sig = sign_file(author_json, opts.key, NS_PLAN)
        os.replace(sig, os.path.join(bundle, "signatures", "author.sig"))
        _fsync_tree(bundle)
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(bundle, out)
        return PlanResult(out, plan_id, plan)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_time_range(buffer: timedelta, hold: timedelta, cutoff: datetime | None) -> None:
    """Refuse durations and times whose arithmetic would leave datetime's range."""
    for option, d in (("--buffer", buffer), ("--hold", hold)):
        if d > MAX_DURATION:
            raise UsageError(f"{option} {format_duration(d)} is longer than 100 years")
    if cutoff is not None and not EARLIEST_TIME <= cutoff < LATEST_TIME:
        raise UsageError(f"--cutoff {cutoff.isoformat()} is out of range",
                         hint="give a time between the years 1000 and 8999 (UTC)")


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
                 internal: tuple[str, ...]) -> list[dict[str, Any]]:
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
        out.append({"stage": stage, "selector": selector, "objects": c.get("objects", 0),
                    "bytes": c.get("bytes", 0), "tenants": c.get("tenants", 0)})
    return out


def _fsync_tree(path: str) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


__all__ = ["PlanOptions", "PlanResult", "make_plan"]
