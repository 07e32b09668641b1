"""Azure Blob Storage end to end against a real Azurite (blob service) on 127.0.0.1:
listing, reference spellings (az://, abfs[s]://, wasb[s]://, HTTPS), the declared region,
and the flow plan -> sign-off -> execute stage 0 -> restore -> purge in the copy and none
quarantine modes.

Azurite honours If-None-Match: * (lock, restore), If-Match (delete) and
x-ms-source-if-match (quarantine copy). It does not implement blob versioning (no
version ids), soft-delete restore or Blob Inventory reports, and the blob API does not
report an account's location: the ``versioning`` mode is refused for az:// stores and
the region is the one declared at plan time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup.core.paths import parse_store, resolve_ref
from cleanup.formats import read_meta
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli
from tests.scenario import ok
from tests.servers import AZURITE_ACCOUNT, AzureServer
from tests.test_gcs import KEYS, CloudFlow, body

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
