"""S3 Inventory reports: manifest, CSV and Parquet data files, scope and refusals.

Every report is generated here, in the layout S3 writes to the destination
bucket: ``<dest>/<prefix>/<source>/<config>/<date>/manifest.json`` and
``<dest>/<prefix>/<source>/<config>/data/<name>``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cleanup.core.paths import StoreRef, parse_store
from cleanup.errors import UsageError
from cleanup.formats import inventory_schema
from cleanup.stores.s3_inventory import (
    InventoryReport,
    decode_csv_key,
    iter_inventory_batches,
    load_manifest,
)

FULL_SCHEMA = ["Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size",
               "LastModifiedDate", "ETag", "StorageClass"]
T0 = "2026-05-14T21:30:00.000Z"
T0_DT = datetime(2026, 5, 14, 21, 30, tzinfo=UTC)
CREATED_MS = "1778794200000"  # 2026-05-14T21:30:00Z
CONFIG_DIR = "inv/src/daily"


@dataclass
class Obj:
    """One inventory row, written with S3 Inventory's field names."""

    key: str
    size: str = "10"
    bucket: str = "src"
    version: str = ""
    latest: str = "true"
    marker: str = "false"
    mtime: str = T0
    etag: str = "d41d8cd98f00b204e9800998ecf8427e"

    def fields(self, encode: Callable[[str], str]) -> dict[str, str]:
        return {"bucket": self.bucket, "key": encode(self.key), "versionid": self.version,
                "islatest": self.latest, "isdeletemarker": self.marker, "size": self.size,
                "lastmodifieddate": self.mtime, "etag": self.etag,
                "storageclass": "STANDARD"}


def form_encode(key: str) -> str:
    """The encoding real CSV reports use: space as '+', a literal '+' as %2B."""
    return quote_plus(key, safe="/")


def norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def csv_gz(rows: Sequence[Obj], schema: Sequence[str],
           encode: Callable[[str], str] = form_encode) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for r in rows:
        f = r.fields(encode)
        w.writerow([f[norm(n)] for n in schema])
    return gzip.compress(buf.getvalue().encode())


def write_report(root: Path, files: Sequence[bytes], *, fmt: str = "CSV",
                 schema: str = ", ".join(FULL_SCHEMA), source: str = "src",
                 ext: str = ".csv.gz", manifest_extra: dict[str, Any] | None = None,
                 checksums: Sequence[str | None] | None = None) -> Path:
    """Write data files and a manifest under ``root/dest``; return the manifest's path."""
    dest = root / "dest"
    entries = []
    for i, data in enumerate(files):
        key = f"{CONFIG_DIR}/data/file-{i}{ext}"
        (dest / key).parent.mkdir(parents=True, exist_ok=True)
        (dest / key).write_bytes(data)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if checksums is not None and checksums[i] is not None:
            md5 = str(checksums[i])
        entries.append({"key": key, "size": len(data), "MD5checksum": md5})
    doc: dict[str, Any] = {
        "sourceBucket": source,
        "destinationBucket": "arn:aws:s3:::dest",
        "version": "2016-11-30",
        "creationTimestamp": CREATED_MS,
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": entries,
        **(manifest_extra or {}),
    }
    mdir = dest / CONFIG_DIR / "2026-05-14T21-30Z"
    mdir.mkdir(parents=True, exist_ok=True)
    manifest = mdir / "manifest.json"
    manifest.write_text(json.dumps(doc, indent=2))
    return manifest


def read_all(report: InventoryReport, store: str | StoreRef, **kw: Any) -> list[dict[str, Any]]:
    ref = store if isinstance(store, StoreRef) else parse_store(store)
    rows: list[dict[str, Any]] = []
    for batch in iter_inventory_batches(report, ref, **kw):
        assert batch.schema.equals(inventory_schema())
        rows += batch.to_pylist()
    return rows


def keys_of(rows: list[dict[str, Any]]) -> list[str]:
    return [r["key"] for r in rows]


