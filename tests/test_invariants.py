"""Property tests (hypothesis) for the plan-time invariants I1-I5, I15, I16.

Each would fail if its invariant broke: the checks are tested against their
definitions in SPEC.md, and the DuckDB engine is tested end to end against a
Python model of "which keys may be deleted".
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core import invariants as inv
from cleanup.core.paths import StoreRef, is_reserved
from cleanup.core.stages import DEFAULT_TENANT_PATTERN
from cleanup.engine import Engine, EngineInput
from tests.factories import T0, write_inventory_file, write_snapshot_file

SECOND = timedelta(seconds=1)
durations = st.integers(min_value=0, max_value=10 * 86400 * 10**6).map(
    lambda us: timedelta(microseconds=us))


@given(taken_offset=st.integers(-10**12, 10**12), buffer=durations, min_buffer=durations,
       requested=st.one_of(st.none(), st.integers(-3 * 86400 * 10**6, 86400 * 10**6)))
def test_i1_strict_cutoff(taken_offset: int, buffer: timedelta, min_buffer: timedelta,
                          requested: int | None) -> None:
    taken_at = T0 + timedelta(microseconds=taken_offset)
    req = None if requested is None else taken_at + timedelta(microseconds=requested)
    check, cutoff = inv.derive_cutoff(taken_at, buffer, min_buffer, req)
    expected_ok = (buffer >= min_buffer and buffer > timedelta(0)
                   and (req is None or req <= taken_at - buffer))
    assert check.ok == expected_ok
    assert check.invariant == inv.I1
    if check.ok:
        # The cutoff is never after taken_at - buffer, hence strictly before the snapshot.
        assert cutoff <= taken_at - buffer < taken_at
        assert cutoff == (req if req is not None else taken_at - buffer)


@given(rows=st.one_of(st.none(), st.integers(0, 10)),
       taken=st.one_of(st.none(), st.integers(-10**9, 10**9)),
       digest=st.sampled_from([None, "", "sha256:ab"]), source=st.sampled_from([None, "", "x"]))
def test_i3_snapshot_sound(rows: int | None, taken: int | None, digest: str | None,
                           source: str | None) -> None:
    taken_at = None if taken is None else T0 + timedelta(microseconds=taken)
    c = inv.check_snapshot_sound(rows=rows, taken_at=taken_at, digest=digest, source=source,
                                 now=T0)
    assert c.ok == (bool(rows) and taken_at is not None and taken_at <= T0
                    and bool(digest) and bool(source))


@given(in_scope=st.integers(0, 10**6), missing=st.integers(0, 10**6),
       out=st.integers(0, 10**6), max_missing=st.floats(0, 1))
def test_i4_paths_agree_threshold(in_scope: int, missing: int, out: int,
                                  max_missing: float) -> None:
    missing = min(missing, in_scope)
    c = inv.check_paths_agree(in_scope_refs=in_scope, missing_refs=missing,
                              out_of_scope_refs=out, max_missing=max_missing)
    assert c.ok == (in_scope > 0 and missing / in_scope <= max_missing)


@given(cand=st.integers(0, 1000), scope=st.integers(0, 1000), cb=st.integers(0, 10**6),
       sb=st.integers(0, 10**6), frac=st.floats(0, 1))
def test_i5_blast_radius(cand: int, scope: int, cb: int, sb: int, frac: float) -> None:
    cand, cb = min(cand, scope), min(cb, sb)
    c = inv.check_blast_radius(candidates=cand, candidate_bytes=cb, scope_objects=scope,
                               scope_bytes=sb, max_fraction=frac)
    obj = cand / scope if scope else 0.0
    byt = cb / sb if sb else 0.0
    assert c.ok == (obj <= frac and byt <= frac)


@given(skews=st.dictionaries(st.sampled_from(["store", "metadata"]),
                             st.integers(-10**9, 10**9).map(lambda us: timedelta(microseconds=us))),
       max_skew=durations, buffer=durations.filter(lambda d: d > timedelta(0)))
def test_i15_clocks_agree(skews: dict[str, timedelta], max_skew: timedelta,
                          buffer: timedelta) -> None:
    c = inv.check_clocks(skews, max_skew=max_skew, buffer=buffer)
    limit = min(max_skew, buffer / 10)
    assert c.ok == all(abs(s) <= limit for s in skews.values())


@given(data=st.data())
def test_i16_sentinels(data: st.DataObject) -> None:
    universe = ["a", "b", "c", "d", "e"]
    sents = data.draw(st.lists(st.sampled_from(universe), max_size=4))
    snap = set(data.draw(st.lists(st.sampled_from(universe))))
    invent = set(data.draw(st.lists(st.sampled_from(universe))))
    cands = set(data.draw(st.lists(st.sampled_from(universe))))
    c = inv.check_sentinels(sents, in_snapshot=snap, in_inventory=invent, in_candidates=cands)
    assert c.ok == all(s in snap and s in invent and s not in cands for s in sents)


# --- the engine against a model -------------------------------------------------------

STORE = StoreRef("s3", bucket="bkt", prefix="pre/")
CUTOFF = T0 - timedelta(hours=24)
segment = st.sampled_from(["t1", "t2", "int", "x y", "ü", "_cleanup", "a+b", "%41"])
keys = st.lists(segment, min_size=1, max_size=3).map("/".join)
# last_modified within a few seconds of the cutoff, at microsecond resolution: the
# boundary is where a wrong comparison (< vs <=, forgetting precision) shows.
offsets = st.integers(-4 * 10**6, 4 * 10**6).map(lambda us: timedelta(microseconds=us))
ref_forms = st.sampled_from(["{k}", "s3://bkt/pre/{k}", "s3a://bkt/pre/{k}",
                             "s3://other/pre/{k}", "s3://bkt/{k}"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(objects=st.dictionaries(keys, st.tuples(st.integers(0, 10**6), offsets), min_size=1,
                               max_size=25),
       precision=st.sampled_from([timedelta(microseconds=1), SECOND]),
       data=st.data())
def test_engine_candidates_match_model(tmp_path: Path, objects: dict[str, tuple[int, timedelta]],
                                       precision: timedelta, data: st.DataObject) -> None:
    """I1/I2/I4/I16 end to end: the manifest is exactly the unreferenced, old-enough keys.

    No referenced key and no key with last_modified + precision > cutoff is ever a
    candidate (safety), and every unreferenced old key is (completeness).
    """
    # References are drawn mostly from the listed keys, so that referenced-and-old
    # objects (the ones that must survive) are common, plus keys the store lacks.
    listed_keys = sorted(objects)
    referenced = data.draw(st.lists(st.tuples(st.one_of(st.sampled_from(listed_keys), keys),
                                              ref_forms), max_size=30), label="referenced")
    sentinels = data.draw(st.lists(st.one_of(st.sampled_from(listed_keys), keys), max_size=3),
                          label="sentinels")
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    inv_file = write_inventory_file(
        d / "inv.parquet", STORE.url,
        [(k, size, CUTOFF + off) for k, (size, off) in objects.items() if not is_reserved(k)],
        precision=precision)
    refs = [form.format(k=k) for k, form in referenced]
    snap_file = write_snapshot_file(d / "snap.parquet", refs, taken_at=T0)
    engine = Engine(EngineInput(inventory=str(inv_file), snapshot=str(snap_file), store=STORE,
                                cutoff=CUTOFF, precision=precision,
                                tenant_pattern=DEFAULT_TENANT_PATTERN, tenant_group=1,
                                sentinels=tuple(sentinels), threads=1))
    try:
        res = engine.compute()
        stage_of = dict.fromkeys(res.tenants, 1)
        engine.write_manifest(stage_of, str(d / "manifest.parquet"))
    finally:
        engine.close()
    got = set(pq.read_table(d / "manifest.parquet").column("key").to_pylist())

    # In scope: not under a `_cleanup` folder at any depth (the store's own bookkeeping,
    # or a nested store's), a plain name check independent of the engine's SQL.
    listed = {k: v for k, v in objects.items() if "_cleanup" not in k.split("/")[:-1]}
    # Independent oracle: which key each generated spelling names, by construction
    # (not the production resolver): the first three forms name k, the others are
    # another bucket or outside the prefix.
    naming = {"{k}", "s3://bkt/pre/{k}", "s3a://bkt/pre/{k}"}
    norm = {k for k, form in referenced if form in naming}
    missing = norm - set(listed)
    old_unref = {k for k, (_s, off) in listed.items()
                 if k not in norm and CUTOFF + off + precision <= CUTOFF}
    # A missing reference naming a directory of a would-be candidate protects it.
    protected = {k for k in old_unref if any(k.startswith(m + "/") for m in missing)}
    expected = old_unref - protected
    assert got == expected
    assert not got & norm
    # A reference to a key the store lacks protects what is under it as a folder (a
    # listed object of that name is just an object: its sibling prefix is not referenced).
    assert not any(k.startswith(m + "/") for k in got for m in missing)
    assert all(not is_reserved(k) and "/_cleanup/" not in k for k in got)
    assert res.candidates == len(expected)
    folders = {m for m in missing if any(k.startswith(m + "/") for k in protected)}
    assert res.missing_refs == len(missing - folders)
    # in-scope reference rows (the snapshot is distinct; two forms of one key count twice)
    assert res.in_scope_refs == len({form.format(k=k) for k, form in referenced
                                     if form in naming})
    assert res.sentinels_in_snapshot == set(sentinels) & norm
    assert res.sentinels_in_inventory == set(sentinels) & set(listed)
    assert res.sentinels_in_candidates == set(sentinels) & expected
