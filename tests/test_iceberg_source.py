"""`cleanup snapshot iceberg://CATALOG/NAMESPACE[.TABLE]`: real Iceberg tables written by
pyiceberg in a SQL catalog (SQLite; PostgreSQL at 127.0.0.1:5432).

The differential test drives appends, overwrites, deletes, tags, snapshot expiry and
stray files with hypothesis, and checks that `cleanup plan`'s candidates equal the
orphan set computed from pyiceberg's own metadata tables (`inspect.all_files`,
`inspect.all_manifests`, the metadata log, every snapshot's manifest list, the
statistics files), apart from what I20 keeps (`metadata/` and hidden paths).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Run, assert_one_line_error
from tests.inproc import run_cli
from tests.support import scratch_database, unavailable

CITIES = ("New York", "50%", "a=b", "Zürich", "x y%z=é")
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=10)


def ok(r: Run) -> Run:
    assert r.code == 0, (r.code, r.out, r.err)
    return r


def catalog_env(name: str, uri: str, warehouse: Path) -> dict[str, str]:
    up = name.upper()
    return {f"PYICEBERG_CATALOG__{up}__TYPE": "sql", f"PYICEBERG_CATALOG__{up}__URI": uri,
            f"PYICEBERG_CATALOG__{up}__WAREHOUSE": f"file://{warehouse}"}


def open_catalog(name: str, uri: str, warehouse: Path) -> Any:
    try:
        from pyiceberg.catalog.sql import SqlCatalog
    except ImportError:
        unavailable("the pyiceberg package (extra cleanup[iceberg]) is not installed")
    return SqlCatalog(name, uri=uri, warehouse=f"file://{warehouse}")


def _batch(n: int, seed: int) -> pa.Table:
    return pa.table({"city": [CITIES[(seed + i) % len(CITIES)] for i in range(n)],
                     "v": pa.array([seed * 100 + i for i in range(n)], pa.int64())})


def new_table(catalog: Any, ident: str) -> Any:
    table = catalog.create_table(ident, schema=_batch(1, 0).schema)
    with table.update_spec() as spec:
        spec.add_identity("city")
    return table


def reachable(table: Any) -> set[str]:
    """pyiceberg's own answer: every file its metadata tables say the table can reach."""
    table.refresh()
    meta = table.metadata
    out = {table.metadata_location, *(e.metadata_file for e in meta.metadata_log)}
    out |= {s.manifest_list for s in meta.snapshots}
    out |= set(table.inspect.all_manifests().column("path").to_pylist())
    out |= set(table.inspect.all_files().column("file_path").to_pylist())
    out |= {s.statistics_path for s in meta.statistics}
    out |= {s.statistics_path for s in meta.partition_statistics}
    return {_path(x) for x in out}


def _path(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def files_under(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def backdate(root: Path, when: datetime) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (when.timestamp(), when.timestamp()))


def i20_kept(rel: str, table_rel: str) -> bool:
    rest = rel[len(table_rel):]
    return rest.startswith("metadata/") or any(c.startswith(("_", "."))
                                               for c in rest.split("/"))


def plan_candidates(tmp: Path, store: Path, key: Path, source: str,
                    env: dict[str, str]) -> set[str]:
    snap, inv, plan = tmp / "snap.parquet", tmp / "inv.parquet", tmp / "plan"
    shutil.rmtree(plan, ignore_errors=True)
    ok(run_cli(["snapshot", source, "-o", str(snap)], env=env))
    ok(run_cli(["inventory", str(store), "-o", str(inv), "--trust-mtime"]))
    ok(run_cli(["plan", "--store", str(store), "--inventory", str(inv), "--snapshot",
                str(snap), "-o", str(plan), "--author", "alice", "--key", str(key),
                "--max-delete-fraction", "1"]))
    rows = duckdb.connect().execute(
        f"SELECT key FROM read_parquet('{plan}/manifest.parquet')").fetchall()
    return {str(r[0]) for r in rows}


OPS = st.lists(st.sampled_from(["append", "overwrite", "delete", "tag", "expire", "stray"]),
               min_size=1, max_size=5)


def apply_op(table: Any, op: str, i: int, strays: list[Path]) -> None:
    if op == "append":
        table.append(_batch(3, i))
    elif op == "overwrite":
        table.overwrite(_batch(2, i))
    elif op == "delete":
        table.delete(f"v = {(i - 1) * 100}")
    elif op == "tag" and table.current_snapshot() is not None:
        table.manage_snapshots().create_tag(table.current_snapshot().snapshot_id,
                                            f"tag{i}").commit()
    elif op == "expire":
        table.refresh()
        protected = {r.snapshot_id for r in table.metadata.refs.values()}
        old = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in protected]
        if old:
            table.maintenance.expire_snapshots().by_id(old[0]).commit()
    elif op == "stray":
        root = Path(_path(table.metadata.location))
        p = root / "data" / f"city={CITIES[i % len(CITIES)]}" / f"stray-{i}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"stray")
        strays.append(p)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS, other_ops=OPS)
