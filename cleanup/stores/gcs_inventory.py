"""Read Google Cloud Storage "Storage Insights" inventory reports (manifest + CSV or
Parquet shards) as a listing source, and the parts that Azure Blob Inventory reports
share with them (:mod:`cleanup.stores.azure_inventory`).

Format, from Google's documentation ("Inventory reports" / "Storage Insights inventory
reports", https://cloud.google.com/storage/docs/insights/inventory-reports, and the
ReportDetail resource, https://cloud.google.com/storage/docs/insights/v1/reportDetail):

* A report config (``report_config``) names the source bucket
  (``object_metadata_report_options.storage_filters.bucket``), the destination
  (``storage_destination_options.bucket`` / ``destination_path``), the metadata fields
  (``object_metadata_report_options.metadata_fields``: ``project``, ``bucket``, ``name``,
  ``size``, ``updated``, ``timeCreated``, ``md5Hash``, ``crc32c``, ``etag``,
  ``generation``, ``metageneration``, ``storageClass``, ...) and the format
  (``csv_options`` with ``delimiter``, ``record_separator``, ``header_required``; or
  ``parquet_options``).
* Each run writes its shards at ``gs://DEST/DEST_PATH/REPORT_CONFIG_ID_SNAPSHOT_TIME_N.csv``
  (or ``.parquet``) and, when all shards are written, a manifest
  ``REPORT_CONFIG_ID_SNAPSHOT_TIME_manifest.json`` beside them holding ``report_config``,
  ``records_processed``, ``snapshot_time`` ("all the data in an inventory report is
  captured at the snapshot"), ``shard_count`` and ``report_shards_file_names``.

Decisions (each errs towards *not* listing an object, as for S3 Inventory):

* Only a manifest is accepted (a shard alone cannot prove that it is the whole report).
  ``shard_count`` must equal the number of shard names, every shard must exist, and the
  rows read must add up to ``records_processed``: a missing or truncated shard is refused.
* The source bucket is the report config's ``storage_filters.bucket`` and must be the
  store's bucket; a ``bucket`` column, when present, must agree row by row (other
  buckets' rows are left out).
* ``name`` is the exact object name (CSV quoting only, no URL encoding). Rows outside the
  store's prefix, the prefix itself and keys under ``_cleanup/`` are left out.
* ``etag`` in the inventory is what :class:`cleanup.stores.gcs.GCSStore` lists: the hex of
  ``md5Hash`` (base64 in the report); an object without an MD5 (composite) keeps the
  report's ``etag``; a report without ``md5Hash`` records no etag (the executor still
  checks size and, with ``generation`` in the report, the generation).
* ``updated`` must carry a zone (RFC 3339); Parquet timestamps must be UTC-adjusted.
  Precision 1 ms, as for a live listing.
* Rows with a non-empty ``timeDeleted`` (soft-deleted objects) are not objects.
* Duplicate rows of one name are dropped when identical and refused when they differ.

``listed_at`` is ``snapshot_time`` by Google's clock (clock ``gcs-inventory``); the report
may be days old, which is safe because the executor re-checks size, MD5 and generation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cleanup.core.paths import StoreRef, is_reserved
from cleanup.errors import StoreError, UsageError
from cleanup.formats import inventory_schema
from cleanup.stores.base import ListingMeta

if TYPE_CHECKING:
    import pyarrow as pa

_CHUNK = 1 << 20
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?"
                  r"(Z|z|[+-]\d{2}:?\d{2})$")


def norm(name: str) -> str:
    """``"Last-Modified"`` -> ``"lastmodified"``: case, ``-``, ``_`` and space insensitive."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# --------------------------------------------------------------------------- values


