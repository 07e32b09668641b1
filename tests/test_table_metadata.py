"""I20 table-metadata: under a declared table root, `_delta_log/`, `metadata/` and every
path component starting with `_` or `.` are never candidates; a table root in the scope
that no source of the snapshot covers refuses the plan (exit 3, naming I20)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.timeutil import format_time
from cleanup.formats import encode_meta, snapshot_schema
from cleanup.sources.tables import encode_roots
from tests.conftest import Run, assert_one_line_error
from tests.factories import write_inventory_file
from tests.inproc import run_cli
from tests.support import unavailable

NOW = datetime.now(UTC).replace(microsecond=0)
TAKEN = NOW - timedelta(hours=1)
OLD = NOW - timedelta(days=10)
I20 = "I20 table-metadata"


def write_table_snapshot(path: Path, refs: list[str], roots: list[str]) -> None:
    """A snapshot as a table source writes it: references and declared table roots."""
    keys = sorted(set(refs))
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode() + b"\n")
    meta = {"kind": "snapshot", "source": "test-table", "rows": str(len(keys)),
            "digest": "sha256:" + h.hexdigest(), "taken_at_clock": "claimed",
            "taken_at": format_time(TAKEN), "ref_encoding": "literal",
            "table_roots": encode_roots(roots)}
    table = pa.table({"key": keys}, schema=snapshot_schema())
    pq.write_table(table.replace_schema_metadata(encode_meta(meta)), path)


def plan(tmp: Path, store: Path, key: Path, out: str = "plan") -> Run:
    return run_cli(["plan", "--store", str(store), "--inventory", str(tmp / "inv.parquet"),
                    "--snapshot", str(tmp / "snap.parquet"), "-o", str(tmp / out),
                    "--author", "alice", "--key", str(key), "--max-delete-fraction", "1",
                    "--max-table-delete-fraction", "1"])


def manifest_keys(plan_dir: Path) -> set[str]:
    rows = duckdb.connect().execute(
        f"SELECT key FROM read_parquet('{plan_dir}/manifest.parquet')").fetchall()
    return {str(r[0]) for r in rows}


# --- the property --------------------------------------------------------------------------

COMPONENT = st.sampled_from(["data", "part=1", "a b", "50%", "é", "_tmp", ".hidden",
                             "_change_data", "x.y"])
NAME = st.sampled_from(["f.parquet", "_SUCCESS", ".crc", "m.avro", "00000.json"])
PLAIN = st.tuples(st.lists(COMPONENT, max_size=3), NAME).map(lambda t: "/".join([*t[0], t[1]]))
TABLE_META = st.sampled_from(["_delta_log/00000.json", "_delta_log/_last_checkpoint",
                              "metadata/v1.metadata.json", "metadata/snap-1.avro",
                              "v2.metadata.json"])
NESTED_ROOT = st.sampled_from(["data/_delta_log/00000.json", "sub/metadata/v1.metadata.json",
                               "part=1/v1.metadata.json"])
KEY_UNDER = st.one_of(PLAIN, TABLE_META)


def _detected_root(key: str) -> str | None:
    parts = key.split("/")
    if "_delta_log" in parts[:-1]:
        i = len(parts) - 1 - parts[:-1][::-1].index("_delta_log") - 1
        return "".join(p + "/" for p in parts[:i])
    if parts[-1].endswith(".metadata.json"):
        d = parts[:-1]
        if d and d[-1] == "metadata":
            d = d[:-1]
        return "".join(p + "/" for p in d)
    return None


def _kept_by_i20(key: str, roots: list[str]) -> bool:
    for r in roots:
        if key.startswith(r):
            rest = key[len(r):]
            if rest.startswith(("_delta_log/", "metadata/")) or any(
                    c.startswith(("_", ".")) for c in rest.split("/")):
                return True
    return False


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(under=st.lists(st.tuples(st.sampled_from([0, 1]), KEY_UNDER, st.booleans()),
                      min_size=1, max_size=14, unique_by=lambda t: (t[0], t[1])),
       outside=st.lists(st.sampled_from(["other/_x/f.parquet", "other/.h", "other/f.parquet",
                                         "top.parquet"]), unique=True, max_size=3),
       nested=st.none() | st.tuples(st.sampled_from([0, 1]), NESTED_ROOT))
def test_i20_property(tmp_path_factory: pytest.TempPathFactory, alice_key: Path,
                      under: list[tuple[int, str, bool]], outside: list[str],
                      nested: tuple[int, str] | None) -> None:
    """Random layouts under two declared roots (`t1/`, `ns/t2/`): the plan either refuses
    with I20, exactly when a table root no source covers is in the scope, or proposes
    exactly the unreferenced keys that are neither table metadata nor hidden under a
    root. Outside the roots hidden names are ordinary keys."""
    tmp = tmp_path_factory.mktemp("i20")
    store = tmp / "store"
    store.mkdir()
    roots = ["t1/", "ns/t2/"]
    objects: list[tuple[str, int, datetime]] = []
    refs: list[str] = []
    for which, rel, referenced in under:
        key = roots[which] + rel
        objects.append((key, 10, OLD))
        if referenced:
            refs.append(key)
    objects += [(k, 10, OLD) for k in outside]
    if nested is not None and roots[nested[0]] + nested[1] not in {k for k, _s, _t in objects}:
        objects.append((roots[nested[0]] + nested[1], 10, OLD))  # a table inside a table
    refs.append("t1/always-referenced.parquet")
    objects.append(("t1/always-referenced.parquet", 10, OLD))
    write_inventory_file(tmp / "inv.parquet", str(store), objects)
    write_table_snapshot(tmp / "snap.parquet", refs,
                         [str(store / "t1"), f"file://{store}/ns/t2"])
    r = plan(tmp, store, alice_key)
    detected = {d for k, _s, _t in objects if (d := _detected_root(k)) is not None}
    if detected - set(roots):
        assert_one_line_error(r, 3, I20, "not covered by any source")
        assert not (tmp / "plan").exists()
        return
    assert r.code == 0, (r.out, r.err)
    expected = {k for k, _s, _t in objects
                if k not in refs and not _kept_by_i20(k, roots)}
    got = manifest_keys(tmp / "plan")
    assert got == expected
    doc = json.loads((tmp / "plan" / "plan.json").read_text())
    check = next(c for c in doc["invariants"] if c["invariant"] == I20)
    assert check["ok"]
    assert check["facts"]["declared_roots"] == 2
    assert check["facts"]["protected_table_files"] == len(
        {k for k, _s, _t in objects if k not in refs and _kept_by_i20(k, roots)})


# --- the CLI with real tables -----------------------------------------------------------------


def _delta(path: Path, n: int) -> None:
    try:
        from deltalake import write_deltalake
    except ImportError:
        unavailable("the deltalake package (extra cleanup[delta]) is not installed")
    write_deltalake(str(path), pa.table({"v": list(range(n))}))
    for p in path.rglob("*"):
        os.utime(p, (OLD.timestamp(), OLD.timestamp()))


def test_uncovered_delta_table_in_scope_is_refused(tmp_path: Path, alice_key: Path) -> None:
    """Two Delta tables share a prefix; the snapshot covers one. Planning the prefix would
    make every file of the other look unreferenced: refused, exit 3, nothing written."""
    store = tmp_path / "lake"
    _delta(store / "a", 3)
    _delta(store / "b", 3)
    assert run_cli(["snapshot", f"delta://{store / 'a'}", "-o",
                    str(tmp_path / "snap.parquet")]).code == 0
    assert run_cli(["inventory", str(store), "-o", str(tmp_path / "inv.parquet"),
                    "--trust-mtime"]).code == 0
    r = plan(tmp_path, store, alice_key)
    assert_one_line_error(r, 3, I20, "1 table root(s)", "'b/'")
    assert not (tmp_path / "plan").exists()
    # Planning the covered table alone is fine, and its log is never a candidate.
    assert run_cli(["inventory", str(store / "a"), "-o", str(tmp_path / "inv.parquet"),
                    "--trust-mtime"]).code == 0
    r = plan(tmp_path, store / "a", alice_key, out="plan-a")
    assert r.code == 0, r.err
    assert manifest_keys(tmp_path / "plan-a") == set()


def test_key_list_snapshot_over_an_iceberg_table_is_refused(tmp_path: Path,
                                                            alice_key: Path) -> None:
    """A snapshot that is not a table source cannot cover a table: a `*.metadata.json` in
    the scope refuses the plan (the shared-location incident)."""
    store = tmp_path / "store"
    for key in ("wh/db/t/metadata/00001-x.metadata.json", "wh/db/t/data/f.parquet",
                "other/f.parquet", "other/g.parquet"):
        p = store / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        os.utime(p, (OLD.timestamp(), OLD.timestamp()))
    refs = tmp_path / "refs.csv"
    refs.write_text("key\nother/f.parquet\n")
    assert run_cli(["snapshot", str(refs), "-o", str(tmp_path / "snap.parquet"),
                    "--taken-at", format_time(TAKEN)]).code == 0
    assert run_cli(["inventory", str(store), "-o", str(tmp_path / "inv.parquet"),
                    "--trust-mtime"]).code == 0
    r = plan(tmp_path, store, alice_key)
    assert_one_line_error(r, 3, I20, "'wh/db/t/'")
    assert not (tmp_path / "plan").exists()
    shutil.rmtree(store / "wh")
    assert run_cli(["inventory", str(store), "-o", str(tmp_path / "inv.parquet"),
                    "--trust-mtime"]).code == 0
    assert plan(tmp_path, store, alice_key, out="plan2").code == 0


def test_damaged_table_roots_metadata_is_a_usage_error(tmp_path: Path, alice_key: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_inventory_file(tmp_path / "inv.parquet", str(store), [("a.parquet", 1, OLD)])
    write_table_snapshot(tmp_path / "snap.parquet", ["a.parquet"], [])
    t = pq.read_table(tmp_path / "snap.parquet")
    meta = dict(t.schema.metadata or {})
    meta[b"cleanup.table_roots"] = b"{broken"
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "snap.parquet")
    r = plan(tmp_path, store, alice_key)
    assert_one_line_error(r, 2, "table_roots")


def test_several_sources_in_one_snapshot(tmp_path: Path, alice_key: Path) -> None:
    """Every Delta table of a prefix plus a key list, merged: the union of their
    references, the earliest taken_at, each source recorded, both roots declared; the
    prefix can then be planned (I20 satisfied) and only the true orphans are proposed."""
    store = tmp_path / "lake"
    _delta(store / "a", 3)
    _delta(store / "b", 3)
    for key in ("a/orphan.parquet", "b/x=1/orphan.parquet", "b/_tmp/kept", "loose/ref.csv",
                "loose/orphan.csv"):
        p = store / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        os.utime(p, (OLD.timestamp(), OLD.timestamp()))
    refs = tmp_path / "refs.csv"
    refs.write_text("key\nloose/ref.csv\n")
    snap = tmp_path / "snap.parquet"
    claimed = TAKEN - timedelta(minutes=30)
    out = json.loads(ok_run(run_cli([
        "snapshot", f"delta://{store / 'a'}", f"delta://{store / 'b'}", str(refs),
        "--taken-at", format_time(claimed), "-o", str(snap), "--json"])).out)
    assert out["taken_at"] == format_time(claimed)
    assert out["taken_at_clock"] == "claimed"
    assert out["source"].count("[delta:") == 2
    assert "keylist:" in out["source"]
    meta = pq.read_metadata(snap).metadata
    assert json.loads(meta[b"cleanup.table_roots"]) == [str(store / "a"), str(store / "b")]
    assert run_cli(["inventory", str(store), "-o", str(tmp_path / "inv.parquet"),
                    "--trust-mtime"]).code == 0
    r = plan(tmp_path, store, alice_key)
    assert r.code == 0, r.err
    assert manifest_keys(tmp_path / "plan") == {"a/orphan.parquet", "b/x=1/orphan.parquet",
                                                "loose/orphan.csv"}
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    per_table = {t["root"]: t for t in doc["tables"]}
    assert set(per_table) == {"a/", "b/"}
    assert per_table["a/"]["candidates"] == per_table["b/"]["candidates"] == 1
    assert per_table["b/"]["objects"] == len([p for p in (store / "b").rglob("*") if p.is_file()])
    # Two non-table sources cannot share --query/--taken-at: refused.
    r = run_cli(["snapshot", str(refs), str(tmp_path / "m.duckdb"), "-o", str(snap),
                 "--taken-at", format_time(claimed)])
    assert_one_line_error(r, 2, "at most one key list or database")
    r = run_cli(["snapshot", f"delta://{store / 'a'}", f"delta://{store / 'a'}", "-o",
                 str(snap)])
    assert_one_line_error(r, 2, "named twice")


def ok_run(r: Run) -> Run:
    assert r.code == 0, (r.code, r.out, r.err)
    return r


def test_store_inside_a_table_keeps_its_hidden_files(tmp_path: Path, alice_key: Path) -> None:
    """Planning one partition folder of a Delta table: the store lies inside the declared
    root, so its `.crc` checksums and `_temporary/` files are still table files (I20)."""
    try:
        from deltalake import write_deltalake
    except ImportError:
        unavailable("the deltalake package (extra cleanup[delta]) is not installed")
    table = tmp_path / "t"
    write_deltalake(str(table), pa.table({"p": ["a", "a", "b"], "v": [1, 2, 3]}),
                    partition_by=["p"])
    part = table / "p=a"
    for name in (".part-0.parquet.crc", "_temporary/0/x.parquet", "orphan.parquet"):
        f = part / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    for p in table.rglob("*"):
        os.utime(p, (OLD.timestamp(), OLD.timestamp()))
    assert run_cli(["snapshot", f"delta://{table}", "-o",
                    str(tmp_path / "snap.parquet")]).code == 0
    assert run_cli(["inventory", str(part), "-o", str(tmp_path / "inv.parquet"),
                    "--trust-mtime"]).code == 0
    r = plan(tmp_path, part, alice_key)  # the rest of the table is outside this store (I4)
    assert_one_line_error(r, 3, "I4 paths-agree", "outside the store")
    r = run_cli(["plan", "--store", str(part), "--inventory", str(tmp_path / "inv.parquet"),
                 "--snapshot", str(tmp_path / "snap.parquet"), "-o", str(tmp_path / "plan"),
                 "--author", "alice", "--key", str(alice_key), "--max-delete-fraction", "1",
                 "--foreign-refs-ok", str(table)])
    assert r.code == 0, r.err
    assert manifest_keys(tmp_path / "plan") == {"orphan.parquet"}


# --- I5 per table ---------------------------------------------------------------------------

I5 = "I5 blast-radius"


def _two_tables(tmp: Path, *, b_refs: int, loose_orphans: int = 0,
                loose_refs: int = 40) -> Path:
    """Store with tables `a/` (10 data files, 9 referenced, a log) and `ns/b/` (10 data
    files, ``b_refs`` referenced, a log and a hidden file), and loose files outside any
    table: ``loose_refs`` referenced and ``loose_orphans`` not."""
    store = tmp / "store"
    store.mkdir()
    objects: list[tuple[str, int, datetime]] = []
    refs: list[str] = []
    for root, referenced in (("a/", 9), ("ns/b/", b_refs)):
        for i in range(10):
            key = f"{root}p=1/part-{i}.parquet"
            objects.append((key, 100, OLD))
            if i < referenced:
                refs.append(key)
        objects += [(f"{root}_delta_log/{v:020d}.json", 7, OLD) for v in range(3)]
    objects.append(("ns/b/.part-0.crc", 5, OLD))
    for i in range(loose_refs + loose_orphans):
        objects.append((f"loose/f{i}.csv", 10, OLD))
        if i < loose_refs:
            refs.append(f"loose/f{i}.csv")
    write_inventory_file(tmp / "inv.parquet", str(store), objects)
    write_table_snapshot(tmp / "snap.parquet", refs, [str(store / "a"), str(store / "ns/b")])
    return store


def _plan_args(tmp: Path, store: Path, key: Path, *extra: str, out: str = "plan") -> Run:
    return run_cli(["plan", "--store", str(store), "--inventory", str(tmp / "inv.parquet"),
                    "--snapshot", str(tmp / "snap.parquet"), "-o", str(tmp / out),
                    "--author", "alice", "--key", str(key), *extra])


def test_table_blast_radius_is_per_table(tmp_path: Path, alice_key: Path) -> None:
    """A table whose candidates are every one of its data files refuses the plan (exit 3,
    I5, naming the table), although the scope as a whole is under its limit; raising
    --max-table-delete-fraction plans it, recorded as an override. The tables' own
    numbers are plan.json's `tables`; the log and hidden files are not data files."""
    store = _two_tables(tmp_path, b_refs=0, loose_refs=400)
    r = _plan_args(tmp_path, store, alice_key)
    assert_one_line_error(r, 3, I5, "table 'ns/b/'", "10 of 10 data files (100.00%)",
                          "max_table_delete_fraction 95.00%")
    assert not (tmp_path / "plan").exists()
    r = _plan_args(tmp_path, store, alice_key, "--max-table-delete-fraction", "1")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert any("max_table_delete_fraction = 1.0" in o for o in doc["overrides"])
    assert doc["policy"]["max_table_delete_fraction"] == 1.0
    assert doc["tables"] == [
        {"root": "a/", "objects": 13, "bytes": 1021, "metadata_objects": 3,
         "metadata_bytes": 21, "candidates": 1, "candidate_bytes": 100},
        {"root": "ns/b/", "objects": 14, "bytes": 1026, "metadata_objects": 4,
         "metadata_bytes": 26, "candidates": 10, "candidate_bytes": 1000}]
    check = next(c for c in doc["invariants"] if c["invariant"] == I5)
    assert check["ok"]
    assert check["facts"]["tables"] == 2
    assert check["facts"]["worst_table_fraction"] == 1.0
    assert check["facts"]["table_candidates"] == 11


