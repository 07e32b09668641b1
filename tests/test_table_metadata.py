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
                    "--author", "alice", "--key", str(key), "--max-delete-fraction", "1"])


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
    facts = next(c for c in doc["invariants"] if c["invariant"] == I20)["facts"]
    per_table = {t["root"]: t for t in facts["per_table"]}
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