def parse_time(value: object, what: str) -> datetime:
    """A report time: an aware datetime, ISO 8601 / RFC 3339 text with a zone (fractions
    beyond microseconds truncated, which is never later than the write), or an RFC 1123
    HTTP date (``Wed, 26 May 2021 13:25:36 GMT``). Anything without a zone is refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what}: time {value.isoformat()} has no zone")
        return value.astimezone(UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}: no time")
    text = value.strip()
    m = _ISO.match(text)
    if m:
        date, clock, frac, zone = m.groups()
        frac = (frac or "")[:6].ljust(6, "0")
        zone = "+00:00" if zone in ("Z", "z") else zone
        if ":" not in zone:
            zone = f"{zone[:3]}:{zone[3:]}"
        try:
            return datetime.fromisoformat(f"{date}T{clock}.{frac}{zone}").astimezone(UTC)
        except ValueError:
            raise ValueError(f"{what}: {text!r} is not a valid time") from None
    if text.endswith(" GMT"):
        try:
            return parsedate_to_datetime(text).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{what}: {text!r} is not an ISO 8601 time with a zone")


def parse_size(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"{what}: size {value!r} is not a whole number of bytes")


def parse_flag(value: object, what: str) -> bool:
    """``true``/``false`` (any case, or a Parquet boolean); empty is false."""
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{what}: {value!r} is not true or false")


def text_or_none(value: object) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def md5_base64_to_hex(value: str, what: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: md5Hash {value!r} is not base64") from None
    if len(raw) != 16:
        raise ValueError(f"{what}: md5Hash {value!r} is not an MD5")
    return raw.hex()


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class RowSpec:
    """How one provider's report rows become inventory rows.

    Names are normalized (:func:`norm`). ``name_prefix`` is what every full name starts
    with before the store's own prefix (Azure: ``container/``). ``skip_if_true`` /
    ``keep_only_true`` / ``skip_if_set`` are flag columns applied when present.
    """

    provider: str
    key: str
    size: str
    mtime: str
    etag: str | None = None
    md5_b64: str | None = None
    version: str | None = None
    bucket: str | None = None
    skip_if_true: tuple[str, ...] = ()
    keep_only_true: tuple[str, ...] = ()
    skip_if_set: tuple[str, ...] = ()
    name_prefix: str = ""
    hint: str = ""

    def wanted(self) -> set[str]:
        cols = {self.key, self.size, self.mtime, *self.skip_if_true, *self.keep_only_true,
                *self.skip_if_set}
        cols.update(c for c in (self.etag, self.md5_b64, self.version, self.bucket) if c)
        return cols


class Deduper:
    """Reports may hold a row twice (Azure says so). A repeat of the same key is dropped
    when it says the same thing, and refused when it does not. Keeps 16 bytes per key."""

    def __init__(self) -> None:
        self._seen: dict[bytes, bytes] = {}

    def first(self, key: str, row: tuple[object, ...], where: str) -> bool:
        k = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        v = hashlib.blake2b(repr(row).encode(), digest_size=16).digest()
        old = self._seen.get(k)
        if old is None:
            self._seen[k] = v
            return True
        if old != v:
            raise UsageError(f"{where}: object {key!r} is listed twice with different "
                             "metadata", hint="use a complete, unmodified report")
        return False


def convert(batch: Any, spec: RowSpec, store: StoreRef, bucket: str, loc: str,
            dedupe: Deduper) -> pa.RecordBatch | None:
    """One batch of raw report rows -> inventory rows of ``store`` (or None if none)."""
    import pyarrow as pa

    names = {norm(n): n for n in batch.schema.names}
    data = {c: batch.column(names[c]).to_pylist() for c in spec.wanted() if c in names}
    full_prefix = spec.name_prefix + store.prefix
    plen = len(full_prefix)
    out: dict[str, list[Any]] = {n: [] for n in inventory_schema().names}
    for i, name in enumerate(data[spec.key]):
        if not isinstance(name, str) or not name.startswith(full_prefix):
            continue
        rel = name[plen:]
        if not rel or is_reserved(rel):
            continue
        where = f"inventory data file {loc}, object {name!r}"
        try:
            if spec.bucket and spec.bucket in data and data[spec.bucket][i] not in (None, ""):
                if data[spec.bucket][i] != bucket:
                    continue
            if any(parse_flag(data[c][i], where) for c in spec.skip_if_true if c in data):
                continue
            if any(not parse_flag(data[c][i], where) for c in spec.keep_only_true
                   if c in data):
                continue
            if any(text_or_none(data[c][i]) for c in spec.skip_if_set if c in data):
                continue
            size = parse_size(data[spec.size][i], where)
            mtime = parse_time(data[spec.mtime][i], where)
            etag = None
            if spec.md5_b64 and spec.md5_b64 in data:
                md5 = text_or_none(data[spec.md5_b64][i])
                if md5:
                    etag = md5_base64_to_hex(md5, where)
                elif spec.etag and spec.etag in data:  # composite: no MD5
                    etag = text_or_none(data[spec.etag][i])
            elif spec.etag and spec.etag in data and not spec.md5_b64:
                etag = text_or_none(data[spec.etag][i])
            if etag is not None:
                etag = etag.strip('"') or None
            version = text_or_none(data[spec.version][i]) if spec.version in data else None
        except ValueError as exc:
            raise UsageError(str(exc), hint=spec.hint) from None
        if not dedupe.first(rel, (size, mtime, etag, version), f"inventory data file {loc}"):
            continue
        out["key"].append(rel)
        out["key_raw"].append(None)
        out["size"].append(size)
        out["last_modified"].append(mtime)
        out["etag"].append(etag)
        out["version_id"].append(version)
    if not out["key"]:
        return None
    return pa.RecordBatch.from_pydict(out, schema=inventory_schema())


# --------------------------------------------------------------------------- files


def read_batches(fh: IO[bytes], fmt: str, loc: str, *, header: bool,
                 columns: Sequence[str] | None, delimiter: str = ",",
                 batch_rows: int = 65536) -> Iterator[Any]:
    """Raw batches of one data file: CSV (every column text; the first row is the header
    when ``header``, else ``columns`` name the columns) or Parquet."""
    import pyarrow as pa

    if fmt == "Parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(fh)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UsageError(f"inventory data file {loc} is not a readable Parquet file "
                             f"({exc})", hint="check the report's format") from None
        yield from pf.iter_batches(batch_size=batch_rows)
        return
    import pyarrow.csv as pacsv

    head = fh.read(1)
    fh.seek(0)
    if not head:
        return
    ro = pacsv.ReadOptions(block_size=_CHUNK,
                           column_names=None if header else list(columns or []))
    try:
        reader = pacsv.open_csv(
            pa.PythonFile(fh, mode="r"), read_options=ro,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"',
                                              double_quote=True, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False,
                                                 column_types=_all_text(fh, header, columns,
                                                                        delimiter)))
        if header and columns is not None:
            got = {norm(n) for n in reader.schema.names}
            if got != {norm(c) for c in columns}:
                raise UsageError(f"inventory data file {loc}: header "
                                 f"{','.join(reader.schema.names)} does not match the "
                                 f"manifest's fields {','.join(columns)}",
                                 hint="use the manifest delivered with these data files")
        yield from reader
    except pa.ArrowInvalid as exc:
        raise UsageError(f"inventory data file {loc} is not the CSV the manifest describes "
                         f"({str(exc).splitlines()[0]})",
                         hint="use the manifest delivered with these data files") from None


def _all_text(fh: IO[bytes], header: bool, columns: Sequence[str] | None,
              delimiter: str) -> dict[str, Any]:
    """Column types that keep every CSV column as text (sizes and times are parsed here)."""
    import csv
    import io

    import pyarrow as pa

    if not header:
        return {c: pa.string() for c in columns or []}
    first = fh.readline(1 << 20)
    fh.seek(0)
    names = next(csv.reader(io.StringIO(first.decode("utf-8", "replace")),
                            delimiter=delimiter), [])
    return {n: pa.string() for n in names}


def check_columns(names: Sequence[str], spec: RowSpec, where: str) -> None:
    have = {norm(n) for n in names}
    missing = [c for c in (spec.key, spec.size, spec.mtime) if c not in have]
    if missing:
        raise UsageError(f"{where} has no {', '.join(missing)} field "
                         f"(fields: {', '.join(names)})", hint=spec.hint)
    dupes = sorted({n for n in names if [norm(m) for m in names].count(norm(n)) > 1})
    if dupes:
        raise UsageError(f"{where} names {', '.join(dupes)} more than once", hint=spec.hint)


@contextmanager
def spooled(fetch: Callable[[IO[bytes]], None]) -> Iterator[IO[bytes]]:
    """A temporary file filled by ``fetch`` (a remote data file, read before parsing)."""
    fh: IO[bytes] = tempfile.TemporaryFile(prefix="cleanup-inventory-")
    try:
        fetch(fh)
        fh.flush()
        fh.seek(0)
        yield fh
    finally:
        fh.close()


def open_local(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"inventory data file {path} does not exist",
                         hint="copy the whole report (manifest and every data file)") from None
    except OSError as exc:
        raise UsageError(f"inventory data file {path}: cannot read ({exc.strerror})",
                         hint="check that the report was copied completely") from None


def read_local_manifest(manifest: str) -> bytes:
    try:
        return Path(manifest).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"inventory manifest {manifest}: no such file",
                         hint="give the path of the report's manifest JSON") from None
    except IsADirectoryError:
        raise UsageError(f"inventory manifest {manifest} is a directory",
                         hint="give the manifest JSON file itself") from None
    except OSError as exc:
        raise UsageError(f"inventory manifest {manifest}: cannot read ({exc.strerror})",
                         hint="check the path and its permissions") from None


def load_json(raw: bytes, manifest: str, hint: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"inventory manifest {manifest} is not valid JSON ({exc})",
                         hint=hint) from None
    if not isinstance(doc, dict):
        raise UsageError(f"inventory manifest {manifest} is not a JSON object", hint=hint)
    return doc


def rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    from cleanup.stores.s3_inventory import _rebatch

    return _rebatch(batches, rows)


# --------------------------------------------------------------------------- GCS

GCS_HINT = ("use the manifest and shards that the inventory report config wrote, unchanged; "
            "the config needs the name, size and updated fields (md5Hash and generation "
            "recommended)")
GCS_SPEC = RowSpec(provider="gcs", key="name", size="size", mtime="updated", etag="etag",
                   md5_b64="md5hash", version="generation", bucket="bucket",
                   skip_if_set=("timedeleted",), hint=GCS_HINT)


@dataclass(frozen=True)
class GCSReport:
    """One Storage Insights inventory report, as its manifest describes it. ``shards`` are
    local paths or ``gs://`` URLs."""

    manifest: str
    source_bucket: str
    snapshot_time: datetime
    file_format: str
    shards: list[str]
    fields: list[str]
    records_processed: int | None
    header: bool = True
    delimiter: str = ","
    extra: dict[str, Any] = field(default_factory=dict)


