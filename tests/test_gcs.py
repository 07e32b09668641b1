"""Google Cloud Storage end to end against a real fake-gcs-server on 127.0.0.1: listing,
reference spellings, region binding, and the flow plan -> sign-off -> execute stage 0 ->
restore -> purge in the copy, none and versioning quarantine modes.

What fake-gcs-server does not implement is named where it matters: it ignores
``ifGenerationMatch`` on deletes and rewrites (only the upload form, used by the lock, is
honoured), cannot list noncurrent generations (so a resumed versioning-mode batch cannot
find its own earlier delete there), and has no Storage Insights inventory reports or
soft-delete policy; none of those is exercised here against the server. Inventory
reports are read from recorded fixtures (tests/fixtures/gcs_inventory/) and from a report
written into a fake-gcs-server bucket the way Google lays it out, then planned and
executed on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from cleanup.core.paths import parse_store, resolve_ref
from cleanup.formats import read_meta
from tests.conftest import Run, assert_one_line_error, make_key
from tests.inproc import run_cli
from tests.scenario import Scenario, ok, wait_until
from tests.servers import GCSServer

pytestmark = pytest.mark.s3  # needs a server started by the suite

KEYS = ["t1/a.parquet", "t1/b c.parquet", "t2/\u00fc.parquet", "t2/x+y.parquet",
        "t3/p%41.bin"]


def body(key: str) -> bytes:
    return f"content of {key}".encode()


class CloudFlow(Scenario):
    """Objects in a bucket (container), planned with a short (overridden) buffer. The
    cloud is given as callables, so the GCS and Azure flows are one flow."""

    BUFFER = timedelta(seconds=1)

    def __init__(self, tmp: Path, keys_dir: Path, store_url: str, env: Mapping[str, str], *,
                 put: Callable[[str, bytes], None], listing: Callable[[], dict[str, str]],
                 newest: Callable[[], datetime], precision: timedelta,
                 ref_spelling: Callable[[str], str], plan_extra: tuple[str, ...] = ()) -> None:
        super().__init__(tmp, store_url, env=env, signers={
            "alice": make_key(keys_dir, "alice"), "bob": make_key(keys_dir, "bob")})
        self.put_object, self.listing, self.newest = put, listing, newest
        self.precision, self.ref_spelling, self.plan_extra = precision, ref_spelling, plan_extra
        self.keys = [f"internal/t/{i}.parquet" for i in range(3)] + [
            "internal/t/with space+%\u00fc.parquet"] + [
            f"acme/t/{i}.parquet" for i in range(30)]
        for k in self.keys:
            put(k, body(k))
        self.orphans = ["internal/t/0.parquet", "internal/t/with space+%\u00fc.parquet",
                        "acme/t/0.parquet"]

    def plan(self, *extra: str) -> Run:
        ready = self.newest() + self.BUFFER + self.precision + timedelta(milliseconds=50)
        wait_until(lambda: datetime.now(UTC) >= ready, timeout=60,
                   what="the objects to be older than the cutoff")
        self.list_store()
        self.snapshot_refs(self.ref_spelling(k) for k in self.keys if k not in self.orphans)
        # Quarantine retention of one second (the tests' trust root allows it), so that
        # purge can run within the test.
        config = self.tmp / "cleanup.toml"
        config.write_text('[policy]\nretention = "1s"\n')
        return self.create_plan("--buffer", "1s", "--override-minimums", "--internal",
                                "internal", "--stages", "100%", "--max-delete-fraction", "0.2",
                                "--config", str(config), *self.plan_extra, *extra)

    def run_stage0(self, *extra: str) -> dict[str, object]:
        ok(self.plan(*extra))
        self.approve_and_witness()
        res: dict[str, object] = json.loads(ok(self.execute(0)).out)
        return res

    def purge(self) -> Run:
        """Purge stage 0 once its (1 s) retention is over: a witness of the runner's purge
        challenge (I8), then the purge."""
        time.sleep(1.1)  # the retention is measured by the store's clock from "finished"
        ok(self.witness(0, action="purge"))
        return self.cli(["purge", str(self.plan_dir), "--stage", "0", "--executor", "alice",
                         "--key", str(self.signer_key("alice"))])


def gcs_flow(server: GCSServer, tmp: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch,
             *, versioning: bool = False, plan_extra: tuple[str, ...] = ()) -> CloudFlow:
    for k, v in server.env().items():  # in-process library calls (purge) find it too
        monkeypatch.setenv(k, v)
    name = server.bucket(versioning=versioning)
    client = server.client()
    bucket = client.bucket(name)

    def put(key: str, data: bytes) -> None:
        bucket.blob("data/" + key).upload_from_string(data)

    def listing() -> dict[str, str]:
        return {b.name: b.md5_hash for b in client.list_blobs(name)}

    def newest() -> datetime:
        stamps: list[datetime] = [b.updated for b in client.list_blobs(name, prefix="data/")]
        return max(stamps)

    def spelling(key: str) -> str:  # half gs://, half HTTPS (percent-encoded)
        if len(key) % 2:
            return f"gs://{name}/data/{key}"
        return f"https://storage.googleapis.com/{name}/data/{quote(key)}"

    flow = CloudFlow(tmp, keys_dir, f"gs://{name}/data/", server.env(), put=put,
                     listing=listing, newest=newest, precision=timedelta(milliseconds=1),
                     ref_spelling=spelling, plan_extra=plan_extra)
    flow.bucket_name = name  # type: ignore[attr-defined]
    return flow


def test_gcs_urls_resolve_to_keys() -> None:
    store = parse_store("gs://bkt/data")
    assert store.url == "gs://bkt/data/"
    for ref in ["gs://bkt/data/t/a b.parquet", "GS://bkt/data/t/a b.parquet",
                "https://storage.googleapis.com/bkt/data/t/a%20b.parquet",
                "https://bkt.storage.googleapis.com/data/t/a%20b.parquet",
                "https://storage.cloud.google.com/bkt/data/t/a%20b.parquet"]:
        r = resolve_ref(ref, store)
        assert (r.cls, r.key) == ("key", "t/a b.parquet"), ref
    assert resolve_ref("gs://other/data/x", store).cls == "foreign"
    assert resolve_ref("s3://bkt/data/x", store).cls == "foreign"  # same name, other cloud
    assert resolve_ref("gs://bkt/data/t/", store).cls == "folder"


def test_inventory_lists_gcs_store(fake_gcs_server: GCSServer, tmp_path: Path) -> None:
    name = fake_gcs_server.bucket()
    bucket = fake_gcs_server.client().bucket(name)
    for k in KEYS:
        bucket.blob("data/" + k).upload_from_string(body(k))
    for k in ("data/_cleanup/lock", "other/outside.txt"):
        bucket.blob(k).upload_from_string(b"x")
    out = tmp_path / "inv.parquet"
    ok(run_cli(["inventory", f"gs://{name}/data/", "-o", str(out), "--json"],
               env=fake_gcs_server.env()))
    t = pq.read_table(out).to_pylist()
    assert {r["key"]: r["size"] for r in t} == {k: len(body(k)) for k in KEYS}
    import hashlib

    for r in t:
        assert r["etag"] == hashlib.md5(body(r["key"])).hexdigest()  # noqa: S324
        assert str(r["version_id"]).isdigit()  # the generation
    meta = read_meta(str(out))
    assert meta["precision_us"] == "1000"
    assert meta["store"] == f"gs://{name}/data/"


def test_missing_bucket_and_unreachable_endpoint_are_usage_errors(
        fake_gcs_server: GCSServer, tmp_path: Path) -> None:
    r = run_cli(["inventory", "gs://no-such-bucket-here/", "-o", str(tmp_path / "i.parquet")],
                env=fake_gcs_server.env())
    assert_one_line_error(r, 2, "does not exist")
    r = run_cli(["inventory", "gs://b/", "-o", str(tmp_path / "j.parquet"), "--endpoint-url",
                 "http://127.0.0.1:9"], env=fake_gcs_server.env())
    assert_one_line_error(r, 2, "cannot reach")


@pytest.mark.parametrize("mode", ["copy", "none"])
def test_gcs_flow(fake_gcs_server: GCSServer, tmp_path: Path, keys_dir: Path,
                  monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """plan -> approve -> witness -> execute stage 0 -> restore one key -> purge the other."""
    f = gcs_flow(fake_gcs_server, tmp_path, keys_dir, monkeypatch,
                 plan_extra=("--quarantine", mode))
    before = f.listing()
    res = f.run_stage0()
    plan = f.read_plan()
    assert plan["region"] == fake_gcs_server.location.lower()
    assert res["removed"] == 2  # stage 0: the internal orphans
    after = f.listing()
    gone = {k for k in before if k not in after}
    assert gone == {"data/internal/t/0.parquet", "data/internal/t/with space+%\u00fc.parquet"}
    quarantined = sorted(k for k in after if "/_cleanup/quarantine/" in k)
    assert len(quarantined) == (2 if mode == "copy" else 0)
    assert not [k for k in after if "/_cleanup/lock" in k or "/_cleanup/clock/" in k]
    assert f.status()["stages"][0]["state"] == "complete"
    ok(run_cli(["audit", "verify", f.store_url, "--json"], env=f.env))
    if mode == "none":
        return
    counts = json.loads(ok(f.restore("--key", "internal/t/0.parquet", "--json")).out)
    assert counts == {"restored": 1}
    restored = f.listing()
    assert restored["data/internal/t/0.parquet"] == before["data/internal/t/0.parquet"]
    ok(f.purge())  # the other key's quarantined copy
    left = f.listing()
    assert not [k for k in left if "/_cleanup/quarantine/" in k]
    assert "data/internal/t/with space+%\u00fc.parquet" not in left


def test_gcs_versioning_mode(fake_gcs_server: GCSServer, tmp_path: Path, keys_dir: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Object Versioning: the deleted generation stays noncurrent; restore rewrites it back
    (never over a live object) and says so only once."""
    f = gcs_flow(fake_gcs_server, tmp_path, keys_dir, monkeypatch, versioning=True,
                 plan_extra=("--quarantine", "versioning"))
    before = f.listing()
    res = f.run_stage0()
    assert res["removed"] == 2
    after = f.listing()
    assert "data/internal/t/0.parquet" not in after
    assert not [k for k in after if "/_cleanup/quarantine/" in k]  # no copies: generations
    journal = (f.plan_dir / "journal" / "stage-0.jsonl").read_text()
    assert "markers" in journal
    counts = json.loads(ok(f.restore("--key", "internal/t/0.parquet", "--json")).out)
    assert counts == {"restored": 1}
    again = f.listing()
    assert again["data/internal/t/0.parquet"] == before["data/internal/t/0.parquet"]
    assert json.loads(ok(f.restore("--key", "internal/t/0.parquet", "--json")).out) == {
        "not-quarantined": 1}
    markers: dict[str, str] = {}
    for line in journal.splitlines():
        markers.update(json.loads(line).get("markers") or {})
    other = "internal/t/with space+%\u00fc.parquet"
    bucket = fake_gcs_server.client().bucket(f.bucket_name)  # type: ignore[attr-defined]
    assert bucket.get_blob("data/" + other, generation=int(markers[other])) is not None
    # fake-gcs-server ignores the generation of a DELETE (it deletes the live object, or
    # answers 404 when there is none), so a noncurrent generation cannot be removed there:
    # purge finds nothing it can remove and says so -- it never touches a live object.
    # On GCS the same call deletes exactly that generation.
    assert "purged 0 " in ok(f.purge()).out
    assert bucket.get_blob("data/" + other, generation=int(markers[other])) is not None
    assert "data/" + other not in f.listing()
    assert f.listing()["data/internal/t/0.parquet"] == before["data/internal/t/0.parquet"]


