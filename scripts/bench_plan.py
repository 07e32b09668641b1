#!/usr/bin/env python3
"""Benchmark ``cleanup plan`` against a bare DuckDB anti-join of the same inputs.

Usage (from the repository root)::

    .venv/bin/python scripts/bench_plan.py --objects 1000000
    .venv/bin/python scripts/bench_plan.py --workdir /tmp/bench-plan/10m --keep --json out.json
    .venv/bin/python scripts/bench_plan.py --workdir /tmp/bench-plan/10m --reuse --profile
    .venv/bin/python scripts/bench_plan.py --engine duckdb --engine spark \
        --spark-master 'local[2]' --spark-conf spark.driver.memory=4g   # both, one run

Steps:

1. Generate, with DuckDB SQL only (out of core, no Python loop over rows), in the
   work directory: an empty local store ``store/``, ``inventory.parquet`` and
   ``snapshot.parquet`` in the formats of ``cleanup/formats.py`` (key-value
   metadata written by ``COPY ... (KV_METADATA {...})`` and checked with pyarrow),
   and an ed25519 SSH key ``key`` for signing.
2. Baseline: a fresh ``python -c`` process runs the bare anti-join
   (``inventory ANTI JOIN snapshot WHERE last_modified + 1s <= cutoff``) into
   ``baseline.parquet`` with the same memory limit and threads as ``cleanup plan``.
3. ``cleanup plan ... --json`` as a subprocess; its exit status must be 0 and its
   manifest must hold exactly the baseline's keys.
4. A table of wall time and peak RSS, the ratio cleanup/baseline, optional JSON.

Measuring: every measured command runs under a tiny wrapper process
(``python -c _WRAPPER``) that starts the command, waits for it and then reads
``getrusage(RUSAGE_CHILDREN)``. In a fresh wrapper that figure covers only the
measured command and its own descendants (``ru_maxrss`` is the peak RSS of the
largest of them, e.g. the DuckDB process, not of ssh-keygen), so nothing the
benchmark itself did earlier (generation, an earlier run) leaks into it. Wall
time is taken by the wrapper around the child, so it includes the interpreter's
start and imports for both sides but not the wrapper's own start.

Data: N keys ``tenant-TTTT/table-NN/part-IIIIIIIII.parquet`` (200 tenants of 16
tables, generated already in byte order as a listing returns them), sizes
uniform in [1 KiB, 64 MiB], ``last_modified`` whole seconds uniform over the 400
days before ``cutoff + 6h`` (so ~0.06% of objects are too new, and the boundary
is exercised), etag ``md5(key)``, version_id NULL. The snapshot references the
keys with ``hash(key) % 10000 < fraction * 10000`` and is taken 2 days before
now, so ``cutoff = taken_at - 24h`` is 3 days before now. With the default 0.95
about 5% of objects and bytes are candidates, under the I5 limit of 10%.

``--profile`` also runs the planner's own :class:`cleanup.engine.Engine` (the
real code, not a copy of its SQL) in a measured child with every
``connection.execute`` timed, and prints each query's time and the process's
RSS / peak RSS after it, plus the planner's other work (input hashing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

TENANTS = 200
TABLES_PER_TENANT = 16
SPAN = timedelta(days=400)
NEWEST_AFTER_CUTOFF = timedelta(hours=6)
TAKEN_AGO = timedelta(days=2)
BUFFER = timedelta(hours=24)  # the planner's default buffer (policy min_buffer)
PRECISION_US = 1_000_000  # S3-style whole-second listing
GEN_MEMORY_LIMIT = "4GB"

# Runs argv[3:], then writes wall time and the children's rusage to argv[1] as JSON.
_WRAPPER = r"""
import json, os, resource, subprocess, sys, threading, time
out, cmd = sys.argv[1], sys.argv[3:]
page = os.sysconf("SC_PAGE_SIZE")
tick = os.sysconf("SC_CLK_TCK")
peak = {"tree_rss": 0, "cpu": {}}
done = threading.Event()
def sample(root):
    # Every 0.1 s: the RSS summed over the command's process tree (Spark's JVM is a
    # grandchild that getrusage never sees once it is orphaned), and each process's CPU.
    while not done.is_set():
        kids, stats = {}, {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as fh:
                        f = fh.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                kids.setdefault(int(f[1]), []).append(int(d))
                stats[int(d)] = (int(f[21]) * page, (int(f[11]) + int(f[12])) / tick)
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += kids.get(pid, [])
        rss = sum(stats[p][0] for p in tree if p in stats)
        peak["tree_rss"] = max(peak["tree_rss"], rss)
        for p in tree:
            if p in stats:
                peak["cpu"][p] = stats[p][1]
        done.wait(0.1)
t0 = time.perf_counter()
proc = subprocess.Popen(cmd)
th = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
th.start()
rc = proc.wait()
wall = time.perf_counter() - t0
done.set()
th.join()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as fh:
    json.dump({"rc": rc, "wall_s": wall, "maxrss_kib": ru.ru_maxrss,
               "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
               "tree_peak_rss_kib": peak["tree_rss"] // 1024,
               "tree_cpu_s": sum(peak["cpu"].values())}, fh)
sys.exit(rc)
"""

# The baseline: a bare anti-join; argv: inv snap cutoff out memory_limit spill_dir threads.
_BASELINE = r"""
import json, sys
import duckdb
inv, snap, cutoff, out, mem, spill, threads = sys.argv[1:8]
q = lambda s: "'" + s.replace("'", "''") + "'"
con = duckdb.connect()
con.execute(f"SET memory_limit = {q(mem)}")
con.execute("SET preserve_insertion_order = false")
con.execute("SET TimeZone = 'UTC'")
con.execute(f"SET temp_directory = {q(spill)}")
if int(threads):
    con.execute(f"SET threads = {int(threads)}")
row = con.execute(
    f"COPY (SELECT i.* FROM read_parquet({q(inv)}) i ANTI JOIN read_parquet({q(snap)}) s "
    f"ON i.key = s.key WHERE i.last_modified + INTERVAL 1 SECOND <= {q(cutoff)}::TIMESTAMPTZ) "
    f"TO {q(out)} (FORMAT parquet)").fetchone()
print(json.dumps({"rows": int(row[0])}))
"""


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def kv_literal(meta: dict[str, str]) -> str:
    """A DuckDB struct literal for ``COPY ... (KV_METADATA {...})``."""
    return "{" + ", ".join(f"{sql_literal(k)}: {sql_literal(v)}" for k, v in meta.items()) + "}"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duck_ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass
class Measured:
    """One measured subprocess run."""

    name: str
    rc: int
    wall_s: float
    maxrss_kib: int
    user_s: float
    sys_s: float
    stdout: str = ""
    stderr: str = ""
    tree_peak_rss_kib: int = 0  # sampled every 0.1 s, summed over the process tree
    tree_cpu_s: float = 0.0  # sampled: includes processes getrusage does not see (a JVM)

    @property
    def maxrss_mib(self) -> float:
        return self.maxrss_kib / 1024

    @property
    def tree_rss_mib(self) -> float:
        return self.tree_peak_rss_kib / 1024


@dataclass
class Generated:
    workdir: str
    objects: int
    referenced: int
    taken_at: str
    cutoff: str
    listed_at: str
    inventory_bytes: int
    snapshot_bytes: int
    inventory_s: float = 0.0
    snapshot_s: float = 0.0
    key_s: float = 0.0
    reused: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def measure(name: str, cmd: list[str], cwd: Path, logdir: Path) -> Measured:
    """Run ``cmd`` under the rusage wrapper; keep its stdout/stderr in ``logdir``."""
    logdir.mkdir(parents=True, exist_ok=True)
    res_path = logdir / f"{name}.rusage.json"
    out_path, err_path = logdir / f"{name}.stdout", logdir / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        subprocess.run([sys.executable, "-c", _WRAPPER, str(res_path), "--", *cmd],
                       cwd=cwd, stdout=out, stderr=err, check=False)
    try:
        r = json.loads(res_path.read_text())
    except (OSError, ValueError):
        r = {"rc": -1, "wall_s": float("nan"), "maxrss_kib": 0, "user_s": 0.0, "sys_s": 0.0}
    return Measured(name, int(r["rc"]), float(r["wall_s"]), int(r["maxrss_kib"]),
                    float(r["user_s"]), float(r["sys_s"]),
                    out_path.read_text(errors="replace"), err_path.read_text(errors="replace"),
                    int(r.get("tree_peak_rss_kib", 0)), float(r.get("tree_cpu_s", 0.0)))


# ---------------------------------------------------------------------------- generation


def _check_written(path: Path, kind: str, expected: dict[str, str]) -> None:
    """The file must carry exactly the expected ``cleanup.*`` metadata and the format's schema."""
    import pyarrow.parquet as pq

    from cleanup.formats import inventory_schema, read_meta, snapshot_schema

    meta = read_meta(str(path))
    want = {k.removeprefix("cleanup."): v for k, v in expected.items()}
    if meta != want:
        raise SystemExit(f"{path}: metadata {meta} != expected {want}")
    raw_keys = set((pq.read_metadata(str(path)).metadata or {}).keys())
    missing = {k.encode() for k in expected} - raw_keys
    if missing:
        raise SystemExit(f"{path}: key-value metadata lacks {sorted(missing)}")
    schema = pq.read_schema(str(path))
    ref = inventory_schema() if kind == "inventory" else snapshot_schema()
    got = [(f.name, f.type) for f in schema]
    exp = [(f.name, f.type) for f in ref]
    if got != exp:
        raise SystemExit(f"{path}: schema {got} != format {exp}")


def _reusable(workdir: Path, objects: int, fraction: float) -> Generated | None:
    from cleanup.formats import read_meta

    inv, snap = workdir / "inventory.parquet", workdir / "snapshot.parquet"
    listed_at = _inventory_reusable(inv, objects, (workdir / "store").resolve())
    if listed_at is None or not (snap.is_file() and (workdir / "key").is_file()):
        return None
    sm = read_meta(str(snap))
    if sm.get("source") != f"bench:fraction={fraction}":
        return None
    taken = datetime.fromisoformat(sm["taken_at"].replace("Z", "+00:00"))
    return Generated(str(workdir), objects, int(sm["rows"]), sm["taken_at"],
                     iso(taken - BUFFER), iso(listed_at), inv.stat().st_size,
                     snap.stat().st_size, reused=True)


def _inventory_reusable(inv: Path, objects: int, store: Path) -> datetime | None:
    """The listed_at of an inventory an earlier run wrote for these settings, else None."""
    from cleanup.formats import read_meta

    if not inv.is_file():
        return None
    try:
        im = read_meta(str(inv))
    except Exception:  # noqa: BLE001 - a partial file from a killed run: write it again
        return None
    if im.get("rows") != str(objects) or im.get("store") != str(store):
        return None
    return datetime.fromisoformat(im["listed_at"].replace("Z", "+00:00"))


def generate(workdir: Path, objects: int, fraction: float, created: list[Path]) -> Generated:
    import duckdb

    store = (workdir / "store").resolve()
    store.mkdir(parents=True, exist_ok=True)
    created.append(store)
    inv, snap, key = workdir / "inventory.parquet", workdir / "snapshot.parquet", workdir / "key"

    now = datetime.now(UTC).replace(microsecond=0)
    taken_at = now - TAKEN_AGO
    cutoff = taken_at - BUFFER
    newest = cutoff + NEWEST_AFTER_CUTOFF  # the fixed time ~3 days before now
    listed_at = newest + timedelta(minutes=5)
    keep_inv = _inventory_reusable(inv, objects, store)
    if keep_inv is not None:  # an earlier run wrote it (its snapshot step failed): its times
        listed_at = keep_inv
        newest = listed_at - timedelta(minutes=5)
        cutoff = newest - NEWEST_AFTER_CUTOFF
        taken_at = cutoff + BUFFER
    end_us = int(newest.timestamp()) * 1_000_000
    span_s = int(SPAN.total_seconds())
    threshold = round(fraction * 10_000)

    con = duckdb.connect()
    con.execute(f"SET memory_limit = {sql_literal(GEN_MEMORY_LIMIT)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = {sql_literal(str(workdir / 'gen.spill'))}")
    created.append(workdir / "gen.spill")
    try:
        inv_meta = {
            "cleanup.kind": "inventory",
            "cleanup.store": str(store),
            "cleanup.listed_at": iso(listed_at),
            "cleanup.listed_at_clock": "local",
            "cleanup.precision_us": str(PRECISION_US),
            "cleanup.source": "listing",
            "cleanup.time_source": "s3-last-modified",
            "cleanup.rows": str(objects),
        }
        # Keys come out in byte order (fixed-width, monotone in i), as a listing returns them.
        key_sql = (f"printf('tenant-%04d/table-%02d/part-%09d.parquet', "
                   f"(i * {TENANTS}) // {objects}, "
                   f"((i * {TENANTS * TABLES_PER_TENANT}) // {objects}) % {TABLES_PER_TENANT}, i)")
        t0 = time.perf_counter()
        if keep_inv is None:
            created.append(inv)
            con.execute(
                f"COPY (SELECT key, size, last_modified, md5(key) AS etag, "
                f"NULL::VARCHAR AS version_id, NULL::BLOB AS key_raw FROM ("
                f"SELECT {key_sql} AS key, "
                f"(1024 + hash(i, 'size') % {64 << 20})::BIGINT AS size, "
                f"make_timestamp({end_us}::BIGINT - "
                f"(hash(i, 'mtime') % {span_s})::BIGINT * 1000000)::TIMESTAMPTZ AS last_modified "
                f"FROM range({objects}) t(i))) "
                f"TO {sql_literal(str(inv))} (FORMAT parquet, COMPRESSION zstd, "
                f"KV_METADATA {kv_literal(inv_meta)})"
            )
        inv_s = time.perf_counter() - t0
        _check_written(inv, "inventory", inv_meta)

        t0 = time.perf_counter()
        ref_where = f"hash(key) % 10000 < {threshold}"
        row = con.execute(
            f"SELECT count(*) FROM read_parquet({sql_literal(str(inv))}) WHERE {ref_where}"
        ).fetchone()
        assert row is not None
        referenced = int(row[0])
        snap_meta = {
            "cleanup.kind": "snapshot",
            "cleanup.source": f"bench:fraction={fraction}",
            "cleanup.taken_at": iso(taken_at),
            "cleanup.taken_at_clock": "claimed",
            "cleanup.rows": str(referenced),
            # Not the real digest of the keys: the planner records it but does not recompute it.
            "cleanup.digest": "sha256:" + "0" * 63 + "1",
        }
        created.append(snap)
        con.execute(
            # Keys are unique and in byte order in the inventory, and DuckDB keeps a scan's
            # order by default: no DISTINCT or sort (at 1B rows they ran out of memory).
            f"COPY (SELECT key FROM read_parquet({sql_literal(str(inv))}) "
            f"WHERE {ref_where}) "
            f"TO {sql_literal(str(snap))} (FORMAT parquet, COMPRESSION zstd, "
            f"KV_METADATA {kv_literal(snap_meta)})"
        )
        snap_s = time.perf_counter() - t0
        _check_written(snap, "snapshot", snap_meta)
    finally:
        con.close()
        shutil.rmtree(workdir / "gen.spill", ignore_errors=True)

    t0 = time.perf_counter()
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    created += [key, key.with_suffix(".pub")]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)],
                   check=True)
    key_s = time.perf_counter() - t0
    return Generated(str(workdir), objects, referenced, iso(taken_at), iso(cutoff),
                     iso(listed_at), inv.stat().st_size, snap.stat().st_size,
                     inv_s, snap_s, key_s)


