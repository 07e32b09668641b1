"""I4 paths-agree: no spelling of a path makes a referenced file a candidate.

Every case from the path-soundness issue, as a test that failed before the one
resolver existed: local spellings (CLI, real store), S3 spellings (engine),
Hadoop ``file:/`` paths, encoding near-misses (refused unless accepted), foreign
references (refused unless named), folder references (protect what is under
them), and reconciliation seeing the same spellings during execution.

The property tests draw, for each referenced key, a spelling from the equivalence
classes of SPEC I4, built by construction (the oracle knows which key each
spelling names without calling the resolver).
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.paths import StoreRef, parse_store, resolve_ref
from cleanup.core.stages import DEFAULT_TENANT_PATTERN
from cleanup.core.timeutil import format_time
from cleanup.engine import Engine, EngineInput, EngineResult
from cleanup.reconcile import Reconciler
from tests.conftest import assert_one_line_error
from tests.factories import T0, write_inventory_file, write_snapshot_file
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.test_execute_local import Flow, ok
from tests.test_plan_cli import OLD, TAKEN, Case

S3 = StoreRef("s3", bucket="bkt", prefix="pre/")
CUTOFF = T0 - timedelta(hours=24)
OLD_T = CUTOFF - timedelta(days=3)


@pytest.fixture
def case(tmp_path: Path, alice_key: Path) -> Case:
    return Case(tmp_path, alice_key)


def _manifest(plan: Path) -> set[str]:
    return set(pq.read_table(plan / "manifest.parquet").column("key").to_pylist())


# --- local spellings, through the CLI ------------------------------------------------

VICTIM = "acme/t/part-005.parquet"  # referenced (Case leaves 000-004 unreferenced)

LOCAL_SPELLINGS = {
    "double slash after root": "{root}//{k}",
    "dot segment": "{root}/./{k}",
    "dot-dot segment": "{root}/sub/../{k}",
    "file://localhost": "file://localhost{root}/{k}",
    "upper-case scheme": "FILE://{root}/{k}",
    "hadoop file:/": "file:{root}/{k}",
    "relative ./": "./{k}",
    "doubled slash inside": "{k_dd}",
}


@pytest.mark.parametrize("spelling", sorted(LOCAL_SPELLINGS))
def test_local_spelling_keeps_referenced_file(case: Case, spelling: str) -> None:
    form = LOCAL_SPELLINGS[spelling]
    refs = [r for r in case.refs if r != VICTIM]
    refs.append(form.format(root=case.store, k=VICTIM, k_dd=VICTIM.replace("/", "//", 1)))
    case.write(refs=refs)
    r = case.plan("--json")
    assert r.code == 0, r.err
    got = _manifest(case.tmp / "plan")
    assert VICTIM not in got
    assert got == case.unreferenced


def test_folder_reference_protects_everything_under_it(case: Case) -> None:
    folder = "acme/t/"
    under = {k for k, _s, _t in case.objects if k.startswith(folder)}
    refs = [r for r in case.refs if not r.startswith(folder)] + [folder]
    case.write(refs=refs)
    r = case.plan("--json")
    assert r.code == 0, r.err
    got = _manifest(case.tmp / "plan")
    assert not got & under
    plan = json.loads((case.tmp / "plan" / "plan.json").read_text())
    assert plan["references"]["folders"] == 1
    assert plan["references"]["protected_by_folder"] == len(under)


def test_directory_named_without_slash_protects_it(case: Case) -> None:
    refs = [r for r in case.refs if not r.startswith("acme/")] + ["acme"]
    case.write(refs=refs)
    r = case.plan("--json", "--max-missing-refs", "0.5")
    assert r.code == 0, r.err
    assert not {k for k in _manifest(case.tmp / "plan") if k.startswith("acme/")}


def test_hadoop_file_colon_paths_mixed_with_file_urls(case: Case) -> None:
    """Data paths written file:/... and others file:///...: none is proposed."""
    refs = [f"file:{case.store}/{k}" if i % 2 else f"file://{case.store}/{k}"
            for i, k in enumerate(case.refs)]
    case.write(refs=refs)
    r = case.plan("--json")
    assert r.code == 0, r.err
    assert _manifest(case.tmp / "plan") == case.unreferenced