def _gcs_split(url: str) -> tuple[str, str]:
    bucket, _, name = url[len("gs://"):].partition("/")
    if not bucket or not name:
        raise UsageError(f"{url!r} is not a gs://bucket/object URL",
                         hint="give the manifest as gs://bucket/path/..._manifest.json")
    return bucket, name


def _gcs_fetch(client: Any, url: str, what: str) -> Callable[[IO[bytes]], None]:
    from cleanup.stores.gcs import api_errors, unusable_error

    bucket, name = _gcs_split(url)

    def fetch(fh: IO[bytes]) -> None:
        from google.api_core import exceptions as gx

        try:
            client.bucket(bucket).blob(name).download_to_file(fh, raw_download=True)
        except gx.NotFound:
            raise UsageError(f"{what} {url} does not exist",
                             hint="check the path (and that the report run has finished)",
                             ) from None
        except gx.Forbidden as exc:
            raise UsageError(f"reading {what} {url} was denied ({exc})",
                             hint="grant storage.objects.get on the destination bucket",
                             ) from None
        except api_errors() as exc:
            err = unusable_error(exc, what, None)
            if err is not None:
                raise err from None
            raise StoreError(f"reading {what} {url} failed ({exc})") from None

    return fetch


def _dig(doc: Mapping[str, Any], *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def load_gcs_manifest(manifest: str, *, client: Any | None = None) -> GCSReport:
    """Read and check a Storage Insights manifest (a local path or ``gs://`` URL)."""
    if manifest.startswith("gs://"):
        with spooled(_gcs_fetch(client, manifest, "inventory manifest")) as fh:
            raw = fh.read()
    else:
        raw = read_local_manifest(manifest)
    doc = load_json(raw, manifest, GCS_HINT)
    where = f"inventory manifest {manifest}"
    config = doc.get("report_config")
    if not isinstance(config, dict):
        raise UsageError(f"{where} has no report_config",
                         hint="give the ..._manifest.json of a Storage Insights inventory "
                              "report (not a shard)")
    try:
        snap = parse_time(doc.get("snapshot_time"), where)
    except ValueError as exc:
        raise UsageError(f"{where}: snapshot_time: {exc}", hint=GCS_HINT) from None
    source = _dig(config, "object_metadata_report_options", "storage_filters", "bucket")
    if not isinstance(source, str) or not source:
        raise UsageError(f"{where}: report_config names no source bucket "
                         "(object_metadata_report_options.storage_filters.bucket)",
                         hint=GCS_HINT)
    fields = _dig(config, "object_metadata_report_options", "metadata_fields")
    if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
        raise UsageError(f"{where}: report_config has no metadata_fields list", hint=GCS_HINT)
    check_columns(fields, GCS_SPEC, f"{where}: the report")
    names = doc.get("report_shards_file_names")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UsageError(f"{where} has no report_shards_file_names list", hint=GCS_HINT)
    if len(set(names)) != len(names):
        raise UsageError(f"{where} lists a shard twice", hint=GCS_HINT)
    count = doc.get("shard_count")
    if count is not None and count != len(names):
        raise UsageError(f"{where}: shard_count is {count!r} but {len(names)} shards are "
                         "named", hint="the manifest is damaged or edited: use the one the "
                                       "report wrote")
    records = doc.get("records_processed")
    if records is not None and (not isinstance(records, int) or isinstance(records, bool)
                                or records < 0):
        raise UsageError(f"{where}: records_processed {records!r} is not a count",
                         hint=GCS_HINT)
    csv_opts, parquet_opts = config.get("csv_options"), config.get("parquet_options")
    exts = {os.path.splitext(n)[1].lower() for n in names}
    if parquet_opts is not None or (csv_opts is None and exts == {".parquet"}):
        fmt = "Parquet"
    elif csv_opts is not None or exts <= {".csv"}:
        fmt = "CSV"
    else:
        raise UsageError(f"{where}: cannot tell the report's format (no csv_options or "
                         "parquet_options)", hint=GCS_HINT)
    header, delimiter = True, ","
    if fmt == "CSV" and isinstance(csv_opts, dict):
        header = bool(csv_opts.get("header_required", True))
        delimiter = csv_opts.get("delimiter") or ","
        sep = csv_opts.get("record_separator") or "\n"
        if len(delimiter) != 1 or sep not in ("\n", "\r\n"):
            raise UsageError(f"{where}: CSV delimiter {delimiter!r} / record separator "
                             f"{sep!r} cannot be read", hint="configure the report with a "
                                                             "one-character delimiter and "
                                                             "\\n records")
    if manifest.startswith("gs://"):
        dest, mname = _gcs_split(manifest)
        base = mname.rsplit("/", 1)[0] + "/" if "/" in mname else ""
        shards = [f"gs://{dest}/{n}" if "/" in n else f"gs://{dest}/{base}{n}" for n in names]
    else:
        mdir = Path(os.path.abspath(manifest)).parent
        shards = [_local_shard(mdir, n, where) for n in names]
    return GCSReport(manifest=manifest, source_bucket=source, snapshot_time=snap,
                     file_format=fmt, shards=shards, fields=list(fields),
                     records_processed=records, header=header, delimiter=delimiter)


def _local_shard(mdir: Path, name: str, where: str) -> str:
    """A shard beside the manifest or, for a name with a path, the first match walking up
    from it (a report copied with its bucket layout)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise UsageError(f"{where} names a shard {name!r} that is not a relative path",
                         hint=GCS_HINT)
    for d in (mdir, *mdir.parents):
        if (d / rel).is_file():
            return str(d / rel)
        if len(rel.parts) == 1:
            break
    raise UsageError(f"shard {name} listed in {where} was not found beside it",
                     hint="copy the whole report (the manifest and every shard) into one "
                          "directory")


def iter_gcs_batches(report: GCSReport, store: StoreRef, *, client: Any | None = None,
                     batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """The report's objects in ``store`` as inventory batches (see the module docstring)."""
    if store.cloud != "gcs":
        raise UsageError(f"a Storage Insights report describes a GCS bucket, not {store.url}",
                         hint="give the store as gs://bucket/prefix/")
    if report.source_bucket != store.bucket:
        raise UsageError(f"inventory report {report.manifest} is for bucket "
                         f"{report.source_bucket!r}, but the store is in bucket "
                         f"{store.bucket!r}",
                         hint=f"use a report of gs://{store.bucket}/ or the store "
                              f"gs://{report.source_bucket}/{store.prefix}")
    dedupe = Deduper()

    def raw() -> Iterator[pa.RecordBatch]:
        rows = 0
        for loc in report.shards:
            opener = (spooled(_gcs_fetch(client, loc, "inventory shard"))
                      if loc.startswith("gs://") else _closing(open_local(loc)))
            with opener as fh:
                for b in read_batches(fh, report.file_format, loc, header=report.header,
                                      columns=report.fields, delimiter=report.delimiter,
                                      batch_rows=batch_rows):
                    rows += b.num_rows
                    if report.file_format == "Parquet":
                        check_columns(b.schema.names, GCS_SPEC, f"inventory data file {loc}")
                    out = convert(b, GCS_SPEC, store, report.source_bucket, loc, dedupe)
                    if out is not None:
                        yield out
        if report.records_processed is not None and rows != report.records_processed:
            raise UsageError(f"inventory report {report.manifest}: the shards hold {rows} "
                             f"rows, the manifest says records_processed "
                             f"{report.records_processed}",
                             hint="a shard is missing, truncated or replaced: copy the report "
                                  "again")

    yield from rebatch(raw(), batch_rows)


@contextmanager
def _closing(fh: IO[bytes]) -> Iterator[IO[bytes]]:
    try:
        yield fh
    finally:
        fh.close()


class GCSInventorySource:
    """A Storage Insights inventory report as a :class:`~cleanup.stores.base.ListingSource`.
    ``listed_at`` is the report's ``snapshot_time`` by Google's clock; precision 1 ms."""

    def __init__(self, report: GCSReport, store: StoreRef, *, client: Any | None = None,
                 batch_rows: int = 65536) -> None:
        self.report, self.store, self.client, self.batch_rows = report, store, client, batch_rows

    def meta(self) -> ListingMeta:
        return ListingMeta(store=self.store.url, listed_at=self.report.snapshot_time,
                           listed_at_clock="gcs-inventory",
                           precision=timedelta(milliseconds=1),
                           source=f"gcs-inventory:{self.report.manifest}",
                           time_source="gcs-last-modified")

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        return iter_gcs_batches(self.report, self.store, client=self.client,
                                batch_rows=self.batch_rows)