# ---------------------------------------------------------------------------- engine profile


class TimedConnection:
    """Wraps a DuckDB connection; records each ``execute`` with its time and RSS after it."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.records: list[dict[str, Any]] = []

    def execute(self, sql: str, *args: Any) -> Any:
        t0 = time.perf_counter()
        res = self._con.execute(sql, *args)
        dt = time.perf_counter() - t0
        self.records.append({"sql": " ".join(sql.split()), "seconds": dt, **_proc_mem()})
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _proc_mem() -> dict[str, float]:
    """Current and peak RSS of this process in MiB (Linux /proc; rusage elsewhere)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out["rss_mib" if name == "VmRSS" else "peak_rss_mib"] = int(rest.split()[0]) / 1024
    except OSError:
        import resource

        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def profile_child(spec_path: str) -> None:
    """Run the planner's Engine on the bench inputs with every query timed (child process)."""
    from cleanup.core.canonical import sha256_file
    from cleanup.core.paths import parse_store
    from cleanup.core.stages import (
        DEFAULT_TENANT_PATTERN,
        assign_stage,
        compile_tenant_pattern,
        parse_stages,
    )
    from cleanup.engine import Engine, EngineInput
    from cleanup.formats import read_meta

    spec = json.loads(Path(spec_path).read_text())
    inv, snap = spec["inventory"], spec["snapshot"]
    inv_meta, snap_meta = read_meta(inv), read_meta(snap)
    taken_at = datetime.fromisoformat(snap_meta["taken_at"].replace("Z", "+00:00"))
    steps: list[dict[str, Any]] = []

    def step(name: str, t0: float) -> None:
        steps.append({"sql": name, "seconds": time.perf_counter() - t0, **_proc_mem()})

    spill = Path(spec["spill"])
    engine = Engine(EngineInput(
        inventory=inv, snapshot=snap, store=parse_store(inv_meta["store"]),
        cutoff=taken_at - BUFFER,
        precision=timedelta(microseconds=int(inv_meta["precision_us"])),
        tenant_pattern=DEFAULT_TENANT_PATTERN,
        tenant_group=compile_tenant_pattern(DEFAULT_TENANT_PATTERN),
        memory_limit=spec["memory_limit"], temp_dir=str(spill)))
    timed = TimedConnection(engine.con)
    engine.con = cast(Any, timed)  # duck-typed: Engine only calls execute/register
    try:
        t_all = time.perf_counter()
        res = engine.compute()
        compute_s = time.perf_counter() - t_all
        stages = parse_stages("10%,100%")
        stage_of = {t: assign_stage(t, frozenset(), stages) for t in res.tenants}
        t0 = time.perf_counter()
        engine.write_manifest(stage_of, spec["manifest"])
        manifest_s = time.perf_counter() - t0
    finally:
        engine.close()
        shutil.rmtree(spill, ignore_errors=True)
    for path in (inv, snap, spec["manifest"]):
        t0 = time.perf_counter()
        sha256_file(path)
        step(f"[python] sha256_file({Path(path).name})", t0)
    print(json.dumps({"queries": timed.records, "other": steps, "compute_s": compute_s,
                      "write_manifest_s": manifest_s, "candidates": res.candidates}))


