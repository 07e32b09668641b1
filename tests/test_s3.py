"""S3 end to end against real servers on 127.0.0.1 (moto_server, rclone serve s3):
listing, S3 Inventory reports, planning, region binding and guarded execution."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote_plus

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.formats import read_meta
from tests import faultcli
from tests.conftest import Run, assert_one_line_error, make_key
from tests.conftest import run_cli as run_process
from tests.faultproxy import fault_proxy
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.scenario import Scenario, ok, wait_until
from tests.servers import S3Server

pytestmark = pytest.mark.s3

KEYS = ["t1/a.parquet", "t1/b c.parquet", "t2/ü.parquet", "t2/x+y.parquet", "t3/p%41.bin"]


def _put(server: S3Server, bucket: str, keys: list[str], prefix: str = "data/") -> None:
    """PUT every key (8 at a time: both servers answer concurrent requests)."""
    from concurrent.futures import ThreadPoolExecutor

    c = server.client()

    def put(k: str) -> None:
        c.put_object(Bucket=bucket, Key=prefix + k, Body=f"content of {k}".encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


def test_inventory_lists_s3_store(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    _put(s3_server, bucket, KEYS)
    _put(s3_server, bucket, ["_cleanup/lock", "_cleanup/audit/000000000001.json"])
    _put(s3_server, bucket, ["outside.txt"], prefix="other/")
    out = tmp_path / "inv.parquet"
    r = run_cli(["inventory", f"s3://{bucket}/data/", "-o", str(out), "--json"],
                env=s3_server.env())
    assert r.code == 0, r.err
    t = pq.read_table(out)
    rows = dict(zip(t.column("key").to_pylist(), t.column("size").to_pylist(), strict=True))
    assert rows == {k: len(f"content of {k}".encode()) for k in KEYS}
    etags = t.column("etag").to_pylist()
    assert all(e and '"' not in e for e in etags)
    assert etags[0] == hashlib.md5(f"content of {t.column('key')[0]}".encode()).hexdigest()  # noqa: S324
    meta = read_meta(str(out))
    assert meta["precision_us"] == "1000000"
    assert meta["store"] == f"s3://{bucket}/data/"


def test_inventory_paginates(moto_server: S3Server, tmp_path: Path) -> None:
    bucket = moto_server.bucket()
    _put(moto_server, bucket, [f"t/{i:05d}" for i in range(1205)])
    r = run_cli(["inventory", f"s3://{bucket}/data/", "-o", str(tmp_path / "i.parquet")],
                env=moto_server.env())
    assert r.code == 0, r.err
    assert pq.read_metadata(tmp_path / "i.parquet").num_rows == 1205


def test_inventory_missing_bucket_is_a_usage_error(s3_server: S3Server, tmp_path: Path) -> None:
    r = run_cli(["inventory", "s3://no-such-bucket-here/", "-o", str(tmp_path / "i.parquet")],
                env=s3_server.env())
    assert_one_line_error(r, 2, "does not exist")


def test_s3_inventory_report_from_the_server(s3_server: S3Server, tmp_path: Path) -> None:
    """A CSV S3 Inventory report stored in a destination bucket, read through boto3."""
    c = s3_server.client()
    src, dest = s3_server.bucket(), s3_server.bucket()
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL)
    for k in KEYS:
        w.writerow([src, quote_plus("data/" + k, safe="/"), "12", "2026-05-01T00:00:00.000Z",
                    "abc"])
    w.writerow([src, quote_plus("data/_cleanup/lock", safe="/"), "1",
                "2026-05-01T00:00:00.000Z", "x"])
    data = gzip.compress(buf.getvalue().encode())
    data_key = f"inv/{src}/cfg/data/part-0.csv.gz"
    c.put_object(Bucket=dest, Key=data_key, Body=data)
    manifest = {"sourceBucket": src, "destinationBucket": f"arn:aws:s3:::{dest}",
                "version": "2016-11-30", "creationTimestamp": "1778000000000",
                "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
                "files": [{"key": data_key, "size": len(data),
                           "MD5checksum": hashlib.md5(data).hexdigest()}]}  # noqa: S324
    c.put_object(Bucket=dest, Key=f"inv/{src}/cfg/2026-05-05T00-00Z/manifest.json",
                 Body=json.dumps(manifest).encode())
    out = tmp_path / "inv.parquet"
    r = run_cli(["inventory", f"s3://{src}/data/", "--s3-inventory",
                 f"s3://{dest}/inv/{src}/cfg/2026-05-05T00-00Z/manifest.json", "-o", str(out)],
                env=s3_server.env())
    assert r.code == 0, r.err
    assert sorted(pq.read_table(out).column("key").to_pylist()) == sorted(KEYS)
    assert read_meta(str(out))["listed_at_clock"] == "s3-inventory"


class S3Flow(Scenario):
    """Objects in an S3 bucket, planned with a short (overridden) buffer, approved."""

    BUFFER = timedelta(seconds=1)

    def __init__(self, server: S3Server, tmp: Path, keys_dir: Path, *plan_extra: str,
                 region: str | None = None, versioning: bool = False,
                 plan: bool = True, internal_orphans: int = 1) -> None:
        bucket = server.bucket(region)
        env = server.env()
        if region:
            env["AWS_DEFAULT_REGION"] = region
        super().__init__(tmp, f"s3://{bucket}/data/", env=env, signers={
            "alice": make_key(keys_dir, "alice"), "bob": make_key(keys_dir, "bob")})
        self.server, self.bucket = server, bucket
        self.client = server.client(region)
        if versioning:
            self.client.put_bucket_versioning(Bucket=self.bucket,
                                              VersioningConfiguration={"Status": "Enabled"})
        self.store = self.store_url
        self.keys = [f"internal/t/{i}.parquet" for i in range(3)] + [
            f"acme/t/{i}.parquet" for i in range(30)]
        _put(server, self.bucket, self.keys)
        self.orphans = [f"internal/t/{i}.parquet" for i in range(internal_orphans)] + [
            "acme/t/0.parquet"]
        self.refs = self.refs_file
        self.alice, self.bob = self.signer_key("alice"), self.signer_key("bob")
        if plan:
            self.plan_result = self.make_plan(*plan_extra)

    def wait_until_old_enough(self) -> None:
        """Poll until every object is older than taken_at - buffer + precision (1 s), by
        the objects' own LastModified: no fixed sleep."""
        newest = max(o["LastModified"] for page in self.client.get_paginator(
            "list_objects_v2").paginate(Bucket=self.bucket) for o in page.get("Contents", []))
        ready = newest + self.BUFFER + timedelta(seconds=1, milliseconds=50)
        wait_until(lambda: datetime.now(UTC) >= ready, timeout=60,
                   what="the objects to be older than the cutoff")

    def make_plan(self, *extra: str) -> Run:
        self.wait_until_old_enough()
        self.list_store()
        self.snapshot_refs(f"s3a://{self.bucket}/data/{k}" for k in self.keys
                           if k not in self.orphans)
        return self.create_plan("--buffer", "1s", "--override-minimums", "--internal",
                                "internal", "--stages", "100%", "--max-delete-fraction", "0.2",
                                *extra)

    def execute(self, *extra: str, env: Mapping[str, str] | None = None,  # type: ignore[override]
                ) -> Run:
        return super().execute(0, *extra, env=env)

    def listing(self) -> dict[str, str]:
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["ETag"]
        return out