def test_a_table_is_its_own_scope(tmp_path: Path, alice_key: Path) -> None:
    """The issue's post-compaction cleanup: 60% of a table's data files are candidates,
    far above the 10% scope limit, and nothing else is in the store: planned with the
    default policy, because the table's files are judged in the table's terms. Loose
    files outside the tables still answer to the scope limit, counted without the
    tables' files."""
    store = _two_tables(tmp_path, b_refs=4, loose_refs=40)
    r = _plan_args(tmp_path, store, alice_key)
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    check = next(c for c in doc["invariants"] if c["invariant"] == I5)
    assert "0 of 40 objects outside the table roots" in check["detail"]
    assert "2 table(s)" in check["detail"]
    assert "worst 60.00%" in check["detail"]
    # 5 loose orphans among 45 loose files (11%) exceed the scope's 10%; the tables'
    # 7 candidates would have diluted them to 5 of 72: they do not count.
    shutil.rmtree(store)
    store = _two_tables(tmp_path, b_refs=4, loose_refs=40, loose_orphans=5)
    r = _plan_args(tmp_path, store, alice_key, out="plan2")
    assert_one_line_error(r, 3, I5, "5 of 45 objects outside the table roots (11.11%)")


def test_show_and_review_show_the_tables(tmp_path: Path, alice_key: Path) -> None:
    """`cleanup show` and `cleanup review` list each table's data files, candidates and
    share; the review's candidate histogram has a labelled count axis."""
    store = _two_tables(tmp_path, b_refs=4)
    assert _plan_args(tmp_path, store, alice_key).code == 0
    r = run_cli(["show", str(tmp_path / "plan")])
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "tables (2 of 2, largest share first; I5 limit 95%" in text
    assert "ns/b/" in text
    assert "60.0%" in text
    shown = json.loads(run_cli(["show", str(tmp_path / "plan"), "--json"]).out)
    assert [t["root"] for t in shown["tables"]] == ["ns/b/", "a/"]
    assert shown["tables"][0]["data_objects"] == 10
    html_out = tmp_path / "review.html"
    r = run_cli(["review", str(tmp_path / "plan"), "--html", str(html_out)])
    assert r.code == 0, r.err
    page = html_out.read_text()
    assert '<h2 id="tables">Tables (2 of 2, largest share first)</h2>' in page
    assert "<td>ns/b/</td><td>10</td>" in page
    assert "<td>60.0%</td>" in page
    assert 'id="hist-y-label">candidates (objects per bin)</text>' in page
    assert 'class="tick">0</text>' in page


