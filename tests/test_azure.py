"""Azure Blob Storage end to end against a real Azurite (blob service) on 127.0.0.1:
listing, reference spellings (az://, abfs[s]://, wasb[s]://, HTTPS), the declared region,
and the flow plan -> sign-off -> execute stage 0 -> restore -> purge in the copy and none
quarantine modes.

Azurite honours If-None-Match: * (lock, restore), If-Match (delete) and
x-ms-source-if-match (quarantine copy). It does not implement blob versioning (no
version ids), soft-delete restore or Blob Inventory reports, and the blob API does not
report an account's location: the ``versioning`` mode is refused for az:// stores and
the region is the one declared at plan time. Blob inventory reports are read from
recorded fixtures (tests/fixtures/azure_inventory/) and from a run written into an
Azurite container the way Azure lays it out, then planned and executed on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup.core.paths import parse_store, resolve_ref
from cleanup.formats import read_meta
from tests.conftest import Run, assert_one_line_error
from tests.inproc import run_cli
from tests.scenario import Scenario, ok
from tests.servers import AZURITE_ACCOUNT, AzureServer
from tests.test_gcs import FIXTURES, KEYS, CloudFlow, _report_rows, _utc, body

pytestmark = pytest.mark.s3  # needs a server started by the suite

REGION = "westeurope"


def azure_flow(server: AzureServer, tmp: Path, keys_dir: Path,
               monkeypatch: pytest.MonkeyPatch, *, name_account: bool = False,
               plan_extra: tuple[str, ...] = ("--region", REGION)) -> CloudFlow:
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    name = server.container()
    container = server.service().get_container_client(name)

    def put(key: str, data: bytes) -> None:
        container.upload_blob("data/" + key, data, overwrite=True)

    def listing() -> dict[str, str]:
        return {b.name: str(b.etag) for b in container.list_blobs()}

    def newest() -> datetime:
        stamps: list[datetime] = [b.last_modified
                                  for b in container.list_blobs(name_starts_with="data/")]
        return max(stamps)

    def spelling(key: str) -> str:  # the Hadoop and HTTPS spellings of the same object
        if len(key) % 2:
            return f"abfss://{name}@{AZURITE_ACCOUNT}.dfs.core.windows.net/data/{key}"
        return f"https://{AZURITE_ACCOUNT}.blob.core.windows.net/{name}/data/{quote(key)}"

    store = f"az://{name}@{AZURITE_ACCOUNT}/data/" if name_account else f"az://{name}/data/"
    # The runner declares the account's region (the blob API cannot tell it): I13.
    env = {**server.env(), **({"AZURE_STORAGE_REGION": REGION} if "--region" in plan_extra
                              else {})}
    flow = CloudFlow(tmp, keys_dir, store, env, put=put, listing=listing,
                     newest=newest, precision=timedelta(seconds=1), ref_spelling=spelling,
                     plan_extra=plan_extra)
    flow.container = container  # type: ignore[attr-defined]
    return flow


def test_azure_urls_resolve_to_keys() -> None:
    store = parse_store("az://cont/data")
    named = parse_store("az://cont@acct/data/")
    assert (store.url, named.url) == ("az://cont/data/", "az://cont@acct/data/")
    for ref in ["az://cont/data/t/a b.parquet",
                "abfss://cont@acct.dfs.core.windows.net/data/t/a b.parquet",
                "abfs://cont@acct.dfs.core.windows.net/data/t/a b.parquet",
                "wasbs://cont@acct.blob.core.windows.net/data/t/a b.parquet",
                "https://acct.blob.core.windows.net/cont/data/t/a%20b.parquet",
                "https://acct.dfs.core.windows.net/cont/data/t/a%20b.parquet"]:
        for where in (store, named):
            r = resolve_ref(ref, where)
            assert (r.cls, r.key) == ("key", "t/a b.parquet"), (ref, where)
    # Another account is another store when the store names its account.
    other = "abfss://cont@other.dfs.core.windows.net/data/x"
    assert resolve_ref(other, named).cls == "foreign"
    assert resolve_ref(other, store).cls == "key"  # account not named: protects, never misses
    assert resolve_ref("abfs://cont/data/x", store).cls == "unresolvable"
    assert resolve_ref("gs://cont/data/x", store).cls == "foreign"


def test_inventory_lists_azure_store(azurite_server: AzureServer, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    name = azurite_server.container()
    container = azurite_server.service().get_container_client(name)
    for k in KEYS:
        container.upload_blob("data/" + k, body(k))
    for k in ("data/_cleanup/lock", "other/outside.txt"):
        container.upload_blob(k, b"x")
    out = tmp_path / "inv.parquet"
    ok(run_cli(["inventory", f"az://{name}/data/", "-o", str(out), "--json"],
               env=azurite_server.env()))
    t = pq.read_table(out).to_pylist()
    assert {r["key"]: r["size"] for r in t} == {k: len(body(k)) for k in KEYS}
    props = {b.name: str(b.etag).strip('"') for b in container.list_blobs()}
    for r in t:
        assert r["etag"] == props["data/" + r["key"]]  # the ETag, without quotes
        assert r["version_id"] is None  # Azurite: no blob versioning
    meta = read_meta(str(out))
    assert meta["precision_us"] == "1000000"
    assert meta["store"] == f"az://{name}/data/"


def test_missing_container_and_missing_account_are_usage_errors(
        azurite_server: AzureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_cli(["inventory", "az://no-such-container/", "-o", str(tmp_path / "i.parquet")],
                env=azurite_server.env())
    assert_one_line_error(r, 2, "does not exist")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    r = run_cli(["inventory", "az://c/", "-o", str(tmp_path / "j.parquet")])
    assert_one_line_error(r, 2, "no storage account configured")
    r = run_cli(["inventory", "az://c@someoneelse/", "-o", str(tmp_path / "k.parquet")],
                env=azurite_server.env())
    assert_one_line_error(r, 2, "someoneelse")


@pytest.mark.parametrize("mode", ["copy", "none"])
def test_azure_flow(azurite_server: AzureServer, tmp_path: Path, keys_dir: Path,
                    monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """plan -> approve -> witness -> execute stage 0 -> restore one key -> purge the other."""
    f = azure_flow(azurite_server, tmp_path, keys_dir, monkeypatch, name_account=mode == "copy",
                   plan_extra=("--region", REGION, "--quarantine", mode))
    before = f.listing()
    res = f.run_stage0()
    assert f.read_plan()["region"] == REGION
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
    data = f.container.download_blob(  # type: ignore[attr-defined]
        "data/internal/t/0.parquet").readall()
    assert data == body("internal/t/0.parquet")
    ok(f.purge())  # the other key's quarantined copy
    left = f.listing()
    assert not [k for k in left if "/_cleanup/quarantine/" in k]
    assert "data/internal/t/with space+%\u00fc.parquet" not in left
    assert "data/internal/t/0.parquet" in left


def test_azure_plan_needs_a_declared_region(azurite_server: AzureServer, tmp_path: Path,
                                            keys_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_REGION", raising=False)
    f = azure_flow(azurite_server, tmp_path, keys_dir, monkeypatch, plan_extra=())
    assert_one_line_error(f.plan(), 2, "--region")
    assert not f.plan_dir.exists()


def test_azure_versioning_mode_is_refused(azurite_server: AzureServer, tmp_path: Path,
                                          keys_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No VersionedStore on az:// (Azurite has no blob versioning to test it against)."""
    f = azure_flow(azurite_server, tmp_path, keys_dir, monkeypatch,
                   plan_extra=("--region", REGION, "--quarantine", "versioning"))
    r = f.plan()
    if r.code == 0:  # the planner does not know; execution refuses before touching data
        f.approve_and_witness()
        before = f.listing()
        r = f.execute(0)
        assert f.listing() == before
    assert_one_line_error(r, 2, "versioning")