def test_plan_on_s3_records_region_and_probes_clock(moto_server: S3Server, tmp_path: Path,
                                                    keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir, region="eu-west-1")
    ok(f.plan_result)
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["region"] == "eu-west-1"
    assert plan["manifest"]["objects"] == 2
    assert plan["clocks"]["store"] in ("0us", "0s") or plan["clocks"]["store"].endswith("ms")
    assert [k for k in f.listing() if "/_cleanup/clock/" in k] == ["data/_cleanup/clock/probe"]


def test_plan_refuses_wrong_region(moto_server: S3Server, tmp_path: Path,
                                   keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir, "--region", "us-west-2", region="eu-west-1")
    assert_one_line_error(f.plan_result, 3, "I13 residency", "eu-west-1")


@pytest.mark.parametrize("mode", ["copy", "none"])
def test_execute_on_moto(moto_server: S3Server, tmp_path: Path, keys_dir: Path,
                         mode: str) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir, "--quarantine", mode)
    ok(f.plan_result)
    f.approve_and_witness()
    before = f.listing()
    res = json.loads(ok(f.execute()).out)
    assert res["removed"] == 1  # stage 0: the internal orphan
    after = f.listing()
    gone = {k for k in before if k not in after}
    assert gone == {"data/internal/t/0.parquet"}
    quarantined = [k for k in after if "/_cleanup/quarantine/" in k]
    assert len(quarantined) == (1 if mode == "copy" else 0)
    if mode == "copy":
        counts = json.loads(ok(run_cli(["restore", str(tmp_path / "plan"), "--json"],
                                       env=f.env)).out)
        assert counts["restored"] == 1
        assert f.listing()["data/internal/t/0.parquet"] == before["data/internal/t/0.parquet"]


