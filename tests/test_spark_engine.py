"""The plan computed on Apache Spark: same result, same manifest bytes, same plan id as
DuckDB (issue 15). One SparkSession (``local[2]``) serves the whole module; the
engines reuse it, as they do under spark-submit. No mock of Spark: a missing pyspark
or Java fails (tests/support.py ``unavailable``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.policy import Policy
from cleanup.core.stages import assign_stage, compile_tenant_pattern
from cleanup.core.timeutil import format_time
from cleanup.engine import EngineInput, EngineResult
from cleanup.engines import open_engine
from cleanup.errors import UsageError
from cleanup.formats import encode_meta, read_meta
from cleanup.inputs import input_sha256
from cleanup.model import Inputs, InventoryInfo, SnapshotInfo, Stamp
from cleanup.planner import PlanOptions, _read_facts, check_result, compute_plan
from cleanup.sources.tables import decode_roots, encode_roots
from cleanup.stores import open_store
from tests.factories import write_inventory_file, write_snapshot_file
from tests.inproc import run_cli
from tests.support import unavailable

NOW = datetime.now(UTC).replace(microsecond=0)
TAKEN = NOW - timedelta(hours=1)
CUTOFF = TAKEN - timedelta(hours=24)  # the default buffer
LATEST_OK = CUTOFF - timedelta(seconds=1)  # I2 with the inventory's 1 s precision
STAGES = "10%,50%,100%"
PATTERN = r"^(?P<tenant>[^/]+)/"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local[2] session for the module (no UI, 2 shuffle partitions)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        unavailable(f"pyspark is not installed ({exc}): pip install 'cleanup[spark]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        unavailable("Spark needs a Java runtime (java on PATH or JAVA_HOME)")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("cleanup-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", "2")
               .config("spark.sql.session.timeZone", "UTC")
               # Adaptive execution re-plans every stage: pure overhead on test-sized data.
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# --- generated inputs ---------------------------------------------------------------------------

TENANT_NAMES = ["t0", "t1", "t2", "internal", "ünï", "a b", "x%41", "p+q", "Ω", "t'q",
                "back\\slash", "_cleanup"] + [f"tenant-{i:02d}" for i in range(40)]
LEAVES = ["a", "part-0.parquet", "é", unicodedata.normalize("NFD", "é"), "%41", "A", "a+b",
          "a b", "dir/sub/f", "dir/g", "x:y", "100%", "new\nline", "tab\tx", "日本/語",
          "_delta_log/00.json", "v1.metadata.json", ".hidden", "cr\rx", "ls\u2028x/y",
          "trail\n", "dir/_tmp/x", "dir/.tmp", "metadata/v2.metadata.json"]
# Tenant patterns where Java's regex dialect would answer otherwise than RE2 (`.` and
# `\r`/U+2028, `$` before a final newline, `\s` and `\v`, an unmatched group): the manifest
# must not depend on the engine.
PATTERNS = [PATTERN, r"^(?P<tenant>.+?)/", r"(?P<tenant>[^/]*)$", r"^(?:(?P<tenant>t\d)|[^/]*)/",
            r"^(?P<tenant>\w+)", r"^[^/]+/(?P<tenant>.)", r"(?P<tenant>\s)"]
OFFSETS = [timedelta(days=-5), timedelta(seconds=-1), timedelta(microseconds=-1), timedelta(0),
           timedelta(microseconds=1), timedelta(seconds=1), timedelta(hours=2)]


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    """An inventory (unique keys, many tenants, times around the cutoff) and a snapshot
    (plain keys, other spellings of them, folders, duplicates, missing ones)."""
    tenants = draw(st.lists(st.sampled_from(TENANT_NAMES), min_size=1, max_size=25,
                            unique=True))
    keys = draw(st.lists(st.tuples(st.sampled_from(tenants), st.sampled_from(LEAVES),
                                   st.integers(0, 3)), min_size=1, max_size=60))
    inv_keys = sorted({f"{t}/{leaf}" + (f".{n}" if n else "") for t, leaf, n in keys}
                      | set(draw(st.lists(st.sampled_from(["top", "ünï", "a", "%41"]),
                                          max_size=2))))
    objects = [(k, draw(st.integers(0, 10_000)),
                LATEST_OK + draw(st.sampled_from(OFFSETS))) for k in inv_keys]
    spell = st.sampled_from(["plain", "plain", "plain", "abs", "file", "filehost", "FILE",
                             "dots", "double"])
    refs: list[str] = []
    for k in inv_keys:
        if draw(st.integers(0, 9)) < 7:
            refs.append(_spell(k, draw(spell)))
            if draw(st.integers(0, 9)) == 0:
                refs.append(k)  # a duplicate reference
    extra = st.sampled_from(["missing/x", "t1/dir", "t0/", "dir/sub/", "gone", "t2/dir/sub",
                             unicodedata.normalize("NFD", "ünï/é"), "ünï/%C3%A9", "x%2541/a",
                             "a%20b/a", "@@ROOT@@/t1/", "@@ROOT@@/../elsewhere/x"])
    refs += draw(st.lists(extra, max_size=4))
    if not refs:
        refs = [inv_keys[0]]
    roots = st.sampled_from([f"{t}{d}" for t in tenants for d in ("", "/dir")])
    return {"objects": objects, "refs": refs, "internal": tenants[:1],
            "sentinels": draw(st.lists(st.sampled_from(inv_keys), max_size=2, unique=True)),
            "pattern": draw(st.sampled_from(PATTERNS)),
            "table_roots": draw(st.lists(roots, max_size=2, unique=True)),
            # retirement: keys without a verified copy are never candidates
            "exclude": draw(st.lists(st.sampled_from(inv_keys), max_size=3, unique=True))}


def _spell(key: str, how: str) -> str:
    """Another spelling of a store-relative key (the store root is filled in later)."""
    return {"plain": key, "abs": f"@@ROOT@@/{key}", "file": f"file://@@ROOT@@/{key}",
            "filehost": f"file://localhost@@ROOT@@/{key}", "FILE": f"FILE:@@ROOT@@/{key}",
            "dots": f"@@ROOT@@/./{key}", "double": f"@@ROOT@@//{key}"}[how]


def _write_world(tmp: Path, world: dict[str, Any]) -> tuple[Path, Path, Path]:
    store = tmp / "store"
    store.mkdir()
    root = str(store.resolve())
    inv = write_inventory_file(tmp / "inventory.parquet", root, world["objects"],
                               listed_at=NOW - timedelta(minutes=5))
    refs = [r.replace("@@ROOT@@", root) for r in world["refs"]]
    tables = [f"{root}/{t}" for t in world.get("table_roots", ())]
    snap = _write_refs(tmp / "snapshot.parquet", refs, tables)
    return store, inv, snap


def _write_refs(path: Path, refs: list[str], table_roots: list[str]) -> Path:
    """A snapshot keeping duplicates (write_snapshot_file would drop them), with the
    table roots a table source would declare (I20)."""
    write_snapshot_file(path, refs, taken_at=TAKEN)
    meta = read_meta(str(path))
    if table_roots:
        meta["table_roots"] = encode_roots(table_roots)
    table = pa.table({"key": pa.array(refs, pa.string())})
    pq.write_table(table.replace_schema_metadata(encode_meta(meta)), path)
    return path


def _opts(store: Path, inv: Path, snap: Path, world: dict[str, Any], engine: str,
          out: Path) -> PlanOptions:
    return PlanOptions(
        store=str(store), inventory=str(inv), snapshot=str(snap), out=str(out), author="alice",
        key="unused", tenant_pattern=world.get("pattern", PATTERN),
        internal=tuple(world["internal"]), stages=STAGES,
        policy=Policy().with_values({"max_delete_fraction": 1.0, "max_missing_refs": 1.0}),
        accept_near_misses=True, sentinels=tuple(world["sentinels"]), engine=engine,
        threads=2, now=NOW)


_FIRST_FACTS: dict[str, Any] = {}


def _plan_with(engine: str, store: Path, inv: Path, snap: Path, world: dict[str, Any],
               tmp: Path) -> dict[str, Any]:
    """What `cleanup plan` computes with ``engine``, refusals included: the engine's result,
    the checks, the manifest's bytes and the plan id compute_plan gives (before signing)."""
    opts = _opts(store, inv, snap, world, engine, tmp / f"plan-{engine}")
    facts = _read_facts(opts, open_store(_ref(store)), NOW)
    # The store clock's measured skew (I15) is recorded in plan.json (the skews and the
    # clock check's details) and varies by a few microseconds from one reading to the
    # next: both engines plan with the same facts, as one `cleanup plan` reads them once.
    facts = _FIRST_FACTS.setdefault(str(store), facts)
    work = tmp / f"work-{engine}"
    work.mkdir()
    exclude = None
    if world.get("exclude"):
        exclude = work / "exclude.parquet"
        pq.write_table(pa.table({"key": pa.array(world["exclude"], pa.string())}), exclude)
    pattern = world.get("pattern", PATTERN)
    engine_obj = open_engine(EngineInput(
        inventory=str(inv), snapshot=str(snap), store=facts.ref, cutoff=facts.cutoff,
        precision=facts.precision, tenant_pattern=pattern,
        tenant_group=compile_tenant_pattern(pattern), sentinels=facts.sentinels,
        threads=2, temp_dir=str(work / ".spill"), engine=engine,
        table_roots=decode_roots(facts.snap_meta.get("table_roots")),
        exclude=None if exclude is None else str(exclude)))
    try:
        res = engine_obj.compute()
        checks = [*facts.checks, *check_result(opts, facts, engine_obj, res)]
        stage_of = {t: assign_stage(t, frozenset(opts.internal), facts.stage_pcts)
                    for t in res.tenants}
        manifest = work / "manifest.parquet"
        per_stage = engine_obj.write_manifest(stage_of, str(manifest))
    finally:
        engine_obj.close()
    inputs = Inputs(
        InventoryInfo(str(inv), input_sha256(str(inv), "inventory"), "listing", len(
            world["objects"]), Stamp(facts.listed_at, "local"), facts.precision, "test"),
        SnapshotInfo(str(snap), input_sha256(str(snap), "snapshot"), "test",
                     facts.snapshot_rows, facts.snap_meta.get("digest"),
                     Stamp(facts.taken_at, "claimed")))
    sha = "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
    plan = compute_plan(opts, facts, res, per_stage, checks, inputs=inputs,
                        manifest_sha256=sha, author_key="ssh-ed25519 AAAA test", now=NOW)
    return {"result": _comparable(res), "checks": [(c.invariant, c.ok) for c in checks],
            "per_stage": per_stage, "manifest_sha256": sha, "plan_id": plan.plan_id,
            "rows": pq.read_table(manifest).to_pylist()}


