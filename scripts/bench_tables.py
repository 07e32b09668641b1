#!/usr/bin/env python3
"""Benchmark the table sources: ``cleanup snapshot delta://`` and ``iceberg://`` on
tables of about a million files, against delta-rs and pyiceberg doing the same reading.

Usage (from the repository root)::

    .venv/bin/python scripts/bench_tables.py                      # 1M + 1M files
    .venv/bin/python scripts/bench_tables.py --delta-files 100000 --iceberg-files 0
    .venv/bin/python scripts/bench_tables.py --workdir /tmp/bt --keep --json out.json

Delta (``--delta-files N``, default 1,000,000): the ``_delta_log/`` is generated
directly, without data files: ``--commits`` JSON commits (protocol and metadata in
the first) add N files ``p=PP/part-IIIIIIIII.parquet`` (100 partitions), all 30
days old; one more commit, 20 days old, removes ``--removed`` of them (10%, beyond
the 7-day retention) and adds a tenth as many compacted files; delta-rs then
writes a checkpoint at that version (``create_checkpoint``), and 3 small commits
follow it. The table's reference set is then the live files plus the log folder.

Measured, each in a fresh process under a wrapper that reads
``getrusage(RUSAGE_CHILDREN)`` (wall time includes interpreter start and imports;
peak RSS is the command's own):

* ``cleanup snapshot delta://T`` (reads ``_last_checkpoint``, the checkpoint and
  the JSON commits, and cross-checks the live files against delta-rs at the same
  version: the delta-rs load is part of its time);
* delta-rs alone loading the table and its file list (``DeltaTable(T).file_uris()``):
  the floor for reading the same log;
* delta-rs ``vacuum(dry_run=True, full=True, retention_hours=168)``. VACUUM lists the
  table's directory, so for this run the data files are created as empty files
  (``--vacuum-files``: how many of the N paths get one; the default is all of them)
  and its answer must be the removed files. Creating them is not measured.

Iceberg (``--iceberg-files M``, default 1,000,000): a SQL catalog on SQLite
(pyiceberg), one table, ``--snapshots`` fast appends of M/S data files each
(``DataFile`` records written into manifests by pyiceberg; no data file exists),
so every snapshot's manifest list names all earlier manifests. Measured:

* ``cleanup snapshot iceberg://bench/db.t``;
* a bare pyiceberg walk of the same metadata: load the table, and for every
  snapshot its manifest list and every manifest not seen before, collecting each
  live entry's path (what ``cleanup`` must at least do).

Both sides must agree on the number of references. Results: a table on stdout,
``--json`` for the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_WRAPPER = r"""
import json, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[3:]
t0 = time.monotonic()
p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": p.returncode, "wall_s": wall, "maxrss_kib": ru.ru_maxrss,
           "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "stdout": p.stdout[-4000:],
           "stderr": p.stderr[-4000:]}, open(out, "w"))