def test_plans_without_tables_or_the_new_policy_value_still_read(tmp_path: Path,
                                                                alice_key: Path) -> None:
    """plan.json without `tables` and a policy without max_table_delete_fraction (a plan
    made before either existed) is read: no table, the default limit."""
    from cleanup.core.canonical import canonical_json
    from cleanup.model import Plan
    from tests.factories import sample_plan

    data = sample_plan().to_json()
    assert "tables" not in data
    del data["policy"]["max_table_delete_fraction"]
    plan_obj = Plan.from_json(json.loads(canonical_json(data)))
    assert plan_obj.tables == ()
    assert plan_obj.policy.max_table_delete_fraction == 0.95


def test_blast_radius_check_in_table_terms() -> None:
    from cleanup.core.invariants import check_blast_radius

    tables = [{"root": "t/", "objects": 110, "bytes": 11_000, "metadata_objects": 10,
               "metadata_bytes": 1000, "candidates": 93, "candidate_bytes": 5000}]
    totals = {"objects": 110, "bytes": 11_000, "candidates": 93, "candidate_bytes": 5000}
    c = check_blast_radius(candidates=93, candidate_bytes=5000, scope_objects=110,
                           scope_bytes=11_000, max_fraction=0.10, tables=tables,
                           table_totals=totals, max_table_fraction=0.95)
    assert c.ok, c.detail
    c = check_blast_radius(candidates=93, candidate_bytes=5000, scope_objects=110,
                           scope_bytes=11_000, max_fraction=0.10, tables=tables,
                           table_totals=totals, max_table_fraction=0.9)
    assert not c.ok
    assert "table 't/': 93 of 100 data files (93.00%)" in c.detail
    assert c.facts["tables_over_limit_count"] == 1
    # bytes count too: few files holding most of the table's bytes
    tables[0].update(candidates=1, candidate_bytes=9800)
    c = check_blast_radius(candidates=1, candidate_bytes=9800, scope_objects=110,
                           scope_bytes=11_000, max_fraction=0.10, tables=tables,
                           table_totals={**totals, "candidates": 1, "candidate_bytes": 9800},
                           max_table_fraction=0.95)
    assert not c.ok
    assert "data bytes (98.00%)" in c.detail
    # without tables: the scope check as before
    c = check_blast_radius(candidates=11, candidate_bytes=11, scope_objects=100,
                           scope_bytes=100, max_fraction=0.10)
    assert not c.ok
    assert c.detail.startswith("11 of 100 objects (11.00%)")