def test_execute_versioning_mode_on_moto(moto_server: S3Server, tmp_path: Path,
                                         keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir, "--quarantine", "versioning", versioning=True)
    ok(f.plan_result)
    f.approve_and_witness()
    res = json.loads(ok(f.execute()).out)
    assert res["removed"] == 1
    assert "data/internal/t/0.parquet" not in f.listing()
    journal = (tmp_path / "plan" / "journal" / "stage-0.jsonl").read_text()
    assert "markers" in journal
    counts = json.loads(ok(run_cli(["restore", str(tmp_path / "plan"), "--json"],
                                   env=f.env)).out)
    assert counts == {"restored": 1}
    body = f.client.get_object(Bucket=f.bucket, Key="data/internal/t/0.parquet")["Body"].read()
    assert body == b"content of internal/t/0.parquet"


def test_versioning_mode_refuses_suspended_bucket(moto_server: S3Server, tmp_path: Path,
                                                  keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir, "--quarantine", "versioning", versioning=True)
    ok(f.plan_result)
    f.client.put_bucket_versioning(Bucket=f.bucket,
                                   VersioningConfiguration={"Status": "Suspended"})
    f.approve_and_witness()
    assert_one_line_error(f.execute(), 3, "I11 recoverable", "Suspended")


