"""`cleanup snapshot delta://PATH`: real Delta tables written by delta-rs (deltalake).

The differential test drives a sequence of appends, overwrites, deletes, compactions
and stray files with hypothesis, gives every commit a time in the past (as if the
table had lived for weeks), and checks that `cleanup plan`'s candidates equal delta-rs
`vacuum(dry_run=True, full=True)` at the same retention, apart from the hidden paths
that I20 keeps and VACUUM only keeps at the table's top level.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.sources.delta import dv_reference, parse_interval, z85_decode
from tests.conftest import Run, assert_one_line_error
from tests.inproc import run_cli
from tests.support import unavailable

try:
    from deltalake import DeltaTable, write_deltalake
except ImportError:  # pragma: no cover - the extra is part of the test environment
    HAVE_DELTALAKE = False
else:
    HAVE_DELTALAKE = True

CITIES = ("New York", "50%", "a=b", "Zürich", "x y%z=é")
DAY = timedelta(days=1)
RETENTION_HOURS = 168


def need_deltalake() -> None:
    if not HAVE_DELTALAKE:
        unavailable("the deltalake package (extra cleanup[delta]) is not installed")


def ok(r: Run) -> Run:
    assert r.code == 0, (r.code, r.out, r.err)
    return r


def _batch(n: int, seed: int) -> pa.Table:
    return pa.table({"city": [CITIES[(seed + i) % len(CITIES)] for i in range(n)],
                     "v": pa.array([seed * 100 + i for i in range(n)], pa.int64())})


def _epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def backdate(table: Path, when: Sequence[datetime]) -> None:
    """Give commit ``v`` the time ``when[v]``: its commitInfo, add and remove times,
    the mtime of the files it added, and the log file's own mtime. The table then
    looks as if it had been written over weeks."""
    log = table / "_delta_log"
    for version, t in enumerate(when):
        path = log / f"{version:020d}.json"
        if not path.exists():
            continue
        ms = _epoch_ms(t)
        lines = []
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                action["commitInfo"]["timestamp"] = ms
            if "add" in action:
                action["add"]["modificationTime"] = ms
                data = table / _object_name(action["add"]["path"])
                if data.exists():
                    os.utime(data, (t.timestamp(), t.timestamp()))
            if "remove" in action:
                action["remove"]["deletionTimestamp"] = ms
            lines.append(json.dumps(action))
        path.write_text("\n".join(lines) + "\n")
        os.utime(path, (t.timestamp(), t.timestamp()))


def _object_name(add_path: str) -> str:
    from urllib.parse import unquote

    return unquote(add_path)


def plant(path: Path, when: datetime, data: bytes = b"stray") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))


def age_everything(table: Path, when: datetime) -> None:
    """Files not written by a commit (checkpoints, _last_checkpoint) get ``when`` too."""
    for p in table.rglob("*"):
        if p.is_file() and p.stat().st_mtime > when.timestamp() + 3600:
            os.utime(p, (when.timestamp(), when.timestamp()))


def plan_candidates(tmp: Path, table: Path, key: Path, *extra_snapshot: str,
                    buffer: str = "7d") -> set[str]:
    snap, inv, plan = tmp / "snap.parquet", tmp / "inv.parquet", tmp / "plan"
    shutil.rmtree(plan, ignore_errors=True)
    ok(run_cli(["snapshot", f"delta://{table}", "-o", str(snap), *extra_snapshot]))
    ok(run_cli(["inventory", str(table), "-o", str(inv), "--trust-mtime"]))
    ok(run_cli(["plan", "--store", str(table), "--inventory", str(inv), "--snapshot",
                str(snap), "-o", str(plan), "--author", "alice", "--key", str(key),
                "--buffer", buffer, "--max-delete-fraction", "1"]))
    rows = duckdb.connect().execute(
        f"SELECT key FROM read_parquet('{plan}/manifest.parquet')").fetchall()
    return {str(r[0]) for r in rows}


def snapshot_keys(path: Path) -> list[str]:
    return [str(k) for k in pq.read_table(path).column("key").to_pylist()]


def is_hidden(key: str) -> bool:
    return any(part.startswith(("_", ".")) for part in key.split("/"))


# --- operations ---------------------------------------------------------------------------

OPS = st.lists(st.sampled_from(["append", "overwrite", "delete", "optimize", "stray"]),
               min_size=2, max_size=6)


def apply_op(table: Path, op: str, i: int) -> None:
    uri = str(table)
    if op == "append" or not (table / "_delta_log").exists():
        write_deltalake(uri, _batch(3, i), mode="append", partition_by=["city"])
    elif op == "overwrite":
        write_deltalake(uri, _batch(2, i), mode="overwrite", partition_by=["city"])
    elif op == "delete":
        DeltaTable(uri).delete(f"v % 2 = {i % 2}")
    elif op == "optimize":
        DeltaTable(uri).optimize.compact()


def build(table: Path, ops: Sequence[str], now: datetime, checkpoint: bool) -> list[Path]:
    """Run ``ops`` (op ``i`` is given the time ``now - (len - i) * 4 days``);
    return the stray files planted."""
    step = timedelta(days=4)
    times = [now - (len(ops) - i) * step for i in range(len(ops))]
    strays: list[Path] = []
    when_of_version: list[datetime] = []
    for i, op in enumerate(ops):
        before = _latest_version(table)
        if op == "stray" and (table / "_delta_log").exists():
            city = CITIES[i % len(CITIES)]
            p = table / f"city={_dir_value(city)}" / f"stray-{i}.parquet"
            strays.append(p)
            plant(p, times[i])
            continue
        apply_op(table, op, i)
        after = _latest_version(table)
        when_of_version.extend([times[i]] * (after - before))
    backdate(table, when_of_version)
    if checkpoint:
        DeltaTable(str(table)).create_checkpoint()
    age_everything(table, times[-1])
    return strays


def _dir_value(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _latest_version(table: Path) -> int:
    log = table / "_delta_log"
    if not log.exists():
        return 0
    return 1 + max((int(p.name[:20]) for p in log.glob("*.json") if p.name[:20].isdigit()),
                   default=-1)


def vacuum_set(table: Path) -> set[str]:
    return set(DeltaTable(str(table)).vacuum(retention_hours=RETENTION_HOURS, dry_run=True,
                                             enforce_retention_duration=False, full=True))


# --- tests --------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS, checkpoint=st.booleans())
def test_plan_equals_vacuum_full_dry_run(tmp_path_factory: pytest.TempPathFactory,
                                         alice_key: Path, ops: list[str],
                                         checkpoint: bool) -> None:
    need_deltalake()
    tmp = tmp_path_factory.mktemp("delta")
    table = tmp / "table"
    now = datetime.now(UTC)
    build(table, ["append", *ops], now, checkpoint)
    old = now - 10 * DAY
    hidden = [table / "_tmp" / "x.parquet", table / ".hidden",
              table / f"city={_dir_value('50%')}" / ".part.crc"]
    for h in hidden:
        plant(h, old)
    ours = plan_candidates(tmp, table, alice_key)
    theirs = vacuum_set(table)
    # VACUUM keeps hidden paths only at the top level; I20 keeps every hidden component.
    assert ours == {k for k in theirs if not is_hidden(k)}, (ops, ours ^ theirs)
    assert not any(is_hidden(k) or k.startswith("_delta_log/") for k in ours)
    # Remove the candidates: the table still loads, and every version inside the
    # retention window still reads, all its files present.
    for rel in ours:
        (table / rel).unlink()
    dt = DeltaTable(str(table))
    assert dt.to_pyarrow_table().num_rows >= 0
    for commit in dt.history():
        if commit["timestamp"] >= _epoch_ms(now - 7 * DAY) + 3_600_000:
            v = DeltaTable(str(table), version=commit["version"])
            assert all(os.path.isfile(uri) for uri in v.file_uris()), commit["version"]
            v.to_pyarrow_table()


def test_percent_encoded_partition_values_round_trip(tmp_path: Path, alice_key: Path) -> None:
    """add.path `city=New%2520York/...` names the object `city=New%20York/...`: decoded once."""
    need_deltalake()
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(len(CITIES), 0), partition_by=["city"])
    snap = tmp_path / "s.parquet"
    ok(run_cli(["snapshot", f"delta://{table}", "-o", str(snap)]))
    keys = set(snapshot_keys(snap))
    on_disk = {str(p) for p in table.rglob("*.parquet")}
    assert keys == on_disk | {f"{table}/_delta_log/"}
    assert any("/city=New%20York/" in k for k in keys)
    assert any("/city=x%20y%25z%3D%C3%A9/" in k for k in keys)
    assert not any("%2520" in k for k in keys)  # decoded exactly once
    meta = pq.read_metadata(snap).metadata
    assert json.loads(meta[b"cleanup.table_roots"]) == [str(table)]
    assert meta[b"cleanup.taken_at_clock"] == b"local:delta-log"
    assert b"version 0 committed" in meta[b"cleanup.source"]
    assert b"retention 7d" in meta[b"cleanup.source"]


def test_recent_removes_of_old_files_are_kept(tmp_path: Path, alice_key: Path) -> None:
    """The issue's incident: old files removed less than the retention ago (a compaction
    yesterday) must stay for time travel, however old the files are; once the removes
    are older than the retention, the files go, as VACUUM says."""
    need_deltalake()
    table = tmp_path / "t"
    now = datetime.now(UTC)
    write_deltalake(str(table), _batch(4, 1), partition_by=["city"])
    write_deltalake(str(table), _batch(4, 2), mode="overwrite", partition_by=["city"])
    backdate(table, [now - 30 * DAY, now - 1 * DAY])
    age_everything(table, now - DAY)
    first = {p for p in DeltaTable(str(table), version=0).file_uris()}
    cands = plan_candidates(tmp_path, table, alice_key, buffer="24h")
    assert cands.isdisjoint({os.path.relpath(u, table) for u in first})
    assert vacuum_set(table) == set()  # delta-rs agrees: nothing to remove yet
    # Ten days later the removes are outside the 7-day window.
    backdate(table, [now - 40 * DAY, now - 10 * DAY])
    age_everything(table, now - 10 * DAY)
    cands = plan_candidates(tmp_path, table, alice_key, buffer="7d")
    assert cands == {os.path.relpath(u, table) for u in first} == vacuum_set(table)
    # A longer --retention keeps them again.
    assert plan_candidates(tmp_path, table, alice_key, "--retention", "14d") == set()


def test_table_retention_property_is_the_default(tmp_path: Path) -> None:
    need_deltalake()
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(2, 1),
                    configuration={"delta.deletedFileRetentionDuration": "interval 3 days"})
    snap = tmp_path / "s.parquet"
    ok(run_cli(["snapshot", f"delta://{table}", "-o", str(snap)]))
    assert b"retention 3d" in pq.read_metadata(snap).metadata[b"cleanup.source"]
    # Below the table's own retention, or below the 24h floor: refused (exit 2).
    r = run_cli(["snapshot", f"delta://{table}", "-o", str(snap), "--retention", "2d"])
    assert_one_line_error(r, 2, "below the table's delta.deletedFileRetentionDuration 3d")
    r = run_cli(["snapshot", f"delta://{table}", "-o", str(snap), "--retention", "5h"])
    assert_one_line_error(r, 2, "below the floor 24h")


def test_commit_after_taken_at_is_not_claimed(tmp_path: Path) -> None:
    """taken_at is read before the log is listed: it is earlier than any commit the
    snapshot does not contain, and the version read is recorded."""
    need_deltalake()
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(2, 1))
    before = datetime.now(UTC)
    snap = tmp_path / "s.parquet"
    out = json.loads(ok(run_cli(["snapshot", f"delta://{table}", "-o", str(snap),
                                 "--json"])).out)
    after = datetime.now(UTC)
    taken = datetime.fromisoformat(out["taken_at"].replace("Z", "+00:00"))
    assert before <= taken <= after
    write_deltalake(str(table), _batch(2, 2), mode="append")
    assert "version 0 committed" in out["source"]
    keys = snapshot_keys(snap)
    newest = DeltaTable(str(table)).file_uris()
    assert len([u for u in newest if u not in keys]) == 1


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    need_deltalake()
    snap = str(tmp_path / "s.parquet")
    r = run_cli(["snapshot", f"delta://{tmp_path / 'missing'}", "-o", snap])
    assert_one_line_error(r, 2, "is not a directory")
    (tmp_path / "empty").mkdir()
    r = run_cli(["snapshot", f"delta://{tmp_path / 'empty'}", "-o", snap])
    assert_one_line_error(r, 2, "is not a Delta table")
    r = run_cli(["snapshot", "delta://gs://bucket/t", "-o", snap])
    assert_one_line_error(r, 2, "gs:// tables are not supported yet")
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(2, 1))
    write_deltalake(str(table), _batch(2, 2), mode="append")
    write_deltalake(str(table), _batch(2, 3), mode="append")
    (table / "_delta_log" / f"{1:020d}.json").unlink()
    r = run_cli(["snapshot", f"delta://{table}", "-o", snap])
    assert_one_line_error(r, 2, "has no commit 1")
    r = run_cli(["snapshot", f"delta://{table}", "-o", snap, "--query", "SELECT 1"])
    assert_one_line_error(r, 2, "--query is for database sources")
    r = run_cli(["snapshot", str(tmp_path / "refs.csv"), "-o", snap, "--retention", "7d",
                 "--taken-at", "2026-01-01T00:00:00Z"])
    assert_one_line_error(r, 2, "--retention is for delta:// sources")
    assert not os.path.exists(snap)


def test_damaged_log_line_is_refused(tmp_path: Path) -> None:
    need_deltalake()
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(2, 1))
    with open(table / "_delta_log" / f"{0:020d}.json", "a") as fh:
        fh.write("{not json\n")
    r = run_cli(["snapshot", f"delta://{table}", "-o", str(tmp_path / "s.parquet")])
    assert_one_line_error(r, 2, "unreadable commit")


def test_deletion_vector_paths() -> None:
    """The Delta protocol's own example: `ab^-aqEH.-t@S}K{vb[*k^` with storage type u is
    `<table>/ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin`."""
    assert z85_decode("HelloWorld") == bytes.fromhex("864FD26FB559F75B")
    ref = dv_reference("/t", {"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^"})
    assert ref == "/t/ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin"
    assert dv_reference("/t", {"storageType": "i", "pathOrInlineDv": "wi5b=000010000"}) is None
    assert dv_reference("/t", {"storageType": "p",
                               "pathOrInlineDv": "file:///t/dv%20x.bin"}) == "/t/dv x.bin"
    assert parse_interval("interval 2 weeks") == 14 * DAY
    assert parse_interval("interval 1 hour") == timedelta(hours=1)


def test_snapshot_timing_small_table(tmp_path: Path) -> None:
    """A 30-commit table snapshots quickly (measured, printed with -s)."""
    need_deltalake()
    table = tmp_path / "t"
    for i in range(30):
        write_deltalake(str(table), _batch(2, i), mode="append" if i else "error",
                        partition_by=["city"])
    t0 = time.perf_counter()
    ok(run_cli(["snapshot", f"delta://{table}", "-o", str(tmp_path / "s.parquet")]))
    elapsed = time.perf_counter() - t0
    print(f"delta snapshot of 30 commits: {elapsed:.3f}s")
    assert len(snapshot_keys(tmp_path / "s.parquet")) == 1 + len(list(table.rglob("*.parquet")))


def test_change_data_files_are_referenced(tmp_path: Path, alice_key: Path) -> None:
    """With the change data feed on, deletes and updates write `_change_data/` files
    (`cdc` actions, percent-encoded like `add.path`): referenced, decoded once, and,
    being under `_` at the table root, never candidates (I20) even when old."""
    need_deltalake()
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(4, 1), partition_by=["city"],
                    configuration={"delta.enableChangeDataFeed": "true"})
    DeltaTable(str(table)).delete("v = 101")
    DeltaTable(str(table)).update({"v": "v + 1000"})
    cdc = {str(p) for p in (table / "_change_data").rglob("*.parquet")}
    assert len(cdc) >= 2
    snap = tmp_path / "s.parquet"
    ok(run_cli(["snapshot", f"delta://{table}", "-o", str(snap)]))
    assert cdc <= set(snapshot_keys(snap))
    age_everything(table, datetime.now(UTC) - 30 * DAY)
    assert plan_candidates(tmp_path, table, alice_key).isdisjoint(
        {os.path.relpath(p, table) for p in cdc})


def test_execute_stage_reconciling_with_the_table(tmp_path: Path, alice_key: Path,
                                                  bob_key: Path) -> None:
    """The whole guarded flow on a Delta table: plan from `delta://`, approve, witness,
    execute with `--reconcile-with delta://` (a fresh read of the log before each batch):
    exactly the expired files and strays go to quarantine, and afterwards the table
    loads and every version inside the retention window still reads."""
    from tests.scenario import Scenario

    need_deltalake()
    table = tmp_path / "t"
    now = datetime.now(UTC)
    build(table, ["append", "overwrite", "append", "delete", "stray", "optimize", "append"],
          now, checkpoint=True)
    sc = Scenario(tmp_path, str(table), signers={"alice": alice_key, "bob": bob_key})
    sc.reconcile_args = ["--reconcile-with", f"delta://{table}"]
    ok(sc.cli(["snapshot", f"delta://{table}", "-o", str(sc.snapshot)]))
    sc.list_store("--trust-mtime")
    internal = ",".join(f"city={_dir_value(c)}" for c in CITIES)
    ok(sc.create_plan("--internal", internal, "--buffer", "7d", "--max-delete-fraction", "1"))
    planned = set(sc.manifest())
    assert planned
    assert planned == vacuum_set(table)
    assert planned == set(sc.manifest(0))  # every partition is an internal tenant
    ok(sc.approve("bob"))
    ok(sc.witness(0, "bob"))
    res = json.loads(ok(sc.execute(0)).out)
    assert res, res
    assert not any((table / k).exists() for k in planned)
    quarantined = {p.name for p in (table / "_cleanup" / "quarantine").rglob("*")
                   if p.is_file()}
    assert {Path(k).name for k in planned} <= quarantined
    dt = DeltaTable(str(table))
    dt.to_pyarrow_table()
    for commit in dt.history():
        if commit["timestamp"] >= _epoch_ms(now - 7 * DAY) + 3_600_000:
            DeltaTable(str(table), version=commit["version"]).to_pyarrow_table()


def test_table_on_s3_reads_like_the_local_copy(tmp_path: Path, moto_server: Any) -> None:
    """The same table uploaded to an S3 server (moto): the references are the local
    copy's, under s3://bucket/prefix/, and taken_at comes from the store's clock (the
    Date of the LIST response, minus its one-second truncation)."""
    need_deltalake()
    table = tmp_path / "t"
    write_deltalake(str(table), _batch(len(CITIES), 1), partition_by=["city"])
    write_deltalake(str(table), _batch(3, 2), mode="overwrite", partition_by=["city"])
    DeltaTable(str(table)).create_checkpoint()
    bucket = moto_server.bucket()
    client = moto_server.client()
    for p in table.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), bucket, f"lake/t/{p.relative_to(table).as_posix()}")
    local_snap, s3_snap = tmp_path / "local.parquet", tmp_path / "s3.parquet"
    ok(run_cli(["snapshot", f"delta://{table}", "-o", str(local_snap)]))
    before = datetime.now(UTC)
    out = json.loads(ok(run_cli(["snapshot", f"delta://s3://{bucket}/lake/t", "-o",
                                 str(s3_snap), "--json"], env=moto_server.env())).out)
    assert out["taken_at_clock"] == "store:s3-date"
    taken = datetime.fromisoformat(out["taken_at"].replace("Z", "+00:00"))
    assert abs(taken - before) < timedelta(minutes=1)
    local_rel = {k[len(str(table)) + 1:] for k in snapshot_keys(local_snap)}
    s3_rel = {k[len(f"s3://{bucket}/lake/t/"):] for k in snapshot_keys(s3_snap)}
    assert s3_rel == local_rel
    assert any(k.startswith("city=New%20York/") for k in s3_rel)
    meta = pq.read_metadata(s3_snap).metadata
    assert json.loads(meta[b"cleanup.table_roots"]) == [f"s3://{bucket}/lake/t"]
    assert b"cleanup.metadata_skew_us" in meta
    # The plan resolves every reference in the bucket (I4) and declares the root (I20).
    inv = tmp_path / "inv.parquet"
    store = f"s3://{bucket}/lake/t/"
    ok(run_cli(["inventory", store, "-o", str(inv)], env=moto_server.env()))
    r = ok(run_cli(["plan", "--store", store, "--inventory", str(inv), "--snapshot",
                    str(s3_snap), "-o", str(tmp_path / "plan"), "--author", "alice",
                    "--key", str(_alice(tmp_path)), "--buffer", "24h"], env=moto_server.env()))
    assert r.code == 0
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    facts = next(c for c in doc["invariants"] if c["invariant"] == "I20 table-metadata")["facts"]
    assert facts["declared_roots"] == 1
    assert doc["references"]["missing"] == 0


def _alice(tmp: Path) -> Path:
    from tests.conftest import make_key

    return make_key(tmp, "alice")


def _versions_inside_retention(table: Path, cutoff: datetime) -> list[int]:
    """Versions every file of which is live now or was removed at or after ``cutoff``
    (read from the log's own `remove` actions): exactly the versions whose files a
    cleanup at that retention must keep."""
    removed_at: dict[str, int] = {}
    for path in sorted((table / "_delta_log").glob("*.json")):
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "remove" in action:
                removed_at[_object_name(action["remove"]["path"])] = \
                    action["remove"]["deletionTimestamp"]
    live = {os.path.relpath(u, table) for u in DeltaTable(str(table)).file_uris()}
    out = []
    for v in range(_latest_version(table)):
        files = {os.path.relpath(u, table) for u in DeltaTable(str(table), version=v).file_uris()}
        if all(f in live or removed_at.get(f, 0) >= _epoch_ms(cutoff) for f in files):
            out.append(v)
    return out


def _rows(dt: Any) -> list[tuple[Any, ...]]:
    t = dt.to_pyarrow_table()
    return sorted(zip(*(t.column(c).to_pylist() for c in sorted(t.column_names)), strict=True))


def _after(t: datetime) -> Callable[[], bool]:
    return lambda: datetime.now(UTC) > t


def test_execute_every_stage_and_purge_keep_the_table_loadable(
        tmp_path: Path, alice_key: Path, bob_key: Path) -> None:
    """Plan a generated Delta table (removes older than the retention, stray files),
    execute it stage by stage under the trust flow (trust root, signed reconciliation
    against `delta://`, a witness of each challenge), wait out a 1 s quarantine
    retention, purge every stage: the quarantine is empty, the candidates are gone for
    good, and the table still loads and every version inside the 10-day retention reads
    the same rows as before."""
    from tests.scenario import Scenario, wait_until

    need_deltalake()
    table = tmp_path / "t"
    now = datetime.now(UTC)
    strays = build(table, ["append", "overwrite", "append", "stray", "delete", "append",
                           "optimize", "stray", "append"], now, checkpoint=True)
    cutoff = now - 10 * DAY
    keep = _versions_inside_retention(table, cutoff)
    assert len(keep) >= 2, keep  # the check below means something
    before = {v: _rows(DeltaTable(str(table), version=v)) for v in keep}
    current = _rows(DeltaTable(str(table)))
    cfg = tmp_path / "cleanup.toml"
    # The default read probe: stage 1's health gate samples the live references, which
    # hold the folder reference `_delta_log/` (not an object: it is not probed as one).
    cfg.write_text('[policy]\nretention = "1s"\n')
    sc = Scenario(tmp_path, str(table), signers={"alice": alice_key, "bob": bob_key})
    sc.reconcile_args = ["--reconcile-with", f"delta://{table}"]
    ok(sc.cli(["snapshot", f"delta://{table}", "-o", str(sc.snapshot), "--retention", "10d"]))
    sc.list_store("--trust-mtime")
    internal = f"city={_dir_value(CITIES[0])}"
    ok(sc.create_plan("--internal", internal, "--stages", "100%", "--hold", "1s",
                      "--override-minimums", "--buffer", "24h", "--config", str(cfg)))
    planned = set(sc.manifest())
    assert {os.path.relpath(s, table) for s in strays} <= planned
    assert planned - {os.path.relpath(s, table) for s in strays}, "no expired file planned"
    assert sc.manifest(0), "stage 0 has candidates"
    assert sc.manifest(1), "stage 1 has candidates"
    doc = sc.read_plan()
    assert [t["root"] for t in doc["tables"]] == [""]
    assert doc["tables"][0]["candidates"] == len(planned)
    ok(sc.approve("bob"))
    for stage in (0, 1):
        if stage:
            st = sc.status()["stages"][0]
            ends = datetime.fromisoformat(st["hold_ends_at"])
            wait_until(_after(ends + timedelta(milliseconds=100)), what="the hold to end")
        ok(sc.witness(stage, "bob"))
        res = json.loads(ok(sc.execute(stage)).out)
        assert res["removed"] == len(sc.manifest(stage))
    assert not any((table / k).exists() for k in planned)
    quarantine = table / "_cleanup" / "quarantine"
    assert sum(1 for p in quarantine.rglob("*") if p.is_file()) >= len(planned)
    for stage in (0, 1):
        finished = datetime.fromisoformat(sc.status()["stages"][stage]["finished_at"])
        wait_until(_after(finished + timedelta(seconds=1.2)), what="the 1s retention to pass")
        ok(sc.witness(stage, "bob", action="purge"))
        r = ok(sc.cli(["purge", str(sc.plan_dir), "--stage", str(stage), "--executor",
                       "alice", "--key", str(alice_key)]))
        assert f"purged {len(sc.manifest(stage))} quarantined objects" in r.out
    assert not [p for p in quarantine.rglob("*") if p.is_file() and
                os.path.relpath(p, quarantine).split("/", 1)[-1] in planned]
    assert not any((table / k).exists() for k in planned)
    assert _rows(DeltaTable(str(table))) == current
    for v in keep:
        dt = DeltaTable(str(table), version=v)
        assert all(os.path.isfile(u) for u in dt.file_uris()), v
        assert _rows(dt) == before[v], v