def test_foreign_references_refuse_unless_named(case: Case) -> None:
    case.write(refs=[*case.refs, "s3://elsewhere/data/x.parquet", "/srv/other/y"])
    case.assert_refused(case.plan(), "I4 paths-agree", "outside the store", "s3://elsewhere/")
    r = case.plan("--json", "--foreign-refs-ok", "s3://elsewhere/",
                  "--foreign-refs-ok", "/srv/other")
    assert r.code == 0, r.err
    plan = json.loads((case.tmp / "plan" / "plan.json").read_text())
    assert plan["references"]["foreign_acknowledged"] == 2
    assert any("foreign_refs_ok" in o for o in plan["overrides"])


def test_unresolvable_reference_refuses(case: Case) -> None:
    case.write(refs=[*case.refs, "s3:no-slashes"])
    case.assert_refused(case.plan(), "I4 paths-agree", "cannot be resolved")


NEAR_MISSES = {
    "NFD reference, NFC file": ("acme/t/caf\u00e9.parquet", "acme/t/cafe\u0301.parquet"),
    "NFC reference, NFD file": ("acme/t/cafe\u0301.parquet", "acme/t/caf\u00e9.parquet"),
    "%20 for space": ("acme/t/a b.parquet", "acme/t/a%20b.parquet"),
    "+ for space": ("acme/t/a b.parquet", "acme/t/a+b.parquet"),
    "%2B for +": ("acme/t/a+b.parquet", "acme/t/a%2Bb.parquet"),
    "%3A for :": ("acme/t/12:00.parquet", "acme/t/12%3A00.parquet"),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refuses_unless_accepted(case: Case, name: str) -> None:
    listed, ref = NEAR_MISSES[name]
    case.write(objects=[*case.objects, (listed, 10, OLD)], refs=[*case.refs, ref])
    case.assert_refused(case.plan(), "I4 paths-agree", "near-miss")
    r = case.plan("--json", "--accept-near-misses", "--max-missing-refs", "0.05")
    assert r.code == 0, r.err
    plan = json.loads((case.tmp / "plan" / "plan.json").read_text())
    assert plan["references"]["near_misses"] == 1
    assert plan["references"]["near_miss_examples"] == [[ref, listed]]
    assert any("accept_near_misses" in o for o in plan["overrides"])


def test_uri_encoded_source_is_decoded_exactly_once(case: Case, tmp_path: Path) -> None:
    """A source that declares percent-encoded URIs (Delta's add.path): %2520 names the
    object 'city=New%20York', %20 names 'a b'; the literal spellings would be near-misses."""
    extra = ["acme/t/city=New%20York/p.parquet", "acme/t/a b.parquet"]
    objects = [*case.objects, *((k, 10, OLD) for k in extra)]
    refs = [quote(r) for r in case.refs] + ["acme/t/city=New%2520York/p.parquet",
                                            "acme/t/a%20b.parquet"]
    keys = tmp_path / "refs.csv"
    keys.write_text("key\n" + "\n".join(refs) + "\n")
    write_inventory_file(case.inventory, str(case.store), objects)
    r = run_cli(["snapshot", str(keys), "--taken-at", format_time(TAKEN), "--ref-encoding",
                 "uri", "-o", str(case.snapshot)])
    assert r.code == 0, r.err
    res = case.plan("--json")
    assert res.code == 0, res.err
    got = _manifest(case.tmp / "plan")
    assert got == case.unreferenced
    plan = json.loads((case.tmp / "plan" / "plan.json").read_text())
    assert plan["references"]["encoding"] == "uri"
    # The same list declared literal: the two extra references are near-misses.
    r = run_cli(["snapshot", str(keys), "--taken-at", format_time(TAKEN), "-o",
                 str(case.snapshot)])
    assert r.code == 0, r.err
    case.assert_refused(case.plan(out="plan2"), "I4 paths-agree", "near-miss", out="plan2")


# --- S3 spellings, through the engine ------------------------------------------------

def _engine(tmp: Path, store: StoreRef, objects: list[str], refs: list[str]) -> tuple[
        EngineResult, set[str]]:
    d = Path(tempfile.mkdtemp(dir=tmp))
    inv = write_inventory_file(d / "inv.parquet", store.url, [(k, 10, OLD_T) for k in objects])
    snap = write_snapshot_file(d / "snap.parquet", refs or ["zz-none"], taken_at=T0)
    eng = Engine(EngineInput(inventory=str(inv), snapshot=str(snap), store=store,
                             cutoff=CUTOFF, precision=timedelta(seconds=1),
                             tenant_pattern=DEFAULT_TENANT_PATTERN, tenant_group=1, threads=1,
                             temp_dir=str(d / "tmp")))
    try:
        res = eng.compute()
        eng.write_manifest(dict.fromkeys(res.tenants, 1), str(d / "m.parquet"))
    finally:
        eng.close()
    return res, set(pq.read_table(d / "m.parquet").column("key").to_pylist())


@pytest.mark.parametrize("ref", [
    "S3://bkt/pre/t/k x.bin",
    "s3A://bkt/pre/t/k x.bin",
    "https://bkt.s3.amazonaws.com/pre/t/k%20x.bin",
    "https://bkt.s3.eu-west-1.amazonaws.com/pre/t/k%20x.bin",
    "https://bkt.s3-eu-west-1.amazonaws.com/pre/t/k%20x.bin",
    "https://s3.amazonaws.com/bkt/pre/t/k%20x.bin",
    "https://s3.eu-west-1.amazonaws.com/bkt/pre/t/k%20x.bin",
    "HTTPS://BKT.S3.AMAZONAWS.COM/pre/t/k%20x.bin",
])
def test_s3_spellings_name_the_key(tmp_path: Path, ref: str) -> None:
    res, got = _engine(tmp_path, S3, ["t/k x.bin", "t/other.bin"], [ref])
    assert got == {"t/other.bin"}
    assert res.missing_refs == 0


def test_s3_leading_slash_is_unresolvable(tmp_path: Path) -> None:
    res, _got = _engine(tmp_path, S3, ["t/k", "t/other"], ["/t/k"])
    assert res.unresolvable_refs == 1


def test_s3_doubled_slash_is_a_near_miss_not_a_guess(tmp_path: Path) -> None:
    res, got = _engine(tmp_path, S3, ["t/k", "t/other"], ["t//k"])
    assert res.near_misses == 1
    assert res.near_miss_examples == [("t//k", "t/k")]
    assert resolve_ref("t//k", S3).key == "t//k"


# --- property: any spelling of a referenced key keeps it -----------------------------

LOCAL_ROOT = "/srv/store"
LOCAL = parse_store(LOCAL_ROOT)
segment = st.sampled_from(["t1", "t2", "a b", "caf\u00e9", "x+y", "p%41", "d=1", "k:v"])
keys = st.lists(segment, min_size=1, max_size=3).map("/".join)


def _local_spellings(k: str) -> st.SearchStrategy[str]:
    parts = k.split("/")
    return st.sampled_from([
        k, f"./{k}", f"{LOCAL_ROOT}/{k}", f"{LOCAL_ROOT}//{k}", f"{LOCAL_ROOT}/./{k}",
        f"{LOCAL_ROOT}/zz/../{k}", f"file:{LOCAL_ROOT}/{k}", f"file://{LOCAL_ROOT}/{k}",
        f"FILE://localhost{LOCAL_ROOT}/{k}", "//".join(parts),
        f"{parts[0]}/./{k[len(parts[0]) + 1:]}" if len(parts) > 1 else k])


def _s3_spellings(k: str) -> st.SearchStrategy[str]:
    return st.sampled_from([
        k, f"s3://bkt/pre/{k}", f"S3N://bkt/pre/{k}", f"s3a://bkt/pre/{k}",
        f"https://bkt.s3.amazonaws.com/pre/{quote(k)}",
        f"https://s3.us-west-2.amazonaws.com/bkt/pre/{quote(k)}"])


PROP = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@PROP
@given(data=st.data(), listed=st.lists(keys, min_size=1, max_size=12, unique=True),
       kind=st.sampled_from(["local", "s3"]))
def test_no_spelling_makes_a_referenced_key_a_candidate(tmp_path: Path, data: st.DataObject,
                                                        listed: list[str], kind: str) -> None:
    store = LOCAL if kind == "local" else S3
    spell = _local_spellings if kind == "local" else _s3_spellings
    referenced = data.draw(st.lists(st.sampled_from(listed), max_size=len(listed)),
                           label="referenced")
    refs = [data.draw(spell(k), label=f"spelling of {k}") for k in referenced]
    res, got = _engine(tmp_path, store, listed, refs)
    assert not got & set(referenced)
    if kind == "local" or all("//" not in r.split("://", 1)[-1] for r in refs):
        # Every spelling resolves exactly: nothing else is lost either.
        assert got == set(listed) - set(referenced)
    assert res.unresolvable_refs == 0


@PROP
@given(data=st.data(), batch=st.lists(keys, min_size=1, max_size=12, unique=True))
def test_reconcile_sees_every_spelling(tmp_path: Path, data: st.DataObject,
                                       batch: list[str]) -> None:
    """Reconciliation is the second line of defence: the same spellings, live."""
    referenced = data.draw(st.lists(st.sampled_from(batch), max_size=len(batch)))
    refs = [data.draw(_local_spellings(k)) for k in referenced]
    # An encoding near-miss of an unreferenced key halts too (it names no object of its own).
    nfd = [k for k in batch if k not in referenced and unicodedata.normalize("NFD", k) != k]
    refs += [unicodedata.normalize("NFD", k) for k in nfd]
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    snap = write_snapshot_file(d / "live.parquet", refs or ["zz-none"],
                               taken_at=T0 + timedelta(hours=1))
    rec = Reconciler(str(snap), LOCAL, T0, workdir=str(d / "scratch"),
                     exists=lambda ks: [k for k in ks if k in batch])
    try:
        got = set(rec.referenced(batch))
    finally:
        rec.close()
    assert set(referenced) | set(nfd) <= got


# --- execution: a spelling added during execution halts it ---------------------------

def test_reference_added_as_root_double_slash_halts_execution(tmp_path: Path) -> None:
    flow = Flow(tmp_path / "demo")
    victim = flow.manifest(0)[0]
    con = duckdb.connect(str(flow.d.metadata))
    con.execute("INSERT INTO data_files VALUES (?, 'x')", [f"{flow.d.store}//{victim}"])
    con.close()
    flow.witness()
    r = flow.execute()
    assert_one_line_error(r, 5, "I9 reconcile")
    assert (flow.d.store / victim).exists()
    ok(run_cli(["audit", "verify", str(flow.d.store)]))


def test_key_too_long_for_quarantine_refuses_the_plan(case: Case) -> None:
    """A key that fits the file system but not under _cleanup/quarantine/<plan id>/ would
    fail mid-stage (ENAMETOOLONG): refused at plan time."""
    budget = 4095 - len(str(case.store)) - 1
    target = budget - 40
    base = "acme/" + "/".join(["d" * 200] * -(-(target - 260) // 201))
    long_key = base + "/" + "f" * (target - len(base) - 1)
    assert len(long_key) == target
    assert max(map(len, long_key.split("/"))) <= 255
    assert len(str(case.store)) + 1 + len(long_key) <= 4095 < (
        len(str(case.store)) + 1 + len(long_key) + 85)
    case.write(objects=[*case.objects, (long_key, 10, OLD)])
    case.assert_refused(case.plan(), "I11 recoverable", "too long")
    # Hard delete needs no quarantine location: the key fits the store.
    r = case.plan("--json", "--quarantine", "none")
    assert r.code == 0, r.err
    assert long_key in _manifest(case.tmp / "plan")


def test_damaged_reconcile_parquet_is_a_usage_error(tmp_path: Path) -> None:
    """A reconcile snapshot with damaged data pages: one-line usage error, no crash."""
    from cleanup.errors import UsageError

    snap = write_snapshot_file(tmp_path / "live.parquet",
                               [f"t/key-{i:06d}-{'x' * 40}" for i in range(20000)],
                               taken_at=T0 + timedelta(hours=1))
    raw = bytearray(snap.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = bytes(4096)  # zero a stretch of data pages; footer intact
    snap.write_bytes(bytes(raw))
    with pytest.raises(UsageError, match="cannot read the references"):
        Reconciler(str(snap), S3, T0, workdir=str(tmp_path / "scratch"))


SPELLINGS: dict[str, Callable[[str], str]] = {
    "NFD": lambda k: unicodedata.normalize("NFD", k),
    "NFC": lambda k: unicodedata.normalize("NFC", k),
    "percent": lambda k: quote(k, safe="/"),
    "plus": lambda k: k.replace(" ", "+"),
    "percent-plus": lambda k: quote(k, safe="/").replace("%20", "+"),
}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(listed=st.lists(keys, min_size=1, max_size=8, unique=True), data=st.data())
def test_any_encoding_variant_of_a_listed_key_is_a_near_miss(
        tmp_path: Path, listed: list[str], data: st.DataObject) -> None:
    """I4: a reference that is a listed key in another encoding or Unicode form, and not
    itself listed, is always reported as a near-miss (both the Python forms and the SQL
    folds take part: the two must agree for this to hold)."""
    k = data.draw(st.sampled_from(listed))
    variant = SPELLINGS[data.draw(st.sampled_from(sorted(SPELLINGS)))](k)
    if variant == k or variant in listed:
        return
    res, _got = _engine(tmp_path, S3, listed, [variant])
    assert res.missing_refs == 1
    assert res.near_misses == 1, (variant, k)
    assert any(key == k for _r, key in res.near_miss_examples)