def test_execute_refuses_bucket_moved_to_another_region(moto_server: S3Server, tmp_path: Path,
                                                        keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir)
    ok(f.plan_result)
    f.approve_and_witness()
    # The bucket is re-created under the same name in another region.
    for k in f.listing():
        f.client.delete_object(Bucket=f.bucket, Key=k)
    f.client.delete_bucket(Bucket=f.bucket)
    eu = moto_server.client("eu-west-1")
    eu.create_bucket(Bucket=f.bucket,
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    _put(moto_server, f.bucket, f.keys)
    assert_one_line_error(f.execute(), 3, "I13 residency", "eu-west-1")


def test_rclone_lock_probe_refuses_unsafe_store(rclone_server: S3Server, tmp_path: Path,
                                                keys_dir: Path) -> None:
    """rclone serve s3 ignores If-None-Match: execution is refused (I12) unless the plan
    records unsafe_store_without_conditional_writes."""
    f = S3Flow(rclone_server, tmp_path, keys_dir)
    ok(f.plan_result)
    f.approve_and_witness()
    assert_one_line_error(f.execute(), 3, "I12 exclusive", "ignores conditional creates")
    assert not [k for k in f.listing() if "_cleanup/quarantine" in k]


def test_rclone_execute_with_recorded_unsafe_store(rclone_server: S3Server, tmp_path: Path,
                                                   keys_dir: Path) -> None:
    f = S3Flow(rclone_server, tmp_path, keys_dir, "--unsafe-store-without-conditional-writes")
    ok(f.plan_result)
    show = ok(run_cli(["show", str(tmp_path / "plan")]))
    assert show.out.index("unsafe_store_without_conditional_writes") < show.out.index(
        "invariants")
    f.approve_and_witness()
    res = json.loads(ok(f.execute()).out)
    assert res["removed"] == 1
    assert "data/internal/t/0.parquet" not in f.listing()


def test_moto_lock_excludes_a_second_executor(moto_server: S3Server, tmp_path: Path,
                                              keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir)
    ok(f.plan_result)
    f.approve_and_witness()
    holder = {"executor": "carol", "plan_id": "x", "host": "elsewhere", "pid": 1, "token": "t",
              "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}
    f.client.put_object(Bucket=f.bucket, Key="data/_cleanup/lock",
                        Body=json.dumps(holder).encode())
    assert_one_line_error(f.execute(), 6, "locked by carol")


def test_faults_slow_down_but_lose_nothing(moto_server: S3Server, tmp_path: Path,
                                           keys_dir: Path) -> None:
    """503 SlowDown and dropped connections on writes: every planned object ends up in
    quarantine exactly once, every other object is untouched."""
    f = S3Flow(moto_server, tmp_path, keys_dir, "--stages", "100%")
    # Real processes: a run that fails mid-way through the proxy may not get its lock
    # released; the next process sees the holder gone and resumes (this one would not).
    f.run = run_process
    ok(f.plan_result)
    f.approve_and_witness()
    before = f.listing()
    with fault_proxy(moto_server.endpoint_url, slowdown=0.3, drop=0.1, seed=7) as proxy:
        env = {**f.env, "AWS_ENDPOINT_URL": proxy.endpoint_url}
        r = f.execute("--batch-size", "1", env=env)
        for _ in range(5):  # a dropped response may surface as an error: resume until done
            if r.code == 0:
                break
            r = f.execute("--batch-size", "1", env=env)
    ok(r)
    assert proxy.stats.slowdowns > 0
    after = f.listing()
    assert {k for k in before if k not in after} == {"data/internal/t/0.parquet"}
    for k, etag in after.items():
        if "/_cleanup/" not in k:
            assert before[k] == etag
    q = [k for k in after if "/_cleanup/quarantine/" in k]
    assert len(q) == 1


def test_s3_status_and_audit(moto_server: S3Server, tmp_path: Path, keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir)
    ok(f.plan_result)
    f.approve_and_witness()
    ok(f.execute())
    st = json.loads(ok(run_cli(["status", str(tmp_path / "plan"), "--json"])).out)
    assert st["stages"][0]["state"] == "complete"
    r = ok(run_cli(["audit", "verify", f.store, "--json"], env=f.env))
    events = json.loads(r.out)
    assert events["ok"] is True
    assert events["entries"] >= 5  # plan, approval, witness, stage-start, stage-end


def test_help_runs_without_s3_libraries() -> None:
    p = subprocess.run([sys.executable, "-c", "import cleanup.stores.s3_inventory, sys; "
                        "print('boto3' in sys.modules)"], capture_output=True, text=True,
                       check=True)
    assert p.stdout.strip() == "False"
    assert duckdb is not None


def test_s3_reconciliation_halt_and_rewritten_object(s3_server: S3Server, tmp_path: Path,
                                                    keys_dir: Path) -> None:
    """On both servers: a live reference halts before the batch is touched (exit 5); in a
    new plan, an object rewritten after the inventory is skipped, never removed."""
    f = S3Flow(s3_server, tmp_path, keys_dir, "--stages", "100%",
               *(["--unsafe-store-without-conditional-writes"]
                 if s3_server.name == "rclone" else []))
    ok(f.plan_result)
    f.approve_and_witness()
    before = f.listing()
    refs = f.refs.read_text().splitlines()[1:]
    f.snapshot_live([*refs, f"s3://{f.bucket}/data/internal/t/0.parquet"])
    r = f.execute()
    assert_one_line_error(r, 5, "I9 reconcile", "internal/t/0.parquet")

    def data(listing: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in listing.items() if "/_cleanup/" not in k}

    assert data(f.listing()) == data(before)  # only the audit log and records grew
    # The halt is the store's record: removing the local journal does not lift it (I10).
    shutil.rmtree(tmp_path / "plan" / "journal")
    f.snapshot_live(refs)
    f.witness()
    assert_one_line_error(f.execute(), 3, "halted")
    # A new plan; then rewritten after its inventory: same key, new content -> skipped.
    f.plan_dir = tmp_path / "plan2"
    ok(f.make_plan(*(["--unsafe-store-without-conditional-writes"]
                     if s3_server.name == "rclone" else [])))
    f.approve_and_witness()
    f.client.put_object(Bucket=f.bucket, Key="data/internal/t/0.parquet", Body=b"rewritten")
    res = json.loads(ok(f.execute()).out)
    assert res["skipped"] == {"changed": 1}
    assert res["removed"] == 0
    body = f.client.get_object(Bucket=f.bucket, Key="data/internal/t/0.parquet")["Body"].read()
    assert body == b"rewritten"


def test_restore_round_trips_bytes_and_metadata(moto_server: S3Server, tmp_path: Path,
                                                keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir)
    key = "data/internal/t/0.parquet"
    f.client.copy_object(Bucket=f.bucket, Key=key, CopySource={"Bucket": f.bucket, "Key": key},
                         Metadata={"owner": "acme", "schema": "v3"}, ContentType="x/parquet",
                         MetadataDirective="REPLACE")
    shutil.rmtree(tmp_path / "plan")
    f.plan_result = f.make_plan()
    ok(f.plan_result)
    f.approve_and_witness()
    head = f.client.head_object(Bucket=f.bucket, Key=key)
    body = f.client.get_object(Bucket=f.bucket, Key=key)["Body"].read()
    ok(f.execute())
    assert key not in f.listing()
    ok(run_cli(["restore", str(tmp_path / "plan"), "--key", "internal/t/0.parquet"], env=f.env))
    again = f.client.head_object(Bucket=f.bucket, Key=key)
    assert again["Metadata"] == head["Metadata"] == {"owner": "acme", "schema": "v3"}
    assert again["ContentType"] == "x/parquet"
    assert f.client.get_object(Bucket=f.bucket, Key=key)["Body"].read() == body


@pytest.mark.parametrize(("batch", "kill_at"), [(1, 1), (1, 3), (2, 2), (3, 1)])
def test_kill_between_quarantine_copy_and_delete_then_resume(
        moto_server: S3Server, tmp_path: Path, keys_dir: Path, batch: int,
        kill_at: int) -> None:
    """SIGKILL in the Nth quarantine call after its copies exist and before the originals
    are deleted (every such point of the stage), then the same command: each planned object
    ends in quarantine exactly once with its original content, nothing else is touched."""
    f = S3Flow(moto_server, tmp_path, keys_dir, internal_orphans=3)
    ok(f.plan_result)
    f.approve_and_witness()
    planned = [f"data/{k}" for k in f.manifest(0)]  # stage 0: the internal tenant's
    assert sorted(planned) == [f"data/internal/t/{i}.parquet" for i in range(3)]
    before = f.listing()
    r = f.execute("--batch-size", str(batch),
                  env={faultcli.KILL_AT: f"quarantine-delete:{kill_at}"})
    assert r.code == -9, (r.code, r.out, r.err)
    mid = f.listing()
    marker = f"/_cleanup/quarantine/{f.current_plan_id()}/"
    copies = {"data/" + k.split(marker)[1] for k in mid if marker in k}
    gone = {k for k in planned if k not in mid}
    assert gone <= copies  # every removed original was copied first
    assert len(gone) == (kill_at - 1) * batch  # the batches before the killed one
    # The killed batch: copied, and its originals still there (both copies exist).
    assert len(copies - gone) == min(batch, len(planned) - len(gone))
    assert all(k in mid for k in copies - gone)
    f.witness()  # the killed run consumed its witness; the resume is witnessed again
    res = json.loads(ok(f.execute("--batch-size", str(batch))).out)
    assert res["removed"] == len(planned)
    after = f.listing()
    assert {k for k in before if k not in after} == set(planned)
    quarantined = {k.split(f"/_cleanup/quarantine/{f.current_plan_id()}/")[1]: etag
                   for k, etag in after.items() if "/_cleanup/quarantine/" in k}
    assert quarantined == {k.removeprefix("data/"): before[k] for k in planned}
    for k, etag in after.items():
        if "/_cleanup/" not in k:
            assert before[k] == etag


_seg = st.sampled_from(["a", "b", "c", "ü", "x y", "%2F", "+", "_cleanup", "t0001"])


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(st.tuples(st.lists(_seg, max_size=3), _seg), min_size=1, max_size=40))
def test_listing_yields_every_key_exactly_once(
        s3_server: S3Server, paths: list[tuple[list[str], str]]) -> None:
    """The store contract's exactly-once listing, over generated layouts: nested folders,
    the reserved prefix at any level; on moto also folder markers ending in '/', doubled
    slashes, an object and a folder of the same name, the store prefix itself as an
    object. Every key under the prefix except `_cleanup/` is yielded once and nothing
    else, on moto and on rclone serve s3 (whose files cannot hold the moto-only shapes).
    A split listing (issue 18) must keep passing this."""
    from cleanup.core.paths import parse_store
    from cleanup.stores.s3 import S3Store

    keys = {"/".join([*dirs, f"{name}.bin"]) for dirs, name in paths}
    if s3_server.name == "moto":
        keys |= {"a", "a/b.bin", "x//y.bin", "x/", "t0001/"}
    bucket = s3_server.bucket()
    _put(s3_server, bucket, sorted(keys))
    if s3_server.name == "moto":
        s3_server.client().put_object(Bucket=bucket, Key="data/", Body=b"marker")
    s3_server.client().put_object(Bucket=bucket, Key="other/x.bin", Body=b"outside")
    # The server's own client (not the environment: an in-process boto3 session may have
    # cached another server's credentials).
    store = S3Store(parse_store(f"s3://{bucket}/data/"), s3_server.client())
    got = [o.key for o in store.iter_objects()]
    assert len(got) == len(set(got)), "a key was listed twice"
    assert sorted(got) == sorted(k for k in keys if not k.startswith("_cleanup/"))
