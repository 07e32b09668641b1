"""Property tests (hypothesis) for the execution-time invariants I6, I9, I12, I13."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.canonical import canonical_json, sha256_file
from cleanup.core.paths import StoreRef, parse_store
from cleanup.errors import InvariantViolation, LockHeld
from cleanup.executor import open_plan_store
from cleanup.lock import LOCK_KEY, Lock
from cleanup.reconcile import Reconciler
from cleanup.signoff import check_integrity
from cleanup.stores.local import LocalStore
from tests.factories import T0, sample_plan, write_snapshot_file

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
keys = st.lists(st.sampled_from(["a", "b", "c/d", "c/e", "ü", "x y"]), min_size=1,
                max_size=3).map("/".join)


@FAST
@given(batch=st.lists(keys, min_size=1, max_size=20, unique=True),
       live=st.lists(st.tuples(keys, st.sampled_from(["{k}", "s3://bkt/p/{k}",
                                                      "s3a://bkt/p/{k}", "s3://other/{k}"])),
                     max_size=20))
def test_i9_reconcile_finds_exactly_the_referenced_keys(tmp_path: Path, batch: list[str],
                                                        live: list[tuple[str, str]]) -> None:
    """Every batch key that live metadata references is reported (so the executor halts),
    and nothing else is."""
    store = StoreRef("s3", bucket="bkt", prefix="p/")
    refs = [form.format(k=k) for k, form in live]
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    snap = write_snapshot_file(d / "live.parquet", refs or ["zzz-unrelated"],
                               taken_at=T0 + timedelta(hours=1))
    rec = Reconciler(str(snap), store, T0, workdir=str(d / "scratch"))
    try:
        got = set(rec.referenced(batch))
    finally:
        rec.close()
    # Independent oracle: the first three forms name k by construction; a reference to
    # k also covers everything under k/ (a directory named without its slash).
    naming = {"{k}", "s3://bkt/p/{k}", "s3a://bkt/p/{k}"}
    named = {k for k, form in live if form in naming}
    assert got == {b for b in batch if b in named or any(b.startswith(n + "/") for n in named)}


def test_i9_refuses_a_source_not_newer_than_the_plan(tmp_path: Path) -> None:
    snap = write_snapshot_file(tmp_path / "old.parquet", ["a"], taken_at=T0)
    with pytest.raises(InvariantViolation, match="I9 reconcile"):
        Reconciler(str(snap), StoreRef("s3", bucket="b"), T0)


@FAST
@given(ops=st.lists(st.tuples(st.sampled_from(["acquire", "break", "release"]),
                              st.sampled_from(["alice", "bob"]),
                              st.integers(0, 30)), max_size=12))
def test_i12_at_most_one_live_holder(tmp_path: Path, ops: list[tuple[str, str, int]]) -> None:
    """For any sequence of acquisitions (plain or --break-lock) and releases at any times,
    a lease is only ever granted when no unexpired lease of someone else exists."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"
    root.mkdir()
    store = LocalStore(parse_store(str(root)))
    ttl = timedelta(minutes=10)
    held: dict[str, tuple[Lock, datetime]] = {}
    clock = T0
    for op, who, minutes in ops:
        clock = clock + timedelta(minutes=minutes)
        live = {w: exp for w, (_l, exp) in held.items() if exp > clock}
        if op == "release":
            if who in held:
                held.pop(who)[0].release()
            continue
        try:
            lock, _broken = Lock.acquire(store, executor=who, plan_id="p", ttl=ttl,
                                         break_lock=op == "break", now=clock)
        except LockHeld:
            refused = True
        else:
            refused = False
        # Exactly when refusal must happen: a lock file exists (``held`` has its one
        # holder) and its lease is live, whoever asks and with or without --break-lock;
        # or it has expired and the caller did not ask to break it.
        must_refuse = bool(held) and (bool(live) or op != "break")
        assert refused == must_refuse, (op, who, clock, sorted(held), sorted(live))
        if refused:
            continue
        assert not live, f"{who} got the lock while {sorted(live)} held a live lease"
        held = {who: (lock, clock + ttl)}  # any earlier (expired) lease was taken over
    assert (store.get_bytes(LOCK_KEY) is None) == (not held)


@FAST
@given(plan_region=st.sampled_from(["local", "eu-west-1", "us-east-1"]),
       store_region=st.sampled_from(["local", "eu-west-1", "us-east-1"]))
def test_i13_store_region_must_match_plan(tmp_path: Path, plan_region: str,
                                          store_region: str) -> None:
    plan = sample_plan(store=str(tmp_path), region=plan_region)
    if plan_region == store_region:
        assert open_plan_store(plan, None, store_region).region() == plan_region
    else:
        with pytest.raises(InvariantViolation, match="I13 residency"):
            open_plan_store(plan, None, store_region)


@FAST
@given(which=st.sampled_from(["plan.json", "manifest.parquet"]), pos=st.integers(0, 10**6),
       bit=st.integers(0, 7))
def test_i6_any_changed_byte_breaks_integrity(tmp_path: Path, which: str, pos: int,
                                              bit: int) -> None:
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    (d / "manifest.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    p = sample_plan()
    plan = replace(p, manifest=replace(p.manifest,
                                       sha256=sha256_file(str(d / "manifest.parquet"))))
    (d / "plan.json").write_bytes(canonical_json(plan.to_json()))
    _p, plan_id, ok = check_integrity(str(d))
    assert ok.ok
    (d / "signatures").mkdir()
    (d / "signatures" / "author.json").write_bytes(canonical_json({"plan_id": plan_id}))
    target = d / which
    data = bytearray(target.read_bytes())
    data[pos % len(data)] ^= 1 << bit
    target.write_bytes(bytes(data))
    refused: str | None = None
    try:
        _p, _id, after = check_integrity(str(d))
    except InvariantViolation as exc:  # plan.json no longer parses
        refused = str(exc)
    if refused is not None:
        assert "I6 plan-integrity" in refused
    else:
        assert not after.ok