# A report with everything the reader must handle.
MIXED = [
    Obj("data/a b.txt", version="v2", etag='"quoted-etag"'),
    Obj("data/a b.txt", version="v1", latest="false", size="999",
        mtime="2020-01-01T00:00:00.000Z"),                              # non-current
    Obj("data/100%.txt", size="0", etag=""),                            # '%', no ETag
    Obj("data/c++/x+y.txt", size="12345678901"),                         # literal '+'
    Obj("data/ünï/日本 語.txt"),                                          # unicode + space
    Obj("data/gone.txt", version="v9", marker="true", size="", etag=""),  # delete marker
    Obj("data/_cleanup/plan.json"),                                      # reserved
    Obj("data/"),                                                        # the prefix itself
    Obj("logs/app.log"),                                                 # outside the prefix
    Obj("data/x.txt", bucket="other"),                                   # another bucket
    Obj("data/deep/_cleanup/not-reserved.txt", mtime="2026-05-14T21:30:00.123Z"),
]
MIXED_EXPECTED = ["a b.txt", "100%.txt", "c++/x+y.txt", "ünï/日本 語.txt",
                  "deep/_cleanup/not-reserved.txt"]


def test_csv_report_with_prefix_store(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz(MIXED, FULL_SCHEMA)])
    report = load_manifest(str(manifest))
    assert report.source_bucket == "src"
    assert report.file_format == "CSV"
    assert report.created_at == T0_DT
    assert report.data_files == [str(tmp_path / "dest" / CONFIG_DIR / "data" / "file-0.csv.gz")]

    rows = read_all(report, "s3://src/data/")
    assert keys_of(rows) == MIXED_EXPECTED
    first = rows[0]
    assert first == {"key": "a b.txt", "size": 10, "last_modified": T0_DT,
                     "etag": "quoted-etag", "version_id": "v2", "key_raw": None}
    assert (rows[1]["etag"], rows[1]["size"], rows[1]["version_id"]) == (None, 0, None)
    assert rows[2]["size"] == 12345678901
    assert rows[4]["last_modified"] == T0_DT.replace(microsecond=123000)


def test_csv_report_whole_bucket(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz(MIXED, FULL_SCHEMA)])
    rows = read_all(load_manifest(str(manifest)), "s3://src")
    assert keys_of(rows) == ["data/a b.txt", "data/100%.txt", "data/c++/x+y.txt",
                             "data/ünï/日本 語.txt", "data/_cleanup/plan.json", "data/",
                             "logs/app.log", "data/deep/_cleanup/not-reserved.txt"]


def test_root_cleanup_prefix_is_reserved(tmp_path: Path) -> None:
    rows_in = [Obj("_cleanup/lock"), Obj("_cleanup/audit/log.jsonl"), Obj("_cleanupx")]
    manifest = write_report(tmp_path, [csv_gz(rows_in, FULL_SCHEMA)])
    assert keys_of(read_all(load_manifest(str(manifest)), "s3://src/")) == ["_cleanupx"]


def test_csv_percent_encoding_is_read_too(tmp_path: Path) -> None:
    """RFC 3986 encoding (spaces as %20, '+' as %2B) decodes to the same keys."""
    manifest = write_report(tmp_path, [csv_gz(MIXED, FULL_SCHEMA,
                                              encode=lambda k: quote(k, safe="/"))])
    assert keys_of(read_all(load_manifest(str(manifest)), "s3://src/data/")) == MIXED_EXPECTED


def test_csv_columns_in_another_order_and_spelling(tmp_path: Path) -> None:
    schema = ["size", " E_Tag", "KEY", "IsLatest", "StorageClass", "bucket",
              "Last_Modified_Date", "IsDeleteMarker", "versionId"]
    manifest = write_report(tmp_path, [csv_gz(MIXED, schema)], schema=",".join(schema))
    rows = read_all(load_manifest(str(manifest)), "s3://src/data/")
    assert keys_of(rows) == MIXED_EXPECTED
    assert (rows[0]["etag"], rows[0]["version_id"]) == ("quoted-etag", "v2")


def test_current_versions_only_report(tmp_path: Path) -> None:
    """Without VersionId/IsLatest/IsDeleteMarker every row is a current object."""
    schema = ["Bucket", "Key", "Size", "LastModifiedDate", "ETag"]
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a"), Obj("data/b")], schema)],
                            schema=", ".join(schema))
    rows = read_all(load_manifest(str(manifest)), "s3://src/data/")
    assert keys_of(rows) == ["a", "b"]
    assert {r["version_id"] for r in rows} == {None}


def test_many_files_rebatched(tmp_path: Path) -> None:
    files = [csv_gz([Obj(f"data/f{i}/k{j:02d}") for j in range(25)], FULL_SCHEMA)
             for i in range(3)]
    manifest = write_report(tmp_path, files)
    batches = list(iter_inventory_batches(load_manifest(str(manifest)),
                                          parse_store("s3://src/data/"), batch_rows=10))
    assert [b.num_rows for b in batches] == [10] * 7 + [5]
    keys = [k for b in batches for k in b.column("key").to_pylist()]
    assert keys == [f"f{i}/k{j:02d}" for i in range(3) for j in range(25)]


