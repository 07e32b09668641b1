"""Time `cleanup review` on a plan with N candidates (default 10M) against a bare DuckDB
aggregate over the same manifest, in the same run.

The plan is synthetic but well-formed: a demo plan's plan.json, with a generated
manifest of N candidates (~2,000 tenants, 3 stages) and its sha256, counts and
times written back. Usage: .venv/bin/python scripts/bench_review.py [--objects N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cleanup.core.canonical import canonical_json, sha256_file  # noqa: E402
from cleanup.demo import run as run_demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=10_000_000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-review-"))
    work.mkdir(parents=True, exist_ok=True)
    demo = run_demo(work / "demo", lambda s: None)
    plan_dir = Path(demo["plan"])
    manifest = plan_dir / "manifest.parquet"
    t0 = time.perf_counter()
    duckdb.connect().execute(
        f"COPY (SELECT 'tenant-' || lpad((i % 2000)::VARCHAR, 4, '0') || '/tbl/part-' || "
        f"lpad(i::VARCHAR, 9, '0') || '.parquet' AS key, (i * 7919) % 100000000 AS size, "
        f"TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_seconds((i * 31) % 30000000) "
        f"AS last_modified, md5(i::VARCHAR) AS etag, "
        f"'tenant-' || lpad((i % 2000)::VARCHAR, 4, '0') AS tenant, (i % 3)::INTEGER AS stage "
        f"FROM range({args.objects}) t(i) ORDER BY stage, key) TO '{manifest}' "
        f"(FORMAT parquet, COMPRESSION zstd)")
    gen = time.perf_counter() - t0
    plan = json.loads((plan_dir / "plan.json").read_text())
    row = duckdb.connect().execute(
        f"SELECT count(*), sum(size), strftime(min(last_modified), '%Y-%m-%dT%H:%M:%SZ'), "
        f"strftime(max(last_modified), '%Y-%m-%dT%H:%M:%SZ') FROM '{manifest}'").fetchone()
    assert row is not None
    plan["manifest"].update({"sha256": sha256_file(str(manifest)), "objects": int(row[0]),
                             "bytes": int(row[1]), "oldest_last_modified": row[2],
                             "newest_last_modified": row[3]})
    plan["cutoff"]["time"] = "2026-01-01T00:00:00Z"
    (plan_dir / "plan.json").write_bytes(canonical_json(plan))

    t0 = time.perf_counter()
    duckdb.connect().execute(
        f"SELECT tenant, stage, count(*), sum(size) FROM '{manifest}' GROUP BY ALL").fetchall()
    base = time.perf_counter() - t0
    exe = str(Path(sys.executable).parent / "cleanup")
    t0 = time.perf_counter()
    subprocess.run([exe, "review", str(plan_dir), "--html", str(work / "report.html")],
                   check=True, capture_output=True)
    review = time.perf_counter() - t0
    size = (work / "report.html").stat().st_size
    print(f"manifest: {args.objects:,} candidates generated in {gen:.1f}s")
    print(f"bare DuckDB per-tenant aggregate: {base:.2f}s")
    print(f"cleanup review:                  {review:.2f}s ({review / base:.1f}x), "
          f"report {size / 1024:.0f} KiB")
    if review > 30:
        sys.exit("cleanup review took more than 30 s")


if __name__ == "__main__":
    main()