def run_profile(args: argparse.Namespace, workdir: Path, logdir: Path,
                created: list[Path]) -> dict[str, Any]:
    spec = {"inventory": str(workdir / "inventory.parquet"),
            "snapshot": str(workdir / "snapshot.parquet"),
            "manifest": str(workdir / "profile-manifest.parquet"),
            "spill": str(workdir / "profile.spill"), "memory_limit": args.memory_limit}
    spec_path = workdir / "profile-spec.json"
    spec_path.write_text(json.dumps(spec))
    created += [spec_path, workdir / "profile-manifest.parquet"]
    m = measure("profile", [sys.executable, str(Path(__file__).resolve()),
                            "--profile-child", str(spec_path)], workdir, logdir)
    if m.rc != 0:
        raise SystemExit(f"profile child failed (exit {m.rc}):\n{m.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(m.stdout.strip().splitlines()[-1])
    data["wall_s"], data["maxrss_mib"] = m.wall_s, m.maxrss_mib
    print(f"\nEngine profile (real cleanup.engine.Engine, each con.execute timed; "
          f"child wall {m.wall_s:.2f}s, peak RSS {m.maxrss_mib:.0f} MiB)")
    print(f"{'#':>2} {'seconds':>8} {'RSS MiB':>8} {'peak MiB':>8}  query")
    total = 0.0
    for i, r in enumerate(data["queries"] + data["other"], 1):
        total += r["seconds"]
        sql = r["sql"] if len(r["sql"]) <= 110 else r["sql"][:107] + "..."
        print(f"{i:>2} {r['seconds']:>8.2f} {r.get('rss_mib', 0):>8.0f} "
              f"{r.get('peak_rss_mib', 0):>8.0f}  {sql}")
    print(f"   {total:>8.2f} total timed (compute {data['compute_s']:.2f}s, "
          f"write_manifest {data['write_manifest_s']:.2f}s)")
    return data


# ---------------------------------------------------------------------------- main


def row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(str(path)).num_rows)