def test_plan_equals_pyiceberg_orphans(tmp_path_factory: pytest.TempPathFactory,
                                       alice_key: Path, ops: list[str],
                                       other_ops: list[str]) -> None:
    """Two tables in one namespace, snapshotted at once."""
    tmp = tmp_path_factory.mktemp("iceberg")
    warehouse = tmp / "wh"
    uri = f"sqlite:///{tmp}/catalog.db"
    catalog = open_catalog("dev", uri, warehouse)
    catalog.create_namespace("db")
    tables = [new_table(catalog, "db.t"), new_table(catalog, "db.u")]
    strays: list[Path] = []
    for table, seq in zip(tables, (["append", *ops], ["append", *other_ops]), strict=True):
        for i, op in enumerate(seq):
            apply_op(table, op, i + 1, strays)
    hidden = [warehouse / "db" / "t" / "data" / ".tmp.crc", warehouse / "db" / "u" / "_tmp"]
    for h in hidden:
        h.parent.mkdir(parents=True, exist_ok=True)
        h.write_bytes(b"h")
    backdate(warehouse, OLD)
    fresh = warehouse / "db" / "t" / "data" / "fresh-stray.parquet"
    fresh.write_bytes(b"new")  # written now: after the cutoff, never a candidate
    ours = plan_candidates(tmp, warehouse, alice_key, "iceberg://dev/db",
                           catalog_env("dev", uri, warehouse))
    expected: set[str] = set()
    for table in tables:
        root = Path(_path(table.metadata.location))
        table_rel = os.path.relpath(root, warehouse) + "/"
        orphans = files_under(root) - reachable(table) - {str(fresh)}
        for path in orphans:
            rel = os.path.relpath(path, warehouse)
            if not i20_kept(rel, table_rel):
                expected.add(rel)
    assert ours == expected, (ops, other_ops, ours ^ expected)
    assert {os.path.relpath(s, warehouse) for s in strays} <= ours
    assert not any("/metadata/" in k for k in ours)
    # Remove the candidates: every table still loads and every snapshot still in its
    # metadata (branch and tag heads included) still reads.
    for rel in ours:
        (warehouse / rel).unlink()
    for table in tables:
        loaded = catalog.load_table(table.name())
        for snap in loaded.metadata.snapshots:
            loaded.scan(snapshot_id=snap.snapshot_id).to_arrow()


def test_single_table_and_partition_values(tmp_path: Path) -> None:
    """`NAMESPACE.TABLE` names one table; partition folders (`city=50%25`, `city=a%3Db`,
    `city=New+York`) are taken literally; every reference is a file that exists."""
    warehouse = tmp_path / "wh"
    uri = f"sqlite:///{tmp_path}/catalog.db"
    catalog = open_catalog("lake", uri, warehouse)
    catalog.create_namespace("db")
    t = new_table(catalog, "db.t")
    t.append(_batch(len(CITIES), 0))
    t.overwrite(_batch(2, 1))
    u = new_table(catalog, "db.u")
    u.append(_batch(2, 2))
    snap = tmp_path / "s.parquet"
    out = json.loads(ok(run_cli(["snapshot", "iceberg://lake/db.t", "-o", str(snap), "--json"],
                                env=catalog_env("lake", uri, warehouse))).out)
    assert out["taken_at_clock"] == "local:iceberg-reader"
    assert out["source"].startswith("iceberg:lake/db.t (db.t@")
    keys = {_path(k) for k in pq.read_table(snap).column("key").to_pylist()}
    assert keys == reachable(t)
    assert all(os.path.isfile(k) for k in keys)
    assert any("/city=50%25/" in k for k in keys)
    roots = json.loads(pq.read_metadata(snap).metadata[b"cleanup.table_roots"])
    assert roots == [t.metadata.location]


def test_postgresql_catalog(tmp_path: Path) -> None:
    """The same source with the SQL catalog in PostgreSQL."""
    with scratch_database() as url:
        uri = url.replace("postgresql://", "postgresql+psycopg://", 1)
        warehouse = tmp_path / "wh"
        catalog = open_catalog("pg", uri, warehouse)
        catalog.create_namespace("db")
        t = new_table(catalog, "db.t")
        t.append(_batch(4, 0))
        t.delete("v = 1")
        snap = tmp_path / "s.parquet"
        ok(run_cli(["snapshot", "iceberg://pg/db", "-o", str(snap)],
                   env=catalog_env("pg", uri, warehouse)))
        keys = {_path(k) for k in pq.read_table(snap).column("key").to_pylist()}
        assert keys == reachable(t)
        catalog.engine.dispose()


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh"
    uri = f"sqlite:///{tmp_path}/catalog.db"
    catalog = open_catalog("dev", uri, warehouse)
    catalog.create_namespace("empty")
    env = catalog_env("dev", uri, warehouse)
    out = str(tmp_path / "s.parquet")
    assert_one_line_error(run_cli(["snapshot", "iceberg://dev", "-o", out], env=env), 2,
                          "cannot tell the catalog and the namespace")
    assert_one_line_error(run_cli(["snapshot", "iceberg://dev/nope", "-o", out], env=env), 2,
                          "no such table or namespace")
    assert_one_line_error(run_cli(["snapshot", "iceberg://dev/empty", "-o", out], env=env), 2,
                          "the namespace has no tables")
    assert_one_line_error(run_cli(["snapshot", "iceberg://unconfigured/db", "-o", out]), 2,
                          "cannot open the catalog", "PYICEBERG_CATALOG__UNCONFIGURED__URI")
    assert_one_line_error(run_cli(["snapshot", "iceberg://dev/empty", "-o", out,
                                   "--retention", "7d"], env=env), 2, "--retention")
    assert not os.path.exists(out)