def test_azure_lock_excludes_a_second_executor(azurite_server: AzureServer, tmp_path: Path,
                                               keys_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    f = azure_flow(azurite_server, tmp_path, keys_dir, monkeypatch)
    ok(f.plan())
    f.approve_and_witness()
    holder = {"executor": "carol", "plan_id": "x", "host": "elsewhere", "pid": 1, "token": "t",
              "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}
    f.container.upload_blob(  # type: ignore[attr-defined]
        "data/_cleanup/lock", json.dumps(holder).encode(), overwrite=True)
    before = f.listing()
    assert_one_line_error(f.execute(0), 6, "locked by carol")
    assert f.listing() == before


def test_put_if_match_is_compare_and_swap(azurite_server: AzureServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit head's compare-and-swap (ReplaceableStore): Put Blob with If-Match."""
    from cleanup.stores import open_store
    from cleanup.stores.base import ReplaceableStore, capability

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    store = open_store(f"az://{azurite_server.container()}/p/")
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


_cloud_ref = st.one_of(
    st.text(max_size=30),
    st.builds(lambda scheme, bucket, rest: f"{scheme}://{bucket}/{rest}",
              st.sampled_from(["gs", "GS", "az", "s3", "abfss"]),
              st.sampled_from(["bkt", "cont", "cont@acct", "cont@other"]),
              st.text(max_size=20)),
    st.builds(lambda prefix, rest: f"{prefix}{rest}",
              st.sampled_from(["gs://bkt/data/", "az://cont/data/", "az://cont@acct/data/",
                               "abfss://cont@acct.dfs.core.windows.net/data/",
                               "https://acct.blob.core.windows.net/cont/data/",
                               "https://storage.googleapis.com/bkt/data/"]),
              st.text(max_size=20)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_cloud_ref, min_size=1, max_size=20))
def test_sql_fast_path_agrees_with_resolver_on_gcs_and_azure(refs: list[str]) -> None:
    """I4 paths-agree for gs:// and az:// stores: wherever the SQL fast path answers, it
    equals the one resolver."""
    import duckdb

    from cleanup.core.paths import fast_key_select, sql_literal

    refs = [r.replace("\x00", "") for r in refs]
    con = duckdb.connect()
    values = ", ".join(f"({i}, {sql_literal(r)})" for i, r in enumerate(refs))
    for url in ("gs://bkt/data/", "gs://bkt", "az://cont/data/", "az://cont@acct/data/"):
        store = parse_store(url)
        for enc in ("literal", "uri"):
            sel = fast_key_select(f"(SELECT r AS key, i FROM (VALUES {values}) v(i, r))",
                                  store, enc)
            rows = con.execute(f"SELECT fk, ref FROM ({sel})").fetchall()
            assert sorted(r for _f, r in rows) == sorted(refs)
            for fast, ref in rows:
                if fast is not None:
                    res = resolve_ref(ref, store, encoding=enc)
                    assert (res.cls, res.key) == ("key", fast), (ref, url)


def test_throttling_and_dropped_connections_lose_nothing(azurite_server: AzureServer,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """503s and connections dropped after the server did the work, on every write: each
    object ends up in quarantine exactly once, byte for byte, and nothing else moves."""
    from cleanup.stores import open_store
    from cleanup.stores.base import quarantine_key
    from tests.faultproxy import fault_proxy

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    name = azurite_server.container()
    container = azurite_server.service().get_container_client(name)
    keys = [f"t/{i:02d}.bin" for i in range(6)]
    for k in [*keys, "keep/x.bin"]:
        container.upload_blob("data/" + k, body(k))
    plan_id = "ab" * 32
    upstream = azurite_server.endpoint_url.rsplit("/", 1)[0]
    with fault_proxy(upstream, slowdown=0.2, drop=0.1, seed=5) as proxy:
        store = open_store(f"az://{name}/data/",
                           endpoint_url=f"{proxy.endpoint_url}/{AZURITE_ACCOUNT}")
        objs = [o for o in store.iter_objects() if o.key in keys]
        out = store.quarantine(plan_id, objs)
    assert proxy.stats.slowdowns > 0
    assert proxy.stats.dropped > 0
    assert out == dict.fromkeys(keys)
    live = {b.name for b in container.list_blobs()}
    for k in keys:
        assert "data/" + k not in live
        got = container.download_blob("data/" + quarantine_key(plan_id, k)).readall()
        assert got == body(k)
    assert container.download_blob("data/keep/x.bin").readall() == body("keep/x.bin")


# --------------------------------------------------------------------------- inventory reports
# Azure blob inventory runs: recorded fixtures in tests/fixtures/azure_inventory/ (see
# tests/fixtures/README.md for the document they follow), and a run written into a real
# Azurite container, which cannot generate inventories itself.

AZ_RUN = "2026/05/14/01-00-00"
AZ_CSV = FIXTURES / "azure_inventory" / "csv"
AZ_CSV_MANIFEST = AZ_CSV / AZ_RUN / "cleanup-rule" / "cleanup-rule-manifest.json"
AZ_PQ_MANIFEST = (FIXTURES / "azure_inventory" / "parquet" / AZ_RUN / "cleanup-rule-pq"
                  / "cleanup-rule-pq-manifest.json")


def test_azure_inventory_report_csv_exact_rows(tmp_path: Path) -> None:
    rows, meta = _report_rows(AZ_CSV_MANIFEST, "az://src-container/data/", tmp_path,
                              "--azure-inventory")

    def v(t: str) -> str:
        return t  # VersionId: the version's timestamp, as Azure names versions

    assert rows == {
        "t1/a.parquet": (10, _utc("2026-05-13T10:00:00Z"), "0x8DE90A1B2C3D4E1",
                         v("2026-05-13T10:00:00.0000000Z")),
        "t1/b c.parquet": (11, _utc("2026-05-13T10:00:01Z"), "0x8DE90A1B2C3D4E2",
                           v("2026-05-13T10:00:01.0000000Z")),
        "t2/\u00fc.parquet": (12, _utc("2026-05-13T10:00:02Z"), "0x8DE90A1B2C3D4E3",
                              v("2026-05-13T10:00:02.0000000Z")),
        "t2/x+y.parquet": (13, _utc("2026-05-13T10:00:03Z"), "0x8DE90A1B2C3D4E4",
                           v("2026-05-13T10:00:03.0000000Z")),  # listed twice: kept once
        # Seven fractional digits: truncated to microseconds, never later than the write.
        "t3/p%41.bin": (14, _utc("2026-05-13T10:00:05.123456Z"), "0x8DE90A1B2C3D4E6",
                        v("2026-05-13T10:00:05.1234567Z")),
        'quoted,"name".bin': (15, _utc("2026-05-13T10:00:06Z"), "0x8DE90A1B2C3D4E7",
                              v("2026-05-13T10:00:06.0000000Z")),
    }  # not: the non-current version of a.parquet, deleted gone.bin, _cleanup/lock,
    #   other/outside.txt, and src-container-2's a.parquet (another container)
    assert meta["listed_at"] == "2026-05-14T01:00:00Z"  # inventoryStartTime
    assert meta["listed_at_clock"] == "azure-inventory"
    assert meta["source"] == f"azure-inventory:{AZ_CSV_MANIFEST}"
    assert meta["precision_us"] == "1000000"
    assert meta["time_source"] == "azure-last-modified"


def test_azure_inventory_report_parquet_exact_rows(tmp_path: Path) -> None:
    rows, meta = _report_rows(AZ_PQ_MANIFEST, "az://src-container/data/", tmp_path,
                              "--azure-inventory")
    assert rows == {
        "t1/a.parquet": (10, _utc("2026-05-13T10:00:00Z"), "0x8DE90A1B2C3D4E1", None),
        "t2/\u00fc.parquet": (12, _utc("2026-05-13T10:00:02Z"), "0x8DE90A1B2C3D4E3", None),
    }
    assert meta["listed_at_clock"] == "azure-inventory"


def test_azure_inventory_report_prefix_filtering(tmp_path: Path) -> None:
    rows, _ = _report_rows(AZ_CSV_MANIFEST, "az://src-container/data/t2/", tmp_path,
                           "--azure-inventory")
    assert set(rows) == {"\u00fc.parquet", "x+y.parquet"}
    rows, _ = _report_rows(AZ_CSV_MANIFEST, "az://src-container/", tmp_path,
                           "--azure-inventory")
    assert "other/outside.txt" in rows
    assert "data/t1/a.parquet" in rows
    rows, _ = _report_rows(AZ_CSV_MANIFEST, "az://src-container-2/data/", tmp_path,
                           "--azure-inventory")
    assert rows == {"t1/a.parquet": (99, _utc("2026-05-13T10:00:09Z"), "0x8DE90A1B2C3D4EA",
                                     "2026-05-13T10:00:09.0000000Z")}
    # The Parquet rule covers only src-container/data: a wider store is refused.
    r = run_cli(["inventory", "az://src-container/", "--azure-inventory", str(AZ_PQ_MANIFEST),
                 "-o", str(tmp_path / "w.parquet")])
    assert_one_line_error(r, 2, "covers only src-container/data")


def _az_damage(tmp: Path, edit: Callable[[Path], None]) -> Run:
    import shutil

    d = tmp / "dest"
    shutil.copytree(AZ_CSV, d)
    edit(d / AZ_RUN / "cleanup-rule")
    return run_cli(["inventory", "az://src-container/data/", "--azure-inventory",
                    str(d / AZ_RUN / "cleanup-rule" / "cleanup-rule-manifest.json"), "-o",
                    str(tmp / "i.parquet")])


def _az_manifest(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        p = d / "cleanup-rule-manifest.json"
        doc = json.loads(p.read_text())
        change(doc)
        p.write_text(json.dumps(doc))
        (d / "cleanup-rule-manifest.checksum").unlink()
    return edit


@pytest.mark.parametrize(("case", "edit", "needle"), [
    ("missing file", lambda d: (d / "cleanup-rule_2.csv").unlink(), "was not found"),
    ("truncated file", lambda d: (d / "cleanup-rule_2.csv").write_bytes(
        (d / "cleanup-rule_2.csv").read_bytes()[:-40]), "the manifest says"),
    ("checksum", lambda d: (d / "cleanup-rule-manifest.json").write_text(
        (d / "cleanup-rule-manifest.json").read_text().replace('"daily"', '"weekly"')),
     "does not match its cleanup-rule-manifest.checksum"),
    ("pending run", _az_manifest(lambda m: m.update(status="Pending")), "'Pending'"),
    ("container inventory", _az_manifest(lambda m: m["ruleDefinition"].update(
        objectType="container")), "not a blob inventory"),
    ("no Last-Modified", _az_manifest(lambda m: m["ruleDefinition"].update(
        schemaFields=["Name", "Content-Length"])), "has no lastmodified field"),
    ("versions without IsCurrentVersion", _az_manifest(lambda m: m["ruleDefinition"].update(
        schemaFields=["Name", "Content-Length", "Last-Modified", "VersionId"])),
     "without the IsCurrentVersion field"),
    ("not json", lambda d: (d / "cleanup-rule-manifest.json").write_text("[1, 2"),
     "does not match"),
    ("not json, no checksum", lambda d: ((d / "cleanup-rule-manifest.checksum").unlink(),
                                         (d / "cleanup-rule-manifest.json").write_text("[1")),
     "not valid JSON"),
])
def test_azure_inventory_report_refuses_bad_reports(tmp_path: Path, case: str,
                                                    edit: Callable[[Path], None],
                                                    needle: str) -> None:
    del case
    r = _az_damage(tmp_path, edit)
    assert_one_line_error(r, 2, needle)
    assert not (tmp_path / "i.parquet").exists()


def write_azure_report(server: AzureServer, container: str) -> str:
    """A blob inventory run of ``container`` written into a destination container (what
    Azure would write; Azurite cannot): CSV file, manifest and checksum. Returns the
    manifest's az:// URL."""
    import csv
    import hashlib
    import io

    service = server.service()
    dest = server.container()
    fields = ["Name", "Creation-Time", "Last-Modified", "Etag", "Content-Length",
              "BlobType", "AccessTier"]
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\r\n")
    w.writerow(fields)
    for b in service.get_container_client(container).list_blobs():
        w.writerow([f"{container}/{b.name}",
                    b.creation_time.isoformat().replace("+00:00", "Z"),
                    b.last_modified.isoformat().replace("+00:00", "Z"),
                    str(b.etag).strip('"'), b.size, "BlockBlob", "Hot"])
    started = datetime.now(UTC)
    run = started.strftime("%Y/%m/%d/%H-%M-%S")
    data = text.getvalue().encode()
    dc = service.get_container_client(dest)
    dc.upload_blob(f"{run}/rule1/rule1_1.csv", data)
    manifest = {
        "destinationContainer": dest, "endpoint": server.endpoint_url,
        "files": [{"blob": f"{run}/rule1/rule1_1.csv", "size": len(data)}],
        "inventoryCompletionTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "inventoryStartTime": started.isoformat().replace("+00:00", "Z"),
        "ruleDefinition": {"filters": {"blobTypes": ["blockBlob"],
                                       "prefixMatch": [container]},
                           "format": "csv", "objectType": "blob", "schedule": "daily",
                           "schemaFields": fields},
        "ruleName": "rule1", "status": "Succeeded",
        "summary": {"objectCount": 0, "totalObjectSize": 0}, "version": "1.0"}
    raw = json.dumps(manifest, indent=2).encode()
    dc.upload_blob(f"{run}/rule1/rule1-manifest.json", raw)
    dc.upload_blob(f"{run}/rule1/rule1-manifest.checksum",
                   hashlib.md5(raw, usedforsecurity=False).hexdigest().encode())
    return f"az://{dest}/{run}/rule1/rule1-manifest.json"


def test_azure_inventory_report_in_a_container_matches_the_listing(
        azurite_server: AzureServer, tmp_path: Path) -> None:
    name = azurite_server.container()
    container = azurite_server.service().get_container_client(name)
    for k in KEYS:
        container.upload_blob("data/" + k, body(k))
    for k in ("data/_cleanup/lock", "other/outside.txt"):
        container.upload_blob(k, b"x")
    manifest = write_azure_report(azurite_server, name)
    listed, reported = tmp_path / "listed.parquet", tmp_path / "reported.parquet"
    env = azurite_server.env()
    ok(run_cli(["inventory", f"az://{name}/data/", "-o", str(listed)], env=env))
    ok(run_cli(["inventory", f"az://{name}/data/", "--azure-inventory", manifest, "-o",
                str(reported)], env=env))

    def rows(p: Path) -> list[tuple[object, ...]]:
        return sorted((r["key"], r["size"], r["last_modified"], r["etag"], r["version_id"])
                      for r in pq.read_table(p).to_pylist())

    assert rows(reported) == rows(listed)
    assert [r[0] for r in rows(reported)] == sorted(KEYS)
    r = run_cli(["inventory", f"az://{name}/data/", "--azure-inventory",
                 f"az://{name}/no/rule-manifest.json", "-o", str(tmp_path / "x.parquet")],
                env=env)
    assert_one_line_error(r, 2, "does not exist")


def test_azure_flow_from_an_inventory_report(azurite_server: AzureServer, tmp_path: Path,
                                             keys_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan made from a report-based inventory executes on Azurite: the report's ETags
    are what the executor re-checks."""
    f = azure_flow(azurite_server, tmp_path, keys_dir, monkeypatch,
                   plan_extra=("--region", REGION, "--quarantine", "copy"))
    name = f.store_url.split("/")[2]

    def from_report(*extra: str) -> Run:
        manifest = write_azure_report(azurite_server, name)
        return Scenario.list_store(f, "--azure-inventory", manifest, *extra)

    f.list_store = from_report  # type: ignore[method-assign]
    before = f.listing()
    res = f.run_stage0()
    assert f.read_plan()["inputs"]["inventory"]["source"].startswith("azure-inventory:az://")
    assert res["removed"] == 2
    gone = {k for k in before if k not in f.listing()}
    assert gone == {"data/internal/t/0.parquet", "data/internal/t/with space+%\u00fc.parquet"}


def test_report_times_need_a_zone_and_never_round_up() -> None:
    from cleanup.stores.gcs_inventory import parse_time

    assert parse_time("Wed, 13 May 2026 10:00:05 GMT", "t") == _utc("2026-05-13T10:00:05Z")
    assert parse_time("2026-05-13T12:00:05.9999999+02:00", "t") == _utc(
        "2026-05-13T10:00:05.999999Z")
    for bad in ("2026-05-13T10:00:05", "2026-05-13", "", "13/05/2026 10:00 GMT",
                datetime(2026, 5, 13, 10, 0, 5)):
        with pytest.raises(ValueError, match="zone|time"):
            parse_time(bad, "t")