"""

PARTITIONS = 100
DAY_MS = 86_400_000


def measure(name: str, cmd: list[str], work: Path, env: dict[str, str] | None = None
            ) -> dict[str, Any]:
    res = work / ("measure-" + "".join(c if c.isalnum() else "-" for c in name) + ".json")
    subprocess.run([sys.executable, "-c", _WRAPPER, str(res), "--", *cmd], check=False,
                   env=env)
    r: dict[str, Any] = json.loads(res.read_text())
    r["name"] = name
    status = "ok" if r["rc"] == 0 else f"FAILED rc={r['rc']}: {r['stderr'][-500:]}"
    print(f"  {name:28} {r['wall_s']:8.1f} s  {r['maxrss_kib'] / 1024:8.0f} MiB  {status}",
          flush=True)
    return r


# --- Delta -------------------------------------------------------------------------------


def _add(path: str, part: int, ms: int) -> str:
    return json.dumps({"add": {"path": path, "partitionValues": {"p": str(part)},
                               "size": 1000 + len(path), "modificationTime": ms,
                               "dataChange": True}})


def gen_delta(table: Path, n: int, commits: int, removed_frac: float) -> dict[str, Any]:
    """The log of a table of ``n`` files (see the module docstring); no data files."""
    from deltalake import DeltaTable

    log = table / "_delta_log"
    log.mkdir(parents=True)
    now_ms = int(time.time() * 1000)
    old_ms, rm_ms = now_ms - 30 * DAY_MS, now_ms - 20 * DAY_MS
    schema = {"type": "struct", "fields": [
        {"name": "v", "type": "long", "nullable": True, "metadata": {}},
        {"name": "p", "type": "string", "nullable": True, "metadata": {}}]}
    per = -(-n // commits)
    paths: list[str] = []
    version = 0
    for c in range(commits):
        lines = []
        if c == 0:
            lines.append(json.dumps({"protocol": {"minReaderVersion": 1,
                                                  "minWriterVersion": 2}}))
            lines.append(json.dumps({"metaData": {
                "id": str(uuid.uuid4()), "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps(schema), "partitionColumns": ["p"],
                "configuration": {}, "createdTime": old_ms}}))
        for i in range(c * per, min(n, (c + 1) * per)):
            part = i % PARTITIONS
            path = f"p={part}/part-{i:09d}.parquet"
            paths.append(path)
            lines.append(_add(path, part, old_ms))
        lines.append(json.dumps({"commitInfo": {"timestamp": old_ms, "operation": "WRITE"}}))
        (log / f"{version:020d}.json").write_text("\n".join(lines) + "\n")
        version += 1
    n_rm = int(n * removed_frac)
    removed = paths[:n_rm]
    lines = [json.dumps({"remove": {"path": p, "deletionTimestamp": rm_ms, "dataChange": False,
                                    "extendedFileMetadata": False}}) for p in removed]
    compacted = [f"p={i % PARTITIONS}/compacted-{i:09d}.parquet" for i in range(n_rm // 10)]
    lines += [_add(p, i % PARTITIONS, rm_ms) for i, p in enumerate(compacted)]
    lines.append(json.dumps({"commitInfo": {"timestamp": rm_ms, "operation": "OPTIMIZE"}}))
    (log / f"{version:020d}.json").write_text("\n".join(lines) + "\n")
    version += 1
    t0 = time.monotonic()
    DeltaTable(str(table)).create_checkpoint()
    checkpoint_s = time.monotonic() - t0
    late = []
    for k in range(3):
        p = f"p={k}/late-{k:09d}.parquet"
        late.append(p)
        (log / f"{version:020d}.json").write_text(
            _add(p, k, now_ms - DAY_MS) + "\n"
            + json.dumps({"commitInfo": {"timestamp": now_ms - DAY_MS, "operation": "WRITE"}})
            + "\n")
        version += 1
    for f in log.iterdir():  # the log as old as its commits (nothing here is a candidate)
        os.utime(f, (old_ms / 1000, old_ms / 1000))
    live = len(paths) - n_rm + len(compacted) + len(late)
    return {"files_in_log": len(paths) + len(compacted) + len(late), "live": live,
            "removed": n_rm, "versions": version, "checkpoint_s": checkpoint_s,
            "all_paths": [*paths, *compacted, *late]}


def make_files(table: Path, paths: list[str]) -> float:
    """Empty files, 30 days old (VACUUM leaves files younger than the retention alone)."""
    t0 = time.monotonic()
    old = time.time() - 30 * 86400
    for d in range(PARTITIONS):
        (table / f"p={d}").mkdir(exist_ok=True)
    for p in paths:
        fd = os.open(table / p, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.utime(fd, (old, old))
        finally:
            os.close(fd)
    return time.monotonic() - t0


def bench_delta(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    table = work / "delta" / "t"
    print(f"delta: generating the log of {args.delta_files:,} files ...", flush=True)
    t0 = time.monotonic()
    info = gen_delta(table, args.delta_files, args.commits, args.removed)
    paths = info.pop("all_paths")
    info["generate_s"] = time.monotonic() - t0
    print(f"  {info}", flush=True)
    cleanup = str(Path(sys.executable).parent / "cleanup")
    snap = work / "delta-snap.parquet"
    out: dict[str, Any] = {"info": info, "runs": []}
    r = measure("cleanup snapshot delta://", [cleanup, "snapshot", f"delta://{table}", "-o",
                                               str(snap), "--json"], work)
    out["runs"].append(r)
    if r["rc"] == 0:
        import pyarrow.parquet as pq

        rows = pq.read_metadata(snap).num_rows
        out["snapshot_rows"] = rows
        assert rows == info["live"] + 1, (rows, info)  # + the _delta_log/ folder
    r = measure("delta-rs load + file_uris", [sys.executable, "-c",
                "import sys; from deltalake import DeltaTable; "
                "print(len(DeltaTable(sys.argv[1]).file_uris()))", str(table)], work)
    out["runs"].append(r)
    if r["rc"] == 0:
        assert int(r["stdout"].split()[-1]) == info["live"], r["stdout"]
    n_files = len(paths) if args.vacuum_files is None else min(args.vacuum_files, len(paths))
    if n_files:
        print(f"delta: creating {n_files:,} empty data files for VACUUM ...", flush=True)
        out["make_files_s"] = make_files(table, paths[:n_files])
        out["vacuum_files"] = n_files
        r = measure("delta-rs vacuum dry-run full", [sys.executable, "-c",
                    "import sys; from deltalake import DeltaTable; "
                    "print(len(DeltaTable(sys.argv[1]).vacuum(retention_hours=168, "
                    "dry_run=True, enforce_retention_duration=False, full=True)))",
                    str(table)], work)
        out["runs"].append(r)
        if r["rc"] == 0:
            out["vacuum_candidates"] = int(r["stdout"].split()[-1])
            if n_files == len(paths):
                assert out["vacuum_candidates"] == info["removed"], out
    return out


# --- Iceberg -----------------------------------------------------------------------------

_WALK = r"""
import sys
from pyiceberg.catalog import load_catalog
cat = load_catalog("bench")
t = cat.load_table(("db", "t"))
refs = {t.metadata_location, *(e.metadata_file for e in t.metadata.metadata_log)}
seen = set()
for s in t.metadata.snapshots:
    refs.add(s.manifest_list)
    for m in s.manifests(t.io):
        if m.manifest_path in seen:
            continue
        seen.add(m.manifest_path)
        refs.add(m.manifest_path)
        for e in m.fetch_manifest_entry(t.io, discard_deleted=True):
            refs.add(e.data_file.file_path)