def test_gcs_versioning_mode_refuses_bucket_without_versioning(
        fake_gcs_server: GCSServer, tmp_path: Path, keys_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    f = gcs_flow(fake_gcs_server, tmp_path, keys_dir, monkeypatch,
                 plan_extra=("--quarantine", "versioning"))
    ok(f.plan())
    f.approve_and_witness()
    before = f.listing()
    assert_one_line_error(f.execute(0), 3, "I11 recoverable", "never enabled")
    assert f.listing() == before


def test_gcs_plan_refuses_another_region(fake_gcs_server: GCSServer, tmp_path: Path,
                                         keys_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    f = gcs_flow(fake_gcs_server, tmp_path, keys_dir, monkeypatch,
                 plan_extra=("--region", "us-east1"))
    assert_one_line_error(f.plan(), 3, "I13 residency", fake_gcs_server.location.lower())


def test_gcs_lock_excludes_a_second_executor(fake_gcs_server: GCSServer, tmp_path: Path,
                                             keys_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """fake-gcs-server honours ifGenerationMatch=0 on uploads: the lock holds (I12)."""
    f = gcs_flow(fake_gcs_server, tmp_path, keys_dir, monkeypatch)
    ok(f.plan())
    f.approve_and_witness()
    holder = {"executor": "carol", "plan_id": "x", "host": "elsewhere", "pid": 1, "token": "t",
              "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}
    fake_gcs_server.client().bucket(f.bucket_name).blob(  # type: ignore[attr-defined]
        "data/_cleanup/lock").upload_from_string(json.dumps(holder).encode())
    before = f.listing()
    assert_one_line_error(f.execute(0), 6, "locked by carol")
    assert f.listing() == before


def test_region_names_dual_and_multi_region_as_such() -> None:
    from cleanup.stores.gcs import region_name

    assert region_name("US-EAST1", "region") == "us-east1"
    assert region_name("NAM4", "dual-region") == "dual-region:nam4"
    assert region_name("EU", "multi-region") == "multi-region:eu"


def test_put_if_match_is_compare_and_swap(fake_gcs_server: GCSServer) -> None:
    """The audit head's compare-and-swap (ReplaceableStore): etag read, then an upload
    pinned to that generation."""
    from cleanup.stores import open_store
    from cleanup.stores.base import ReplaceableStore, capability

    store = open_store(f"gs://{fake_gcs_server.bucket()}/p/",
                       endpoint_url=fake_gcs_server.endpoint_url)
    cas = capability(store, ReplaceableStore)
    assert cas is not None
    assert cas.put_if_match("_cleanup/head", b"1", None) is True
    assert cas.put_if_match("_cleanup/head", b"x", None) is False  # exists
    etag = store.current(["_cleanup/head"])["_cleanup/head"].etag
    assert cas.put_if_match("_cleanup/head", b"2", etag) is True
    assert cas.put_if_match("_cleanup/head", b"3", etag) is False  # stale etag
    assert store.get_bytes("_cleanup/head") == b"2"
    assert cas.put_if_match("_cleanup/absent", b"4", etag) is False
    assert store.get_bytes("_cleanup/absent") is None


def test_throttling_and_dropped_connections_lose_nothing(fake_gcs_server: GCSServer) -> None:
    """503s and connections dropped after the server did the work, on every write: each
    object ends up in quarantine exactly once, byte for byte, and nothing else moves."""
    from cleanup.stores import open_store
    from cleanup.stores.base import quarantine_key
    from tests.faultproxy import fault_proxy

    name = fake_gcs_server.bucket()
    bucket = fake_gcs_server.client().bucket(name)
    keys = [f"t/{i:02d}.bin" for i in range(6)]
    for k in [*keys, "keep/x.bin"]:
        bucket.blob("data/" + k).upload_from_string(body(k))
    plan_id = "ab" * 32
    with fault_proxy(fake_gcs_server.endpoint_url, slowdown=0.2, drop=0.1, seed=5) as proxy:
        store = open_store(f"gs://{name}/data/", endpoint_url=proxy.endpoint_url)
        objs = [o for o in store.iter_objects() if o.key in keys]
        out = store.quarantine(plan_id, objs)
    assert proxy.stats.slowdowns > 0
    assert proxy.stats.dropped > 0
    assert out == dict.fromkeys(keys)
    for k in keys:
        assert bucket.get_blob("data/" + k) is None
        got = bucket.blob("data/" + quarantine_key(plan_id, k)).download_as_bytes()
        assert got == body(k)
    assert bucket.blob("data/keep/x.bin").download_as_bytes() == body("keep/x.bin")


def test_fake_gcs_server_ignores_generation_preconditions(fake_gcs_server: GCSServer) -> None:
    """What the server does not do, recorded: of the preconditions the store sends, only
    ifGenerationMatch on an upload is enforced. On a delete or rewrite it is ignored, so
    against fake-gcs-server the store's own read of the generation (see
    tests/contract/conftest.py) is the only guard; GCS enforces all of them."""
    from google.api_core.exceptions import PreconditionFailed

    bucket = fake_gcs_server.client().bucket(fake_gcs_server.bucket())
    bucket.blob("k").upload_from_string(b"v1")
    with pytest.raises(PreconditionFailed):
        bucket.blob("k").upload_from_string(b"v2", if_generation_match=0)
    bucket.blob("k").delete(if_generation_match=1)  # not the live generation: still deleted
    assert bucket.get_blob("k") is None


def test_a_bucket_named_bucket_still_has_absent_keys(fake_gcs_server: GCSServer) -> None:
    """A 404 names the bucket in its URL: an absent object of a bucket whose name contains
    "bucket" is still just absent (not a missing bucket)."""
    from cleanup.stores import open_store

    client = fake_gcs_server.client()
    name = f"my-bucket-{fake_gcs_server.bucket()[2:12]}"
    client.create_bucket(name)
    store = open_store(f"gs://{name}/p/", endpoint_url=fake_gcs_server.endpoint_url)
    assert store.get_bytes("absent") is None
    assert store.current(["absent"]) == {}
    assert store.restore("ab" * 32, "absent") == "not-quarantined"
    assert list(store.iter_objects()) == []


@pytest.mark.parametrize(("url", "module", "extra"), [
    ("gs://b/p/", "google.cloud.storage", "cleanup[gcs]"),
    ("az://c/p/", "azure.storage.blob", "cleanup[azure]")])
def test_a_missing_client_library_is_a_usage_error_naming_the_extra(
        url: str, module: str, extra: str) -> None:
    """In a process where the library cannot be imported (its module is blocked), opening
    the store is a usage error that says what to install."""
    import subprocess
    import sys

    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from cleanup.errors import UsageError\n"
            "from cleanup.stores import open_store\n"
            "try:\n"
            f"    open_store({url!r}, endpoint_url='http://127.0.0.1:9')\n"
            "except UsageError as e:\n"
            "    print(e.message, '|', e.hint)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env={"AZURE_STORAGE_CONNECTION_STRING": "x"})
    assert f"pip install '{extra}'" in p.stdout, p.stdout + p.stderr


# --------------------------------------------------------------------------- inventory reports
# Storage Insights inventory reports: recorded fixtures in tests/fixtures/gcs_inventory/
# (see tests/fixtures/README.md for the documents they follow), and a report written into
# a real fake-gcs-server bucket, which cannot generate reports itself.

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GCS_CSV = FIXTURES / "gcs_inventory" / "csv"
GCS_CSV_MANIFEST = GCS_CSV / "6f3c8a52-91d4-4b7e-a0c2-5d1e9b7f2a40_2026-05-14T00:00_manifest.json"
GCS_PQ_MANIFEST = (FIXTURES / "gcs_inventory" / "parquet"
                   / "0b7d2e94-3f1a-4c58-9e6d-8a2c4f1b9d73_2026-05-14T00:00_manifest.json")


def _report_rows(manifest: Path, store: str, tmp: Path, flag: str = "--gcs-inventory",
                 ) -> tuple[dict[str, tuple[object, ...]], dict[str, str]]:
    out = tmp / f"inv-{abs(hash((str(manifest), store)))}.parquet"
    ok(run_cli(["inventory", store, flag, str(manifest), "-o", str(out), "--json"]))
    rows: dict[str, tuple[object, ...]] = {
        r["key"]: (r["size"], r["last_modified"], r["etag"], r["version_id"])
        for r in pq.read_table(out).to_pylist()}
    return rows, read_meta(str(out))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_gcs_inventory_report_csv_exact_rows(tmp_path: Path) -> None:
    rows, meta = _report_rows(GCS_CSV_MANIFEST, "gs://src-bucket/data/", tmp_path)
    assert rows == {
        "t1/a.parquet": (10, _utc("2026-05-13T10:00:00.123Z"),
                         "5eb63bbbe01eeed093cb22bb8f5acdc3", "1778666400123456"),
        "t1/b c.parquet": (11, _utc("2026-05-13T10:00:01.5Z"),
                           "ed076287532e86365e841e92bfc50d8c", "1778666401500000"),
        "t2/\u00fc.parquet": (12, _utc("2026-05-13T10:00:02Z"),
                              "8b1a9953c4611296a827abf8c47804d7", "1778666402000000"),
        "t2/x+y.parquet": (13, _utc("2026-05-13T10:00:04Z"),
                           "d41d8cd98f00b204e9800998ecf8427e", "1778666404000000"),
        "t3/p%41.bin": (14, _utc("2026-05-13T10:00:05Z"),
                        "900150983cd24fb0d6963f7d28e17f72", "1778666405000000"),
        'quoted,"name".bin': (15, _utc("2026-05-13T10:00:06Z"),
                              "6337c81cb34010fc2a34a1395b9afc4b", "1778666406000000"),
        # A composite object has no md5Hash: GCS's own etag, as the live listing records.
        "composite.bin": (16, _utc("2026-05-13T10:00:07Z"), "CLjf35jA4fECEAE=",
                          "1778666407000000"),
    }  # not: other/outside.txt (outside), _cleanup/lock (reserved), data/ (the prefix)
    assert meta["listed_at"] == "2026-05-14T00:00:00Z"
    assert meta["listed_at_clock"] == "gcs-inventory"
    assert meta["source"] == f"gcs-inventory:{GCS_CSV_MANIFEST}"
    assert meta["precision_us"] == "1000"
    assert meta["time_source"] == "gcs-last-modified"


def test_gcs_inventory_report_parquet_exact_rows(tmp_path: Path) -> None:
    rows, meta = _report_rows(GCS_PQ_MANIFEST, "gs://src-bucket/data/", tmp_path)
    assert rows == {
        "t1/a.parquet": (10, _utc("2026-05-13T10:00:00.123Z"),
                         "5eb63bbbe01eeed093cb22bb8f5acdc3", "1778666400123456"),
        "t2/\u00fc.parquet": (12, _utc("2026-05-13T10:00:02Z"),
                              "8b1a9953c4611296a827abf8c47804d7", "1778666402000000"),
        "composite.bin": (16, _utc("2026-05-13T10:00:07Z"), "CLjf35jA4fECEAE=",
                          "1778666407000000"),
    }
    assert meta["listed_at_clock"] == "gcs-inventory"


def test_gcs_inventory_report_prefix_filtering(tmp_path: Path) -> None:
    rows, _ = _report_rows(GCS_CSV_MANIFEST, "gs://src-bucket/data/t1/", tmp_path)
    assert set(rows) == {"a.parquet", "b c.parquet"}
    # A store is a folder: gs://src-bucket/data/t is data/t/, which holds nothing here
    # (data/t1/... and data/t2/... only share the characters).
    rows, _ = _report_rows(GCS_CSV_MANIFEST, "gs://src-bucket/data/t", tmp_path)
    assert rows == {}
    rows, _ = _report_rows(GCS_CSV_MANIFEST, "gs://src-bucket/", tmp_path)
    assert "other/outside.txt" in rows
    assert "data/_cleanup/lock" in rows  # not reserved here
    assert "data/" in rows  # the folder placeholder is an object of the bucket root store


def _copy_report(src: Path, tmp: Path) -> Path:
    import shutil

    dest = tmp / "report"
    shutil.copytree(src, dest)
    return dest


def _damage(tmp: Path, edit: Callable[[Path], None]) -> Run:
    d = _copy_report(GCS_CSV, tmp)
    edit(d)
    return run_cli(["inventory", "gs://src-bucket/data/", "--gcs-inventory",
                    str(d / GCS_CSV_MANIFEST.name), "-o", str(tmp / "i.parquet")])


def _edit_manifest(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        p = d / GCS_CSV_MANIFEST.name
        doc = json.loads(p.read_text())
        change(doc)
        p.write_text(json.dumps(doc))
    return edit


def _shard(d: Path, n: int) -> Path:
    return d / GCS_CSV_MANIFEST.name.replace("manifest.json", f"{n}.csv")


@pytest.mark.parametrize(("case", "edit", "needle"), [
    ("missing shard", lambda d: _shard(d, 1).unlink(), "was not found"),
    ("truncated shard", lambda d: _shard(d, 1).write_text(
        "\n".join(_shard(d, 1).read_text().splitlines()[:-2]) + "\n"),
     "records_processed 10"),
    ("shard_count", _edit_manifest(lambda m: m.update(shard_count=3)), "shard_count is 3"),
    ("other bucket", _edit_manifest(lambda m: m["report_config"][
        "object_metadata_report_options"]["storage_filters"].update(bucket="other")),
     "is for bucket 'other'"),
    ("no updated field", _edit_manifest(lambda m: m["report_config"][
        "object_metadata_report_options"].update(metadata_fields=["name", "size"])),
     "has no updated field"),
    ("no snapshot_time", _edit_manifest(lambda m: m.pop("snapshot_time")), "snapshot_time"),
    ("not json", lambda d: (d / GCS_CSV_MANIFEST.name).write_text("{nope"), "not valid JSON"),
    ("bad size", lambda d: _shard(d, 0).write_text(
        _shard(d, 0).read_text().replace(",10,2026", ",ten,2026")), "not a whole number"),
    ("time without zone", lambda d: _shard(d, 0).write_text(
        _shard(d, 0).read_text().replace("10:00:00.123Z,STANDARD", "10:00:00.123,STANDARD")),
     "with a zone"),
    ("conflicting duplicate", lambda d: _shard(d, 1).write_text(
        _shard(d, 1).read_text() + _shard(d, 0).read_text().splitlines()[1].replace(
            ",10,", ",99,") + "\n"), "listed twice"),
])
def test_gcs_inventory_report_refuses_bad_reports(tmp_path: Path, case: str,
                                                  edit: Callable[[Path], None],
                                                  needle: str) -> None:
    del case
    r = _damage(tmp_path, edit)
    assert_one_line_error(r, 2, needle)
    assert not (tmp_path / "i.parquet").exists()  # nothing half-written


def test_gcs_inventory_report_needs_a_gcs_store(tmp_path: Path) -> None:
    r = run_cli(["inventory", "s3://src-bucket/data/", "--gcs-inventory",
                 str(GCS_CSV_MANIFEST), "-o", str(tmp_path / "i.parquet")])
    assert_one_line_error(r, 2, "--gcs-inventory needs a gs://")
    r = run_cli(["inventory", "gs://src-bucket/data/", "--gcs-inventory",
                 str(GCS_CSV_MANIFEST), "--s3-inventory", "x", "-o", str(tmp_path / "i.parquet")])
    assert_one_line_error(r, 2, "at most one of")


def write_gcs_report(client: object, bucket_name: str, prefix: str, *,
                     parquet: bool = False) -> str:
    """A Storage Insights report of ``bucket_name`` written into the same bucket under
    ``inventory/`` (what Google would write; fake-gcs-server cannot): shards and manifest.
    Returns the manifest's gs:// URL."""
    import csv
    import io

    import pyarrow as pa

    fields = ["project", "bucket", "name", "size", "timeCreated", "updated", "etag",
              "md5Hash", "generation", "metageneration", "storageClass"]
    blobs = [b for b in client.list_blobs(bucket_name)  # type: ignore[attr-defined]
             if not b.name.startswith("inventory/")]
    rows = [["test", bucket_name, b.name, str(b.size),
             b.time_created.isoformat().replace("+00:00", "Z"),
             b.updated.isoformat().replace("+00:00", "Z"), b.etag or "", b.md5_hash or "",
             str(b.generation), str(b.metageneration), b.storage_class or "STANDARD"]
            for b in blobs]
    config_id = "5a1e0c3d-0000-4000-8000-00000000c1ea"
    snap = datetime.now(UTC)
    stem = f"{config_id}_{snap.strftime('%Y-%m-%dT%H:%M')}_"
    bucket = client.bucket(bucket_name)  # type: ignore[attr-defined]
    half = len(rows) // 2
    shards = []
    for n, part in enumerate([rows[:half], rows[half:]]):
        name = f"{stem}{n}.{'parquet' if parquet else 'csv'}"
        if parquet:
            cols = {f: [r[i] for r in part] for i, f in enumerate(fields)}
            table = pa.table({**cols, "size": pa.array([int(s) for s in cols["size"]])})
            buf = io.BytesIO()
            pq.write_table(table, buf)
            data = buf.getvalue()
        else:
            text = io.StringIO()
            w = csv.writer(text, lineterminator="\n")
            w.writerow(fields)
            w.writerows(part)
            data = text.getvalue().encode()
        bucket.blob(f"inventory/{name}").upload_from_string(data)
        shards.append(name)
    options = {"parquet_options": {}} if parquet else {"csv_options": {
        "record_separator": "\n", "delimiter": ",", "header_required": True}}
    manifest = {
        "report_config": {
            "name": f"projects/test/locations/europe-west1/reportConfigs/{config_id}",
            **options,
            "object_metadata_report_options": {
                "metadata_fields": fields, "storage_filters": {"bucket": bucket_name},
                "storage_destination_options": {"bucket": bucket_name,
                                                "destination_path": "inventory"}}},
        "records_processed": len(rows),
        "snapshot_time": snap.isoformat().replace("+00:00", "Z"),
        "shard_count": len(shards),
        "report_shards_file_names": shards,
    }
    bucket.blob(f"inventory/{stem}manifest.json").upload_from_string(json.dumps(manifest))
    del prefix
    return f"gs://{bucket_name}/inventory/{stem}manifest.json"


@pytest.mark.parametrize("parquet", [False, True])
def test_gcs_inventory_report_in_the_bucket_matches_the_listing(
        fake_gcs_server: GCSServer, tmp_path: Path, parquet: bool) -> None:
    name = fake_gcs_server.bucket()
    client = fake_gcs_server.client()
    bucket = client.bucket(name)
    for k in KEYS:
        bucket.blob("data/" + k).upload_from_string(body(k))
    for k in ("data/_cleanup/lock", "other/outside.txt"):
        bucket.blob(k).upload_from_string(b"x")
    manifest = write_gcs_report(client, name, "data/", parquet=parquet)
    listed, reported = tmp_path / "listed.parquet", tmp_path / "reported.parquet"
    ok(run_cli(["inventory", f"gs://{name}/data/", "-o", str(listed)],
               env=fake_gcs_server.env()))
    ok(run_cli(["inventory", f"gs://{name}/data/", "--gcs-inventory", manifest, "-o",
                str(reported)], env=fake_gcs_server.env()))

    def rows(p: Path) -> list[tuple[object, ...]]:
        return sorted((r["key"], r["size"], r["last_modified"], r["etag"], r["version_id"])
                      for r in pq.read_table(p).to_pylist())

    assert rows(reported) == rows(listed)
    assert [r[0] for r in rows(reported)] == sorted(KEYS)
    assert read_meta(str(reported))["source"] == f"gcs-inventory:{manifest}"
    r = run_cli(["inventory", f"gs://{name}/data/", "--gcs-inventory",
                 f"gs://{name}/inventory/nope_manifest.json", "-o", str(tmp_path / "x.parquet")],
                env=fake_gcs_server.env())
    assert_one_line_error(r, 2, "does not exist")


def test_gcs_flow_from_an_inventory_report(fake_gcs_server: GCSServer, tmp_path: Path,
                                           keys_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan made from a report-based inventory executes on the real server: the report's
    etag (hex MD5) and generation are what the executor re-checks."""
    f = gcs_flow(fake_gcs_server, tmp_path, keys_dir, monkeypatch,
                 plan_extra=("--quarantine", "copy"))
    name = f.bucket_name  # type: ignore[attr-defined]
    client = fake_gcs_server.client()

    def from_report(*extra: str) -> Run:
        manifest = write_gcs_report(client, name, "data/")
        return Scenario.list_store(f, "--gcs-inventory", manifest, *extra)

    f.list_store = from_report  # type: ignore[method-assign]
    before = f.listing()
    res = f.run_stage0()
    assert f.read_plan()["inputs"]["inventory"]["source"].startswith("gcs-inventory:gs://")
    assert res["removed"] == 2
    gone = {k for k in before if k not in f.listing()}
    assert gone == {"data/internal/t/0.parquet", "data/internal/t/with space+%\u00fc.parquet"}