def test_empty_data_file(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [gzip.compress(b""), csv_gz([Obj("data/a")], FULL_SCHEMA)])
    assert keys_of(read_all(load_manifest(str(manifest)), "s3://src/data/")) == ["a"]


def test_creation_timestamp_example_from_the_docs(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [], manifest_extra={"creationTimestamp": "1514944800000"})
    report = load_manifest(str(manifest))
    assert report.created_at == datetime(2018, 1, 3, 2, 0, tzinfo=UTC)
    assert report.created_at.tzinfo is UTC
    assert read_all(report, "s3://src/") == []


# --------------------------------------------------------------------------- Parquet


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def inventory_table(objs: Sequence[Obj], ts_type: Any = None) -> pa.Table:
    """A table with the documented Parquet inventory columns (keys NOT URL-encoded)."""
    ts_type = ts_type or pa.timestamp("ms", tz="UTC")

    def ts(text: str) -> datetime:
        return datetime.fromisoformat(text)

    def opt(text: str) -> str | None:
        return text or None

    return pa.table({
        "bucket": pa.array([o.bucket for o in objs], pa.string()),
        "key": pa.array([o.key for o in objs], pa.string()),
        "version_id": pa.array([opt(o.version) for o in objs], pa.string()),
        "is_latest": pa.array([o.latest == "true" for o in objs], pa.bool_()),
        "is_delete_marker": pa.array([o.marker == "true" for o in objs], pa.bool_()),
        "size": pa.array([int(o.size) if o.size else None for o in objs], pa.int64()),
        "last_modified_date": pa.array(
            [ts(o.mtime) if ts_type.tz else ts(o.mtime).replace(tzinfo=None) for o in objs],
            ts_type),
        "e_tag": pa.array([opt(o.etag) for o in objs], pa.string()),
        "storage_class": pa.array(["STANDARD"] * len(objs), pa.string()),
    })


PARQUET_SCHEMA = ("message s3.inventory { required binary bucket (UTF8); required binary key "
                  "(UTF8); optional binary version_id (UTF8); optional boolean is_latest; "
                  "optional boolean is_delete_marker; optional int64 size; optional int64 "
                  "last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); "
                  "optional binary storage_class (UTF8);}")


def test_parquet_report(tmp_path: Path) -> None:
    objs = [*MIXED, Obj("data/100%25 literal"), Obj("data/plus+means+plus")]
    manifest = write_report(tmp_path, [parquet_bytes(inventory_table(objs))], fmt="Parquet",
                            schema=PARQUET_SCHEMA, ext=".parquet")
    report = load_manifest(str(manifest))
    assert report.file_format == "Parquet"
    rows = read_all(report, "s3://src/data/")
    # Parquet keys are not URL-encoded: '%25' and '+' stay as they are.
    assert keys_of(rows) == [*MIXED_EXPECTED, "100%25 literal", "plus+means+plus"]
    assert rows[0] == {"key": "a b.txt", "size": 10, "last_modified": T0_DT,
                       "etag": "quoted-etag", "version_id": "v2", "key_raw": None}
    assert rows[1]["etag"] is None


def test_parquet_case_insensitive_fileformat_and_small_batches(tmp_path: Path) -> None:
    objs = [Obj(f"data/k{i:03d}") for i in range(50)]
    manifest = write_report(tmp_path, [parquet_bytes(inventory_table(objs))] * 2,
                            fmt="parquet", schema=PARQUET_SCHEMA, ext=".parquet")
    batches = list(iter_inventory_batches(load_manifest(str(manifest)),
                                          parse_store("s3://src/data/"), batch_rows=16))
    assert sum(b.num_rows for b in batches) == 100
    assert all(b.num_rows == 16 for b in batches[:-1])


def test_parquet_timestamp_without_zone_refused(tmp_path: Path) -> None:
    table = inventory_table([Obj("data/a")], ts_type=pa.timestamp("ms"))
    manifest = write_report(tmp_path, [parquet_bytes(table)], fmt="Parquet",
                            schema=PARQUET_SCHEMA, ext=".parquet")
    with pytest.raises(UsageError, match="not a UTC timestamp") as exc:
        read_all(load_manifest(str(manifest)), "s3://src/")
    assert exc.value.hint