print(len(refs))
"""


def gen_iceberg(root: Path, n: int, snapshots: int) -> dict[str, Any]:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.schema import Schema
    from pyiceberg.typedef import Record
    from pyiceberg.types import LongType, NestedField

    root.mkdir(parents=True)
    cat = SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db",
                     warehouse=f"file://{root}/warehouse")
    cat.create_namespace("db")
    table = cat.create_table("db.t", Schema(NestedField(1, "v", LongType(), required=False)))
    per = -(-n // snapshots)
    for s in range(snapshots):
        files = [DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=f"{table.location()}/data/s{s:03d}/f-{i:09d}.parquet",
            file_format=FileFormat.PARQUET, partition=Record(), record_count=1,
            file_size_in_bytes=1000, column_sizes={}, value_counts={}, null_value_counts={},
            nan_value_counts={}, lower_bounds={}, upper_bounds={}, split_offsets=[],
            sort_order_id=None, spec_id=0) for i in range(s * per, min(n, (s + 1) * per))]
        with table.transaction() as tx, tx.update_snapshot().fast_append() as fa:
            for f in files:
                fa.append_data_file(f)
        table = cat.load_table("db.t")
    meta = table.metadata
    manifests = {m.manifest_path for s in meta.snapshots for m in s.manifests(table.io)}
    return {"data_files": n, "snapshots": len(meta.snapshots), "manifests": len(manifests),
            "metadata_files": 1 + len(meta.metadata_log),
            "expected_refs": n + len(manifests) + len(meta.snapshots) + 1
            + len(meta.metadata_log)}


def bench_iceberg(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = work / "iceberg"
    print(f"iceberg: generating {args.iceberg_files:,} data files in {args.snapshots} "
          "snapshots ...", flush=True)
    t0 = time.monotonic()
    info = gen_iceberg(root, args.iceberg_files, args.snapshots)
    info["generate_s"] = time.monotonic() - t0
    print(f"  {info}", flush=True)
    env = {**os.environ, "PYICEBERG_CATALOG__BENCH__URI": f"sqlite:///{root}/catalog.db",
           "PYICEBERG_CATALOG__BENCH__WAREHOUSE": f"file://{root}/warehouse",
           "PYICEBERG_CATALOG__BENCH__TYPE": "sql"}
    env.pop("PYICEBERG_HOME", None)
    cleanup = str(Path(sys.executable).parent / "cleanup")
    snap = work / "iceberg-snap.parquet"
    out: dict[str, Any] = {"info": info, "runs": []}
    r = measure("cleanup snapshot iceberg://", [cleanup, "snapshot", "iceberg://bench/db.t",
                                                 "-o", str(snap), "--json"], work, env)
    out["runs"].append(r)
    if r["rc"] == 0:
        import pyarrow.parquet as pq

        out["snapshot_rows"] = pq.read_metadata(snap).num_rows
    r = measure("bare pyiceberg walk", [sys.executable, "-c", _WALK], work, env)
    out["runs"].append(r)
    if r["rc"] == 0:
        out["walk_refs"] = int(r["stdout"].split()[-1])
        if "snapshot_rows" in out:
            assert out["walk_refs"] == out["snapshot_rows"], out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delta-files", type=int, default=1_000_000)
    ap.add_argument("--commits", type=int, default=20)
    ap.add_argument("--removed", type=float, default=0.10)
    ap.add_argument("--vacuum-files", type=int, default=None,
                    help="empty data files created for VACUUM [default: all]; 0: no VACUUM")
    ap.add_argument("--iceberg-files", type=int, default=1_000_000)
    ap.add_argument("--snapshots", type=int, default=10)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-tables-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB,"
                   f" Python {platform.python_version()}",
        "argv": sys.argv[1:]}
    try:
        import deltalake
        import pyiceberg

        result["versions"] = {"deltalake": deltalake.__version__,
                              "pyiceberg": pyiceberg.__version__}
        if args.delta_files:
            result["delta"] = bench_delta(args, work)
        if args.iceberg_files:
            result["iceberg"] = bench_iceberg(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for part in ("delta", "iceberg"):
        for r in result.get(part, {}).get("runs", []):
            r.pop("stdout", None)
            if r["rc"] == 0:
                r.pop("stderr", None)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("delta", "iceberg")}))


if __name__ == "__main__":
    main()