def _ref(store: Path) -> Any:
    from cleanup.core.paths import parse_store

    return parse_store(str(store))


def _comparable(res: EngineResult) -> dict[str, Any]:
    """The result without the examples whose choice depends on scan order (they appear
    only in refusals: a plan with an unresolvable or foreign reference is refused)."""
    d = asdict(res)
    for name in ("foreign_examples", "unresolvable_examples"):
        d[name] = len(d[name])
    return d


def _assert_same(duck: dict[str, Any], spark_run: dict[str, Any]) -> None:
    assert spark_run["result"] == duck["result"]
    assert spark_run["checks"] == duck["checks"]
    assert spark_run["per_stage"] == duck["per_stage"]
    assert spark_run["rows"] == duck["rows"]
    assert spark_run["manifest_sha256"] == duck["manifest_sha256"]
    assert spark_run["plan_id"] == duck["plan_id"]


# --- the differential property ------------------------------------------------------------------


@settings(max_examples=5, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(world=worlds())
def test_spark_and_duckdb_give_the_same_plan(spark: Any, world: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="spark-diff-") as d:
        tmp = Path(d)
        store, inv, snap = _write_world(tmp, world)
        duck = _plan_with("duckdb", store, inv, snap, world, tmp)
        sp = _plan_with("spark", store, inv, snap, world, tmp)
        _assert_same(duck, sp)


def test_a_fixed_world_exercises_every_branch(spark: Any, tmp_path: Path) -> None:
    """Ties at the cutoff, folders, implicit folders, near-misses, duplicates, other
    spellings, the reserved prefix, sentinels: all present, same answer from both."""
    objects = [(f"t{i % 7}/dir/part-{i}.parquet", 100 + i, LATEST_OK + OFFSETS[i % 7])
               for i in range(70)]
    objects += [("t5/tbl/_delta_log/00.json", 9, LATEST_OK - timedelta(days=3)),
                ("t5/tbl/part-0.parquet", 10, LATEST_OK - timedelta(days=3)),
                # I20's hidden components, each spelling: kept, never candidates
                *[(f"t5/tbl/{k}", 12, LATEST_OK - timedelta(days=3)) for k in
                  ("dir/.tmp", "dir/_x", ".h", "_h", "metadata/v1.metadata.json")],
                ("t6/other/_delta_log/00.json", 11, LATEST_OK - timedelta(days=3)),
                ("_cleanup/clock/x", 1, LATEST_OK - timedelta(days=9)),
                # a nested store's quarantine: its own bookkeeping, never a candidate here
                ("t4/_cleanup/quarantine/p/x", 3, LATEST_OK - timedelta(days=9)),
                ("ünï/é", 5, LATEST_OK), ("x%41/a", 6, LATEST_OK - timedelta(days=1)),
                ("t1/keep/a", 7, LATEST_OK), ("t2/sub/b", 8, LATEST_OK)]
    refs = [k for k, _s, _t in objects[:40]] + ["t1/keep", "t2/sub/", "missing/x",
                                                unicodedata.normalize("NFD", "ünï/é") + "x",
                                                "x%2541/a", objects[0][0], "@@ROOT@@/t3/dir/"]
    refs.append(unicodedata.normalize("NFD", "ünï/é"))  # a near-miss of the NFC key
    excluded = [objects[43][0], objects[45][0]]  # candidates, but no verified copy
    world = {"objects": objects, "refs": refs, "internal": ["t0"],
             "sentinels": [objects[0][0]], "table_roots": ["t5/tbl"], "exclude": excluded}
    store, inv, snap = _write_world(tmp_path, world)
    duck = _plan_with("duckdb", store, inv, snap, world, tmp_path)
    sp = _plan_with("spark", store, inv, snap, world, tmp_path)
    _assert_same(duck, sp)
    r = duck["result"]
    assert r["candidates"] > 0
    assert not {row["key"] for row in sp["rows"]} & set(excluded)
    assert r["per_table"]
    assert r["per_table"][0]["root"] == "t5/tbl/"
    assert {row["tenant"] for row in sp["rows"]} >= {"t1", "t2"}
    assert not any("_cleanup/" in row["key"] for row in duck["rows"])
    assert r["protected_by_folder"] >= 1
    assert r["implicit_folder_refs"] >= 1
    assert r["near_misses"] >= 1
    assert r["missing_refs"] >= 1
    assert r["sentinels_in_snapshot"] == {objects[0][0]}
    assert r["table_protected"] == 6  # I20: t5/tbl/_delta_log/ and the hidden ones kept
    assert r["uncovered_table_roots"] == 1  # t6/other/ has a log but no source


def test_manifests_of_several_row_groups_are_the_same_bytes(spark: Any, tmp_path: Path) -> None:
    """Past one row group (122,880 rows) the writer's row-group boundaries must not depend
    on the engine either: 150,000 candidates in 40 tenants, three stages."""
    objects = [(f"tenant-{i % 40:02d}/part-{i:06d}.parquet", i % 997, LATEST_OK - timedelta(
        seconds=i % 3)) for i in range(160_000)]
    refs = [k for i, (k, _s, _t) in enumerate(objects) if i % 16 == 0]
    world = {"objects": objects, "refs": refs, "internal": ["tenant-00"], "sentinels": []}
    store, inv, snap = _write_world(tmp_path, world)
    duck = _plan_with("duckdb", store, inv, snap, world, tmp_path)
    sp = _plan_with("spark", store, inv, snap, world, tmp_path)
    assert duck["result"]["candidates"] == 150_000
    manifest = tmp_path / "work-spark" / "manifest.parquet"
    assert pq.ParquetFile(manifest).metadata.num_row_groups >= 2
    _assert_same(duck, sp)


def test_an_executor_with_another_duckdb_is_refused(spark: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenants are extracted on the executors by DuckDB; an executor whose DuckDB is not
    the driver's (here: the driver claims another version) is refused in one line, since
    another build of the regex engine could give another tenant."""
    import duckdb

    world = {"objects": [("t0/a", 1, LATEST_OK), ("t1/b", 2, LATEST_OK)], "refs": ["t0/a"],
             "internal": ["t0"], "sentinels": []}
    store, inv, snap = _write_world(tmp_path, world)
    monkeypatch.setattr(duckdb, "__version__", "0.0.0-driver")
    with pytest.raises(UsageError) as err:
        _plan_with("spark", store, inv, snap, world, tmp_path)
    msg = err.value.message
    assert "\n" not in msg
    assert "cleanup-executor: an executor has DuckDB" in msg
    assert "0.0.0-driver" in msg


def test_require_copy_in_on_spark_excludes_objects_without_a_copy(spark: Any, tmp_path: Path,
                                                                  keys_dir: Path) -> None:
    """Retirement's recoverability guard on Spark: an object with no verified copy is not
    a candidate (the Spark engine once ignored the exclusion and planned it)."""
    from tests.scenario import ok
    from tests.test_retire import _backup_plan, _backup_world

    w = _backup_world(tmp_path, keys_dir)
    out = json.loads(ok(_backup_plan(w, "--engine", "spark")).out)
    assert set(w.manifest()) == {f"internal/d/{i:03d}.bin" for i in (3, 4, 5)}
    assert out["copies"]["blocking_examples"] == [["internal/d/002.bin", "copy missing"]]


# --- the CLI -------------------------------------------------------------------------------------


def _cli_inputs(tmp: Path) -> tuple[Path, Path, Path, list[tuple[str, int, datetime]]]:
    store = tmp / "store"
    store.mkdir()
    objects = [(f"tenant-{i % 9}/t/part-{i:04d}.parquet", 1000 + i,
                LATEST_OK - timedelta(days=2) + timedelta(seconds=i)) for i in range(200)]
    inv = write_inventory_file(tmp / "inventory.parquet", str(store.resolve()), objects,
                               listed_at=NOW - timedelta(minutes=5))
    snap = write_snapshot_file(tmp / "snapshot.parquet",
                               [k for i, (k, _s, _t) in enumerate(objects) if i % 20 != 7],
                               taken_at=TAKEN)
    return store, inv, snap, objects


def _cli_plan(tmp: Path, key: Path, store: Path, inv: str, snap: str, out: str,
              *extra: str) -> dict[str, Any]:
    r = run_cli(["plan", "--store", str(store), "--inventory", inv, "--snapshot", snap,
                 "-o", str(tmp / out), "--author", "alice", "--key", str(key),
                 "--internal", "tenant-0", "--json", *extra])
    assert r.code == 0, (r.code, r.out, r.err)
    out_json: dict[str, Any] = json.loads(r.out)
    return out_json


def _manifest_sha(plan_dir: Path) -> str:
    return hashlib.sha256((plan_dir / "manifest.parquet").read_bytes()).hexdigest()


def test_cli_engine_spark_writes_the_same_manifest(spark: Any, tmp_path: Path,
                                                   alice_key: Path) -> None:
    store, inv, snap, _objects = _cli_inputs(tmp_path)
    duck = _cli_plan(tmp_path, alice_key, store, str(inv), str(snap), "plan-duckdb")
    sp = _cli_plan(tmp_path, alice_key, store, str(inv), str(snap), "plan-spark",
                   "--engine", "spark", "--spark-master", "local[2]",
                   "--spark-conf", "spark.sql.shuffle.partitions=2")
    assert sp["objects"] == duck["objects"] == 10
    assert sp["bytes"] == duck["bytes"]
    assert sp["stages"] == duck["stages"]
    assert _manifest_sha(tmp_path / "plan-spark") == _manifest_sha(tmp_path / "plan-duckdb")
    plan_d = json.loads((tmp_path / "plan-duckdb" / "plan.json").read_text())
    plan_s = json.loads((tmp_path / "plan-spark" / "plan.json").read_text())
    for p in (plan_d, plan_s):  # read at plan time: the local clock and the store's clock
        p.pop("created_at")
        p.pop("clocks")
        p["invariants"] = [c for c in p["invariants"] if not c["invariant"].startswith("I15")]
        for c in p["invariants"]:
            c["facts"].pop("now", None)
    assert plan_s == plan_d  # nothing else differs: nothing names the engine
    r = run_cli(["show", str(tmp_path / "plan-spark"), "--json"])
    assert r.code == 0, r.err
    bad = run_cli(["plan", "--store", str(store), "--inventory", str(inv), "--snapshot",
                   str(snap), "-o", str(tmp_path / "p3"), "--author", "alice", "--key",
                   str(alice_key), "--engine", "spark", "--spark-conf", "no-equals-sign"])
    assert bad.code == 2, (bad.out, bad.err)
    assert "KEY=VALUE" in bad.err


def test_sharded_inputs_give_the_same_manifest(spark: Any, tmp_path: Path,
                                               alice_key: Path) -> None:
    store, inv, snap, _objects = _cli_inputs(tmp_path)
    single = _cli_plan(tmp_path, alice_key, store, str(inv), str(snap), "plan-single")
    inv_dir = tmp_path / "inv-shards"
    inv_dir.mkdir()
    table = pq.read_table(inv)
    for i, start in enumerate(range(0, table.num_rows, 70)):
        part = table.slice(start, 70)
        meta = {**read_meta(str(inv)), "rows": str(part.num_rows)}
        pq.write_table(part.replace_schema_metadata(encode_meta(meta)),
                       inv_dir / f"part-{i:05d}.parquet")
    (inv_dir / "_SUCCESS").write_text("")
    snap_table = pq.read_table(snap)
    half = snap_table.num_rows // 2
    for i, part in enumerate((snap_table.slice(0, half), snap_table.slice(half))):
        meta = {**read_meta(str(snap)), "rows": str(part.num_rows)}
        pq.write_table(part.replace_schema_metadata(encode_meta(meta)),
                       tmp_path / f"snap-{i}.parquet")
    snap_glob = str(tmp_path / "snap-*.parquet")
    for engine in ("duckdb", "spark"):
        got = _cli_plan(tmp_path, alice_key, store, str(inv_dir), snap_glob,
                        f"plan-shards-{engine}", "--engine", engine)
        assert got["objects"] == single["objects"]
        assert _manifest_sha(tmp_path / f"plan-shards-{engine}") == _manifest_sha(
            tmp_path / "plan-single")
        plan = json.loads((tmp_path / f"plan-shards-{engine}" / "plan.json").read_text())
        assert plan["inputs"]["inventory"]["rows"] == table.num_rows
    # Shards of different listings, or of different columns, are refused.
    other = {**read_meta(str(inv)), "listed_at": format_time(NOW - timedelta(hours=3))}
    pq.write_table(table.slice(0, 1).replace_schema_metadata(encode_meta(other)),
                   inv_dir / "part-99999.parquet")
    r = run_cli(["plan", "--store", str(store), "--inventory", str(inv_dir), "--snapshot",
                 snap_glob, "-o", str(tmp_path / "p-bad"), "--author", "alice", "--key",
                 str(alice_key)])
    assert r.code == 2, (r.out, r.err)
    assert "disagree on their metadata (listed_at)" in r.err
    (inv_dir / "part-99999.parquet").unlink()
    pq.write_table(table.slice(0, 1).drop_columns(["key_raw"]).replace_schema_metadata(
        encode_meta(read_meta(str(inv)))), inv_dir / "part-99999.parquet")
    r = run_cli(["plan", "--store", str(store), "--inventory", str(inv_dir), "--snapshot",
                 snap_glob, "-o", str(tmp_path / "p-bad"), "--author", "alice", "--key",
                 str(alice_key)])
    assert r.code == 2, (r.out, r.err)
    assert "disagree on their columns" in r.err
    r = run_cli(["plan", "--store", str(store), "--inventory", str(tmp_path / "nothing-*"),
                 "--snapshot", snap_glob, "-o", str(tmp_path / "p-bad"), "--author", "alice",
                 "--key", str(alice_key)])
    assert r.code == 2, (r.out, r.err)
    assert "matches no file" in r.err
    for url in ("s3a://bucket/inventory/", "s3://bucket/inv.parquet", "gs://b/x/*.parquet"):
        r = run_cli(["plan", "--store", str(store), "--inventory", url, "--snapshot", snap_glob,
                     "-o", str(tmp_path / "p-bad"), "--author", "alice", "--key",
                     str(alice_key)])
        assert r.code == 2, (r.out, r.err)
        assert "inputs are read from a file system" in r.err
        assert len(r.err.splitlines()) <= 2
        assert not (tmp_path / "p-bad").exists()


def test_missing_pyspark_is_a_usage_error_naming_the_extra(tmp_path: Path,
                                                          alice_key: Path) -> None:
    store, inv, snap, _objects = _cli_inputs(tmp_path)
    code = ("import sys; sys.modules['pyspark'] = None; "
            "from cleanup.cli.main import main; main(sys.argv[1:])")
    p = subprocess.run([sys.executable, "-c", code, "plan", "--store", str(store),
                        "--inventory", str(inv), "--snapshot", str(snap), "-o",
                        str(tmp_path / "plan"), "--author", "alice", "--key", str(alice_key),
                        "--engine", "spark"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "pip install 'cleanup[spark]'" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "plan").exists()
    with pytest.raises(UsageError, match="unknown engine"):
        open_engine(EngineInput(inventory=str(inv), snapshot=str(snap), store=_ref(store),
                                cutoff=CUTOFF, precision=timedelta(seconds=1),
                                tenant_pattern=PATTERN, tenant_group=1, engine="flink"))


def test_fold_forms_mirror_duckdb() -> None:
    import duckdb

    from cleanup.core.paths import fold_sql
    from cleanup.engines.spark import fold_forms

    con = duckdb.connect()
    for key in ["a%zzb", "a%41b", "a%ffb", "a%4", "a+b%20c", "%C3%A9", "x%", "e\u0301",
                "p+q%2B", "plain"]:
        (got,) = con.execute(f"SELECT {fold_sql('k')} FROM (SELECT ?::VARCHAR AS k)",
                             [key]).fetchone() or (None,)
        assert sorted(got) == sorted(fold_forms(key)), key
    # The executors run a self-contained copy of fold_forms; it must stay the same code.
    import inspect

    from cleanup.engines.spark import SparkEngine

    src = inspect.getsource(SparkEngine._near_misses)
    assert 'for form in (key, decode(key), decode(key.replace("+", " "))):' in src