# --------------------------------------------------------------------------- refusals


def test_checksum_mismatch_refused_before_any_row(tmp_path: Path) -> None:
    good = csv_gz([Obj("data/a")], FULL_SCHEMA)
    manifest = write_report(tmp_path, [good, good], checksums=[None, "0" * 32])
    batches = iter_inventory_batches(load_manifest(str(manifest)), parse_store("s3://src/"),
                                     batch_rows=1)
    assert next(batches).num_rows == 1  # the first file is fine
    with pytest.raises(UsageError, match="does not match the manifest's MD5checksum") as exc:
        next(batches)
    assert "copy the report again" in (exc.value.hint or "")


def test_size_mismatch_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a")], FULL_SCHEMA)])
    doc = json.loads(manifest.read_text())
    doc["files"][0]["size"] += 1
    manifest.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="the manifest says"):
        read_all(load_manifest(str(manifest)), "s3://src/")


def test_orc_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [b"ORC"], fmt="ORC", ext=".orc",
                            schema="struct<bucket:string,key:string>")
    with pytest.raises(UsageError, match="ORC reports are not supported yet") as exc:
        load_manifest(str(manifest))
    assert "CSV or Parquet" in (exc.value.hint or "")


def test_unknown_format_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [], fmt="JSON")
    with pytest.raises(UsageError, match="unknown fileFormat 'JSON'"):
        load_manifest(str(manifest))


def test_source_bucket_mismatch_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a")], FULL_SCHEMA)])
    report = load_manifest(str(manifest))
    with pytest.raises(UsageError, match="is for bucket 'src', but the store is in bucket "
                                         "'elsewhere'") as exc:
        read_all(report, "s3://elsewhere/data/")
    assert "s3://src/data/" in (exc.value.hint or "")


def test_local_store_refused(tmp_path: Path) -> None:
    report = load_manifest(str(write_report(tmp_path, [])))
    with pytest.raises(UsageError, match="describes an S3 bucket"):
        read_all(report, str(tmp_path))


def test_missing_data_file_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a")], FULL_SCHEMA)])
    (tmp_path / "dest" / CONFIG_DIR / "data" / "file-0.csv.gz").unlink()
    with pytest.raises(UsageError, match="file-0.csv.gz listed in .* was not found") as exc:
        load_manifest(str(manifest))
    assert "layout" in (exc.value.hint or "")


def test_missing_manifest_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_manifest(str(tmp_path / "manifest.json"))
    with pytest.raises(UsageError, match="is a directory"):
        load_manifest(str(tmp_path))


@pytest.mark.parametrize(("content", "needle"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"destinationBucket": "arn:aws:s3:::d"}), "no sourceBucket"),
    (json.dumps({"sourceBucket": "s", "destinationBucket": "arn:aws:s3:::d",
                 "creationTimestamp": "yesterday"}), "creationTimestamp 'yesterday'"),
    (json.dumps({"sourceBucket": "s", "destinationBucket": "arn:aws:s3:::d",
                 "creationTimestamp": "1", "fileFormat": "CSV",
                 "fileSchema": "Key, Size, LastModifiedDate"}), "has no files list"),
])
def test_invalid_manifest_refused(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=needle) as exc:
        load_manifest(str(path))
    assert exc.value.hint
    assert "\n" not in str(exc.value)


def test_manifest_checksum_checked(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [])
    checksum = manifest.with_name("manifest.checksum")
    checksum.write_text(hashlib.md5(manifest.read_bytes(), usedforsecurity=False).hexdigest())
    load_manifest(str(manifest))
    checksum.write_text("0" * 32)
    with pytest.raises(UsageError, match="does not match its manifest.checksum"):
        load_manifest(str(manifest))


@pytest.mark.parametrize("drop", ["Key", "Size", "LastModifiedDate"])
def test_csv_without_required_column_refused(tmp_path: Path, drop: str) -> None:
    schema = [n for n in FULL_SCHEMA if n != drop]
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a")], schema)],
                            schema=", ".join(schema))
    with pytest.raises(UsageError, match=f"the CSV report has no {drop} column") as exc:
        load_manifest(str(manifest))
    assert exc.value.hint


def test_csv_not_matching_file_schema_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a")], FULL_SCHEMA)],
                            schema="Bucket, Key, Size, LastModifiedDate")
    with pytest.raises(UsageError, match="does not match the manifest's fileSchema"):
        read_all(load_manifest(str(manifest)), "s3://src/")