def _rows_of(table: Any, snapshot_id: int | None = None) -> list[tuple[Any, ...]]:
    t = table.scan(snapshot_id=snapshot_id).to_arrow()
    return sorted(zip(*(t.column(c).to_pylist() for c in sorted(t.column_names)), strict=True))


def test_execute_every_stage_and_purge_keep_the_tables_loadable(
        tmp_path: Path, alice_key: Path, bob_key: Path) -> None:
    """A namespace of two tables with expired snapshots (their data files are orphans)
    and stray files, planned from `iceberg://`, executed stage by stage under the trust
    flow (trust root, reconciliation against the catalog signed into the plan, a
    witness of each challenge), a 1 s quarantine retention waited out and every stage
    purged: the candidates are gone, and every table loads and every snapshot still in
    its metadata reads the same rows as before."""
    from tests.scenario import Scenario, wait_until

    warehouse = tmp_path / "wh"
    uri = f"sqlite:///{tmp_path}/catalog.db"
    catalog = open_catalog("lake", uri, warehouse)
    catalog.create_namespace("db")
    strays: list[Path] = []
    tables = [new_table(catalog, "db.t"), new_table(catalog, "db.u")]
    for table in tables:
        for i, op in enumerate(["append", "overwrite", "append", "expire", "stray", "append",
                                "delete", "stray"], start=1):
            apply_op(table, op, i, strays)
    backdate(warehouse, OLD)
    before = {}
    for table in tables:
        loaded = catalog.load_table(table.name())
        before[table.name()] = {s.snapshot_id: _rows_of(loaded, s.snapshot_id)
                                for s in loaded.metadata.snapshots}
    cfg = tmp_path / "cleanup.toml"
    cfg.write_text('[policy]\nretention = "1s"\n')
    sc = Scenario(tmp_path, str(warehouse), signers={"alice": alice_key, "bob": bob_key},
                  env=catalog_env("lake", uri, warehouse))
    sc.reconcile_args = ["--reconcile-with", "iceberg://lake/db"]
    ok(sc.cli(["snapshot", "iceberg://lake/db", "-o", str(sc.snapshot)]))
    sc.list_store("--trust-mtime")
    ok(sc.create_plan("--tenant-pattern", r"^db/(?P<tenant>[^/]+)/", "--internal", "t",
                      "--stages", "100%", "--hold", "1s", "--override-minimums",
                      "--config", str(cfg)))
    planned = set(sc.manifest())
    assert {os.path.relpath(s, warehouse) for s in strays} <= planned
    assert not any("/metadata/" in k for k in planned)
    assert sc.manifest(0), "stage 0 (table t) has candidates"
    assert sc.manifest(1), "stage 1 (table u) has candidates"
    assert [t["root"] for t in sc.read_plan()["tables"]] == ["db/t/", "db/u/"]
    ok(sc.approve("bob"))
    for stage in (0, 1):
        if stage:
            ends = datetime.fromisoformat(sc.status()["stages"][0]["hold_ends_at"])
            wait_until(_after(ends + timedelta(milliseconds=100)), what="the hold to end")
        ok(sc.witness(stage, "bob"))
        res = json.loads(ok(sc.execute(stage)).out)
        assert res["removed"] == len(sc.manifest(stage))
    for stage in (0, 1):
        finished = datetime.fromisoformat(sc.status()["stages"][stage]["finished_at"])
        wait_until(_after(finished + timedelta(seconds=1.2)), what="the 1s retention to pass")
        ok(sc.witness(stage, "bob", action="purge"))
        r = ok(sc.cli(["purge", str(sc.plan_dir), "--stage", str(stage), "--executor",
                       "alice", "--key", str(alice_key)]))
        assert f"purged {len(sc.manifest(stage))} quarantined objects" in r.out
    assert not any((warehouse / k).exists() for k in planned)
    quarantine = warehouse / "_cleanup" / "quarantine"
    assert not [p for p in quarantine.rglob("*.parquet")]
    for table in tables:
        loaded = catalog.load_table(table.name())
        assert {s.snapshot_id for s in loaded.metadata.snapshots} == set(before[table.name()])
        for snapshot_id, rows in before[table.name()].items():
            assert _rows_of(loaded, snapshot_id) == rows, (table.name(), snapshot_id)


def _after(t: datetime) -> Any:
    return lambda: datetime.now(UTC) > t