def compare_sets(baseline: Path, manifest: Path) -> dict[str, int]:
    """Keys and bytes in one result but not the other (should all be 0)."""
    import duckdb

    b, m = sql_literal(str(baseline)), sql_literal(str(manifest))
    con = duckdb.connect()
    try:
        row = con.execute(
            f"SELECT (SELECT count(*) FROM (SELECT key FROM read_parquet({b}) "
            f"EXCEPT SELECT key FROM read_parquet({m}))), "
            f"(SELECT count(*) FROM (SELECT key FROM read_parquet({m}) "
            f"EXCEPT SELECT key FROM read_parquet({b}))), "
            f"(SELECT coalesce(sum(size), 0) FROM read_parquet({b}))::BIGINT, "
            f"(SELECT coalesce(sum(size), 0) FROM read_parquet({m}))::BIGINT"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return {"only_in_baseline": int(row[0]), "only_in_manifest": int(row[1]),
            "baseline_bytes": int(row[2]), "manifest_bytes": int(row[3])}


def engine_args(args: argparse.Namespace, engine: str) -> list[str]:
    """The `cleanup plan` options that select ``engine``."""
    if engine == "duckdb":
        return []  # the default: also how an older cleanup (no --engine) is measured
    out = ["--engine", "spark", "--spark-master", args.spark_master]
    for kv in args.spark_conf:
        out += ["--spark-conf", kv]
    return out


def compare_engines(args: argparse.Namespace, runs: dict[str, list[Measured]],
                    dirs: dict[str, list[Path]], b_wall: float, b_rss: float,
                    problems: list[str]) -> dict[str, Any]:
    """Per engine: median wall, max peak RSS, ratio to the baseline; every engine's
    manifest must be byte-identical to the first engine's (same sha256, so the same
    plan id for the same inputs and clock)."""
    import hashlib

    out: dict[str, Any] = {}
    first = args.engines[0]
    ref_sha = hashlib.sha256((dirs[first][-1] / "manifest.parquet").read_bytes()).hexdigest()
    print(f"\n{'engine':16} {'wall s':>9} {'tree CPU s':>11} {'tree RSS MiB':>13} "
          f"{'vs baseline':>12} {'vs ' + first:>12}  manifest sha256")
    first_wall = statistics.median(m.wall_s for m in runs[first])
    for engine, ms in runs.items():
        wall = statistics.median(m.wall_s for m in ms)
        cpu = statistics.median(m.tree_cpu_s for m in ms)
        rss = max(m.tree_rss_mib for m in ms)
        sha = hashlib.sha256((dirs[engine][-1] / "manifest.parquet").read_bytes()).hexdigest()
        objects = json.loads(ms[-1].stdout).get("objects")
        if sha != ref_sha:
            problems.append(f"manifest of --engine {engine} differs from --engine {first}")
        print(f"{engine:16} {wall:>9.2f} {cpu:>11.2f} {rss:>13.0f} {wall / b_wall:>11.2f}x "
              f"{wall / first_wall:>11.2f}x  {sha[:16]}...")
        out[engine] = {"wall_s": wall, "tree_cpu_s": cpu, "tree_peak_rss_mib": rss,
                       "ratio_to_baseline": wall / b_wall, f"ratio_to_{first}": wall / first_wall,
                       "manifest_sha256": sha, "objects": objects}
    print(f"{'baseline':16} {b_wall:>9.2f} {'':>11} {b_rss:>13.0f} {1:>11.2f}x   "
          "(baseline RSS: its ru_maxrss; tree RSS: sampled sum over the process tree)")
    return out


def default_cleanup() -> str:
    beside = Path(sys.executable).parent / "cleanup"
    return str(beside) if beside.exists() else (shutil.which("cleanup") or "cleanup")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `cleanup plan` against a bare DuckDB anti-join.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--objects", type=int, default=10_000_000, help="inventory rows")
    p.add_argument("--referenced-fraction", type=float, default=0.95,
                   help="fraction of inventory keys the snapshot references")
    p.add_argument("--workdir", type=Path, default=None,
                   help="work directory (default: a new temp dir under /tmp)")
    p.add_argument("--keep", action="store_true",
                   help="keep what this run wrote (a temp workdir is removed otherwise)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse inventory/snapshot/key in --workdir if they match --objects "
                        "and --referenced-fraction")
    p.add_argument("--memory-limit", default="1GB", help="passed to cleanup plan and baseline")
    p.add_argument("--threads", type=int, default=0,
                   help="baseline DuckDB threads (0: DuckDB's default, as cleanup plan uses)")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure baseline and cleanup this many times (alternating); "
                        "the table shows the median wall time and the max peak RSS")
    p.add_argument("--profile", action="store_true",
                   help="also time each query of cleanup.engine.Engine in a measured child")
    p.add_argument("--cleanup", default=default_cleanup(), help="the cleanup executable")
    p.add_argument("--json", dest="json_out", type=Path, default=None,
                   help="also write the results as JSON here")
    p.add_argument("--engine", dest="engines", action="append", choices=["duckdb", "spark"],
                   help="engine(s) of `cleanup plan` to measure, in this order; repeat for "
                        "several in one run [default: duckdb]")
    p.add_argument("--spark-master", default="local[2]", help="for --engine spark")
    p.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="for --engine spark (repeatable), e.g. spark.driver.memory=4g")
    p.add_argument("--profile-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.engines = list(dict.fromkeys(args.engines or ["duckdb"]))
    if args.objects < TENANTS * TABLES_PER_TENANT:
        p.error(f"--objects must be at least {TENANTS * TABLES_PER_TENANT}")
    if not 0.9 <= args.referenced_fraction < 1.0:
        p.error("--referenced-fraction must be in [0.9, 1): candidates must stay under the "
                "planner's I5 limit of 10% and must not be empty")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile_child:
        profile_child(args.profile_child)
        return 0

    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-plan-", dir="/tmp")) if temp else args.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    try:
        return run(args, workdir, created)
    finally:
        if not args.keep:
            if temp:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                for p in reversed(created):
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
        else:
            print(f"\nkept {workdir}")


def run(args: argparse.Namespace, workdir: Path, created: list[Path]) -> int:
    logdir = workdir / "logs"
    if not logdir.exists():
        created.append(logdir)
    print(f"workdir {workdir}; objects {args.objects:,}; referenced fraction "
          f"{args.referenced_fraction}; memory limit {args.memory_limit}; cpus {os.cpu_count()}")

    gen = _reusable(workdir, args.objects, args.referenced_fraction) if args.reuse else None
    if gen is None:
        t0 = time.perf_counter()
        gen = generate(workdir, args.objects, args.referenced_fraction, created)
        gen.timings["total_s"] = time.perf_counter() - t0
        os.sync()  # flush the new files' dirty pages so writeback does not overlap a measurement
        print(f"generated in {gen.timings['total_s']:.1f}s (inventory {gen.inventory_s:.1f}s, "
              f"{human_bytes(gen.inventory_bytes)}; snapshot {gen.snapshot_s:.1f}s, "
              f"{gen.referenced:,} keys, {human_bytes(gen.snapshot_bytes)}; "
              f"key {gen.key_s:.1f}s)")
    else:
        print(f"reusing inputs in {workdir} ({gen.referenced:,} referenced keys)")
    print(f"snapshot taken_at {gen.taken_at}, cutoff {gen.cutoff} (taken_at - 24h)")

    inv, snap = workdir / "inventory.parquet", workdir / "snapshot.parquet"
    baselines: list[Measured] = []
    engine_runs: dict[str, list[Measured]] = {e: [] for e in args.engines}
    engine_dirs: dict[str, list[Path]] = {e: [] for e in args.engines}
    cleanups, plan_dirs = engine_runs[args.engines[0]], engine_dirs[args.engines[0]]
    baseline_out = workdir / "baseline.parquet"
    created.append(baseline_out)
    for rep in range(args.repeat):
        spill = workdir / "baseline.spill"
        created.append(spill)
        baseline_out.unlink(missing_ok=True)
        b = measure(f"baseline-{rep + 1}",
                    [sys.executable, "-c", _BASELINE, str(inv), str(snap),
                     gen.cutoff.replace("T", " ").replace("Z", "+00"), str(baseline_out),
                     args.memory_limit, str(spill), str(args.threads)], workdir, logdir)
        shutil.rmtree(spill, ignore_errors=True)
        if b.rc != 0:
            print(b.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"baseline failed (exit {b.rc})")
        baselines.append(b)

        for engine in args.engines:
            n = 1
            while (workdir / f"plan-{n}").exists():
                n += 1
            plan_dir = workdir / f"plan-{n}"
            created.append(plan_dir)
            c = measure(f"cleanup-{engine}-{rep + 1}",
                        [args.cleanup, "plan", "--store", "store", "--inventory",
                         "inventory.parquet", "--snapshot", "snapshot.parquet", "-o",
                         plan_dir.name, "--author", "bench", "--key", "key", "--memory-limit",
                         args.memory_limit, "--json", *engine_args(args, engine)],
                        workdir, logdir)
            if c.rc != 0:
                print(c.stdout[-3000:], c.stderr[-3000:], sep="\n", file=sys.stderr)
                raise SystemExit(f"cleanup plan --engine {engine} failed (exit {c.rc})")
            engine_runs[engine].append(c)
            engine_dirs[engine].append(plan_dir)
            print(f"run {rep + 1}: baseline {b.wall_s:.2f}s {b.maxrss_mib:.0f} MiB; "
                  f"cleanup plan --engine {engine} {c.wall_s:.2f}s {c.maxrss_mib:.0f} MiB")

    # Correctness: the plan's manifest is exactly the baseline's set.
    baseline_rows = json.loads(baselines[-1].stdout.strip().splitlines()[-1])["rows"]
    plan_json = json.loads(cleanups[-1].stdout)
    manifest = plan_dirs[-1] / "manifest.parquet"
    manifest_rows = row_count(manifest)
    diff = compare_sets(baseline_out, manifest)
    problems = []
    if row_count(baseline_out) != baseline_rows:
        problems.append(f"baseline.parquet has {row_count(baseline_out)} rows, COPY said "
                        f"{baseline_rows}")
    if manifest_rows != baseline_rows:
        problems.append(f"manifest rows {manifest_rows} != baseline rows {baseline_rows}")
    if plan_json.get("objects") != manifest_rows:
        problems.append(f"plan --json objects {plan_json.get('objects')} != manifest rows "
                        f"{manifest_rows}")
    if diff["only_in_baseline"] or diff["only_in_manifest"]:
        problems.append(f"key sets differ: {diff}")
    if diff["baseline_bytes"] != diff["manifest_bytes"] or plan_json.get("bytes") != diff[
            "manifest_bytes"]:
        problems.append(f"bytes differ: {diff}, plan --json bytes {plan_json.get('bytes')}")
    if plan_json.get("cutoff") != gen.cutoff:
        problems.append(f"plan cutoff {plan_json.get('cutoff')} != expected {gen.cutoff}")

    b_wall = statistics.median(m.wall_s for m in baselines)
    c_wall = statistics.median(m.wall_s for m in cleanups)
    b_rss = max(m.maxrss_mib for m in baselines)
    c_rss = max(m.maxrss_mib for m in cleanups)
    ratio = c_wall / b_wall
    rss_ok = c_rss < 2048
    ratio_ok = ratio <= 2.0

    agg = "median of " + str(args.repeat) if args.repeat > 1 else "1 run"
    print(f"\n{'':16} {'wall s':>9} {'CPU s':>9} {'peak RSS MiB':>13} {'rows':>12}   ({agg})")
    if not gen.reused:
        print(f"{'generate':16} {gen.timings['total_s']:>9.2f} {'':>9} {'':>13} "
              f"{args.objects:>12,}")
    for label, ms, wall, rss, rows in (("baseline", baselines, b_wall, b_rss, baseline_rows),
                                       ("cleanup plan", cleanups, c_wall, c_rss, manifest_rows)):
        cpu = statistics.median(m.user_s + m.sys_s for m in ms)
        print(f"{label:16} {wall:>9.2f} {cpu:>9.2f} {rss:>13.0f} {rows:>12,}")
    print(f"\nratio cleanup/baseline wall time: {ratio:.2f}x (target <= 2.0: "
          f"{'ok' if ratio_ok else 'MISSED'})")
    print(f"cleanup plan peak RSS: {c_rss:.0f} MiB (target < 2048 MiB: "
          f"{'ok' if rss_ok else 'MISSED'}); baseline peak RSS {b_rss:.0f} MiB "
          f"({c_rss / b_rss:.2f}x)")
    print(f"candidates {manifest_rows:,} of {args.objects:,} "
          f"({manifest_rows / args.objects:.2%}); same set as baseline: "
          f"{'yes' if not problems else 'NO'}")
    engines_summary = compare_engines(args, engine_runs, engine_dirs, b_wall, b_rss, problems)
    for prob in problems:
        print(f"PROBLEM: {prob}", file=sys.stderr)

    profile = run_profile(args, workdir, logdir, created) if args.profile else None

    if args.json_out:
        result = {
            "objects": args.objects, "referenced_fraction": args.referenced_fraction,
            "memory_limit": args.memory_limit, "cpus": os.cpu_count(),
            "generation": asdict(gen),
            "baseline": [asdict(m) | {"stdout": m.stdout[-2000:], "stderr": m.stderr[-2000:]}
                         for m in baselines],
            "cleanup": [asdict(m) | {"stdout": m.stdout[-2000:], "stderr": m.stderr[-2000:]}
                        for m in cleanups],
            "summary": {"baseline_wall_s": b_wall, "cleanup_wall_s": c_wall,
                        "wall_ratio": ratio, "baseline_peak_rss_mib": b_rss,
                        "cleanup_peak_rss_mib": c_rss, "baseline_rows": baseline_rows,
                        "manifest_rows": manifest_rows, "set_diff": diff,
                        "problems": problems, "ratio_ok": ratio_ok, "rss_ok": rss_ok},
            "profile": profile,
            "plan_json": plan_json,
            "engines": engines_summary,
            "engine_runs": {e: [asdict(m) | {"stdout": m.stdout[-2000:],
                                             "stderr": m.stderr[-2000:]} for m in ms]
                            for e, ms in engine_runs.items()},
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