def test_bad_url_encoding_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("data/100%zz")], FULL_SCHEMA,
                                              encode=lambda k: k)])
    with pytest.raises(UsageError, match="not URL-encoded as S3 Inventory writes it"):
        read_all(load_manifest(str(manifest)), "s3://src/")


def test_live_object_without_size_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("data/a", size="")], FULL_SCHEMA)])
    with pytest.raises(UsageError, match="object 'data/a' has no size"):
        read_all(load_manifest(str(manifest)), "s3://src/")


def test_time_without_zone_refused(tmp_path: Path) -> None:
    manifest = write_report(tmp_path, [csv_gz([Obj("a", mtime="2026-05-14T21:30:00")],
                                              FULL_SCHEMA)])
    with pytest.raises(UsageError, match="not an ISO 8601 time with a zone"):
        read_all(load_manifest(str(manifest)), "s3://src/")


# --------------------------------------------------------------------------- s3:// manifests


class FakeS3:
    """Just enough of an S3 client: get_object over a dict, NoSuchKey otherwise."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets: list[str] = []

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.gets.append(f"s3://{Bucket}/{Key}")
        try:
            return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}
        except KeyError:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "not found"}},
                              "GetObject") from None


def upload_tree(fake: FakeS3, root: Path, bucket: str) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fake.objects[(bucket, p.relative_to(root).as_posix())] = p.read_bytes()


def test_s3_manifest(tmp_path: Path) -> None:
    write_report(tmp_path, [csv_gz(MIXED, FULL_SCHEMA)])
    fake = FakeS3()
    upload_tree(fake, tmp_path / "dest", "dest")
    url = f"s3://dest/{CONFIG_DIR}/2026-05-14T21-30Z/manifest.json"
    report = load_manifest(url, s3_client=fake)
    assert report.data_files == [f"s3://dest/{CONFIG_DIR}/data/file-0.csv.gz"]
    assert keys_of(read_all(report, "s3://src/data/", s3_client=fake)) == MIXED_EXPECTED

    del fake.objects[("dest", f"{CONFIG_DIR}/data/file-0.csv.gz")]
    with pytest.raises(UsageError, match="inventory data file s3://dest/.* does not exist"):
        read_all(report, "s3://src/data/", s3_client=fake)
    with pytest.raises(UsageError, match="inventory manifest s3://dest/nope.json does not"):
        load_manifest("s3://dest/nope.json", s3_client=fake)


def test_s3_data_file_checksum_mismatch(tmp_path: Path) -> None:
    write_report(tmp_path, [csv_gz([Obj("data/a")], FULL_SCHEMA)], checksums=["f" * 32])
    fake = FakeS3()
    upload_tree(fake, tmp_path / "dest", "dest")
    report = load_manifest(f"s3://dest/{CONFIG_DIR}/2026-05-14T21-30Z/manifest.json",
                           s3_client=fake)
    with pytest.raises(UsageError, match="MD5checksum"):
        read_all(report, "s3://src/", s3_client=fake)


# --------------------------------------------------------------------------- properties

KEY_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"], min_codepoint=0x20),
    min_size=1, max_size=40,
).filter(lambda k: not k.startswith("_cleanup/"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.lists(KEY_TEXT, min_size=1, max_size=20, unique=True))
@example(keys=["a b", "a+b", "a%20b", "100%", "%2B", "+ +", " ", "ü/日本", "x/_cleanup/y"])
def test_url_encoded_csv_keys_round_trip(keys: list[str]) -> None:
    """quote(k, safe='/') written to a CSV report reads back as k."""
    with tempfile.TemporaryDirectory() as d:
        manifest = write_report(Path(d), [csv_gz([Obj(k) for k in keys], FULL_SCHEMA,
                                                 encode=lambda k: quote(k, safe="/"))])
        assert keys_of(read_all(load_manifest(str(manifest)), "s3://src/")) == keys


@given(key=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_decode_csv_key_inverts_both_encodings(key: str) -> None:
    assert decode_csv_key(quote(key, safe="/")) == key
    assert decode_csv_key(quote_plus(key, safe="/")) == key


def test_import_is_cheap() -> None:
    code = ("import sys, cleanup.stores.s3_inventory; "
            "print(sorted(m for m in ('pyarrow', 'boto3', 'botocore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
