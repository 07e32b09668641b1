"""Copy verification throughput (issues 17 and 18): cleanup's verifier (cleanup.retire)
with checksum comparison, with ``--checksum listed`` and with --verify-content, against
`rclone check` and `rclone check --download`, on the same two buckets of one server, in
the same run: moto_server (objects with CRC32 or SHA256 additional checksums, buckets in
two regions) and rclone serve s3 (MD5 ETags only).

Each tool runs as its own process and does the whole job: list the source, find each
object's copy in the target, compare. cleanup's verifier lists the source (the raw
ListObjectsV2 reader `cleanup inventory` uses), or reads the inventory made beforehand
as `cleanup plan --retire-to` does; it lists the target 1,000 keys a page and compares
what the listings decide; where both objects name a stronger checksum (SHA256) it HEADs
both (ChecksumMode=ENABLED) on a thread pool, unless --checksum listed; with
--verify-content it GETs and hashes both. rclone check lists both buckets and compares
sizes and MD5 ETags (--download: reads both). Every tool must report all objects
matching. Throughput is objects/s and MB/s of source data (median wall time of --repeat
runs, process start included: use enough objects that it does not dominate).

Usage: python scripts/bench_retire.py [--objects 2000] [--size 32768] [--repeat 3]
       [--workers 16] [--servers moto,rclone] [--json out.json]
       python scripts/bench_retire.py --worker SRC_URL DST_URL [--content] [--listed]
       (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BIN = Path(sys.executable).parent


def worker(src: str, dst: str, content: bool, workers: int, inventory: str | None,
           listed: bool = False) -> None:
    """List ``src`` (or read its ``inventory``, as `cleanup plan` does), verify every
    object's copy in ``dst``; print counts as JSON."""
    from collections.abc import Iterator

    from cleanup.retire import Verifier, iter_verdicts
    from cleanup.stores import open_store

    source, target = open_store(src), open_store(dst)
    v = Verifier(source, target, verify_content=content, workers=workers, listed=listed)

    def items() -> Iterator[tuple[str, int, str | None]]:
        if inventory is None:
            # the listing `cleanup inventory` makes (S3: raw pages, split across folders)
            fast = getattr(source, "listing_batches", None)
            if fast is None:
                yield from ((o.key, o.size, o.etag) for o in source.iter_objects())
                return
            for b in fast():
                d = b.select(["key", "size", "etag"]).to_pydict()
                yield from zip(d["key"], d["size"], d["etag"], strict=True)
            return
        import pyarrow.parquet as pq

        for b in pq.ParquetFile(inventory).iter_batches(columns=["key", "size", "etag"]):
            d = b.to_pydict()
            yield from zip(d["key"], d["size"], d["etag"], strict=True)

    n = ok = size = 0
    for verdict in iter_verdicts(v, items()):
        n += 1
        ok += verdict.ok
        size += verdict.size
    print(json.dumps({"objects": n, "verified": ok, "bytes": size}))


def _fill(server: object, src: str, dst: str, n: int, size: int, algo: str) -> None:
    """The same objects PUT into both buckets, with ``algo`` as additional checksum."""
    c = server.client()  # type: ignore[attr-defined]

    def put(i: int) -> None:
        body = (f"object {i:08d} ".encode() * (size // 16 + 1))[:size]
        for bucket in (src, dst):
            c.put_object(Bucket=bucket, Key=f"data/part-{i:08d}.bin", Body=body,
                         ChecksumAlgorithm=algo)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} exited {p.returncode}: {p.stderr[-800:]}")
    return wall, p.stdout + p.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=int, default=32 * 1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--worker", nargs=2, metavar=("SRC", "DST"))
    ap.add_argument("--content", action="store_true")
    ap.add_argument("--listed", action="store_true", help="--checksum listed")
    ap.add_argument("--servers", default="moto,rclone")
    ap.add_argument("--inventory")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.content, args.workers, args.inventory,
               args.listed)
        return
    from tests.servers import start_moto, start_rclone

    rows: list[dict[str, object]] = []
    servers = args.servers.split(",")
    if "moto" in servers:
        with start_moto() as server:
            for algo in ("CRC32", "SHA256"):
                rows += _bench(server, algo, args)
    if "rclone" in servers:  # stores no additional checksums: MD5 ETags only
        with start_rclone(Path(tempfile.mkdtemp(prefix="bench-retire-rclone-"))) as server:
            rows += _bench(server, "CRC32", args)
    print(f"{'server':7} {'checksums':10} {'tool':40} {'objects':>8} {'wall s':>8} "
          f"{'objects/s':>10} {'MB/s':>8}")
    for r in rows:
        print(f"{r['server']!s:7} {r['checksums']!s:10} {r['tool']!s:40} {r['objects']!s:>8} "
              f"{r['wall_s']!s:>8} {r['objects_per_s']!s:>10} {r['mb_per_s']!s:>8}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


def _bench(server: Any, algo: str, args: argparse.Namespace) -> list[dict[str, object]]:
    """Both buckets filled with ``algo`` checksums (CRC32: MD5 ETags are the strongest
    both sides have, compared from listings; SHA256: compared by HeadObject)."""
    rows: list[dict[str, object]] = []
    regional = server.name == "moto"  # rclone serve s3 has one region
    src = server.bucket("eu-west-1" if regional else None)
    dst = server.bucket("eu-central-1" if regional else None)
    _fill(server, src, dst, args.objects, args.size, algo)
    env = {**os.environ, **server.env(), "RCLONE_CONFIG": "/dev/null"}
    remote = (f":s3,provider=Other,endpoint='{server.endpoint_url}',"
              f"access_key_id={server.access_key},secret_access_key={server.secret_key}:")
    me = [sys.executable, __file__, "--workers", str(args.workers), "--worker",
          f"s3://{src}/data/", f"s3://{dst}/data/"]
    # What `cleanup plan --retire-to` verifies from: the source's inventory (made
    # beforehand, not timed).
    inv = Path(tempfile.mkdtemp(prefix="bench-retire-")) / "inv.parquet"
    subprocess.run([str(BIN / "cleanup"), "inventory", f"s3://{src}/data/", "-o", str(inv)],
                   env=env, check=True, capture_output=True)
    rclone = [str(BIN / "rclone"), "check", f"{remote}{src}/data/", f"{remote}{dst}/data/",
              "--checkers", str(args.workers)]
    tools = {"cleanup verify, lists source": me,
             "cleanup verify, from inventory": [*me, "--inventory", str(inv)],
             "cleanup verify --checksum listed": [*me, "--listed", "--inventory",
                                                  str(inv)],
             "cleanup verify --verify-content": [*me, "--content", "--inventory", str(inv)],
             "rclone check": rclone,
             "rclone check --download": [*rclone, "--download"]}
    total = args.objects * args.size
    for name, cmd in tools.items():
        walls = []
        for _ in range(args.repeat):
            wall, out = _run(cmd, env)
            if name.startswith("cleanup"):
                doc = json.loads(out.strip().splitlines()[-1])
                if doc["verified"] != args.objects:
                    raise SystemExit(f"{name}: {doc}")
            elif f"{args.objects} matching files" not in out:
                raise SystemExit(f"{name}: {out[-500:]}")
            walls.append(wall)
        w = statistics.median(walls)
        rows.append({"server": server.name, "checksums": algo, "tool": name,
                     "objects": args.objects,
                     "object_size": args.size, "wall_s": round(w, 3),
                     "objects_per_s": round(args.objects / w),
                     "mb_per_s": round(total / w / 1e6, 1)})
    return rows


if __name__ == "__main__":
    main()
