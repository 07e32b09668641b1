"""Read AWS S3 Inventory reports (``manifest.json`` with CSV or Parquet data files).

Format, from the S3 User Guide ("Cataloging and analyzing your data with S3
Inventory", https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory.html,
and "Locating your inventory list", .../storage-inventory-location.html):

* ``manifest.json`` holds ``sourceBucket``, ``destinationBucket``
  (``arn:aws:s3:::name``), ``version``, ``creationTimestamp`` (milliseconds
  since the epoch, as a string: when S3 began scanning the bucket),
  ``fileFormat`` (``CSV``, ``ORC`` or ``Parquet``), ``fileSchema`` and
  ``files`` (``key`` in the destination bucket, ``size``, ``MD5checksum``).
* CSV data files are gzipped, have no header row and follow the
  comma-separated ``fileSchema`` (``"Bucket, Key, VersionId, IsLatest,
  IsDeleteMarker, Size, LastModifiedDate, ETag, ..."``); which fields are
  present depends on the inventory configuration, so columns are found by
  name, never by position. ``VersionId``/``IsLatest``/``IsDeleteMarker`` are
  only present in all-versions reports.
* Parquet data files have the snake_case columns of the documented schema
  (``bucket``, ``key``, ``version_id``, ``is_latest``, ``is_delete_marker``,
  ``size``, ``last_modified_date`` as ``int64 (TIMESTAMP_MILLIS)``, ``e_tag``).
  ORC is not read yet.

Decisions (each one errs towards *not* listing an object, because a key that
is missing from an inventory is never a deletion candidate, while a wrong key
could be):

Key decoding (CSV only)
    The guide says "When using the CSV file format, the key name is
    URL-encoded and must be decoded before you can use it" and does not say
    which flavour. Real reports use form encoding: a space is written ``+`` and
    a literal ``+`` is ``%2B`` (cloud-custodian issue #1997, "The S3 object key
    value supplied in S3 Inventory is URL-encoded with space encoded as plus",
    fixed in PR #1998 by always calling ``unquote_plus``). Keys are therefore
    decoded with :func:`urllib.parse.unquote_plus`. That is also correct for
    RFC 3986 percent-encoding (``quote``, spaces as ``%20``), because both
    encoders escape a literal ``+``; plain ``unquote`` would turn the key
    ``a b`` (written ``a+b``) into ``a+b``, a different and possibly existing
    object. A ``%`` not followed by two hex digits, or escapes that are not
    UTF-8, mean the file is not encoded the way we think: refused. Parquet and
    ORC keys are not URL-encoded (the guide limits the encoding to CSV).
Delete markers and non-current versions
    Rows with ``IsDeleteMarker`` true are skipped (a marker is not an object).
    Rows with ``IsLatest`` false are skipped too: this tool deletes by key,
    references in the metadata name keys, not versions, and a key-level DELETE
    on a versioned bucket only hides the current version. A non-current row
    would put the key on the candidate list with an *older* version's size and
    modification time, which may look old enough to delete while the current
    object is brand new. An empty ``IsLatest`` in a report that has the column
    is treated as "not latest" (skipped). Reports without the column
    (current-versions-only) list only current objects.
Scope
    Only rows whose bucket is the store's bucket and whose key starts with the
    store's prefix are kept, with the prefix removed; keys under the reserved
    ``_cleanup/`` prefix and the empty key (the prefix itself) are dropped.
Integrity
    Each data file's bytes, as stored (gzipped for CSV), are checked against
    the manifest's ``MD5checksum`` and ``size`` before any of its rows is
    yielded; a data file in S3 is first spooled to a temporary file on disk for
    that. A sibling ``manifest.checksum`` ("the MD5 of the content of the
    manifest.json file") is checked when present.
Times
    ``LastModifiedDate`` in CSV must carry a zone (S3 writes ``...Z``); in
    Parquet it must be a UTC-adjusted timestamp, which is what the legacy
    ``TIMESTAMP_MILLIS`` annotation means (parquet-format LogicalTypes.md,
    backward compatibility: ``TimestampType(isAdjustedToUTC = true, unit =
    MILLIS)``). A time without a zone is refused rather than guessed.
Consistency
    An inventory is an eventually consistent snapshot; the guide recommends a
    HEAD before acting on an object. The executor re-checks size and etag
    before deleting (I9), so a stale row cannot delete a rewritten object.

Local reports: ``files[].key`` is relative to the destination bucket's root.
It is resolved by walking up from the manifest's directory until
``directory / key`` exists, so a report copied with its layout (for example
``aws s3 sync s3://dest/ ./dest/``, manifest at
``./dest/<prefix>/<src>/<config>/<date>/manifest.json``) is found wherever it
was copied to.

Memory does not grow with the report: files are read one at a time, in
streamed blocks, and rows are re-batched to ``batch_rows``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from cleanup.core.paths import StoreRef, is_reserved
from cleanup.errors import StoreError, UsageError
from cleanup.formats import inventory_schema
from cleanup.stores.base import ListingMeta

if TYPE_CHECKING:
    import pyarrow as pa

SUPPORTED_FORMATS = {"csv": "CSV", "parquet": "Parquet"}
_CHUNK = 1 << 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")

# Normalized column names (lowercase, letters and digits only), so that the CSV
# names ("LastModifiedDate") and the Parquet names ("last_modified_date") agree.
_KEY, _SIZE, _MTIME = "key", "size", "lastmodifieddate"
_BUCKET, _VERSION, _LATEST, _MARKER, _ETAG = (
    "bucket", "versionid", "islatest", "isdeletemarker", "etag")
_REQUIRED = (_KEY, _SIZE, _MTIME)
_WANTED = (_BUCKET, _KEY, _VERSION, _LATEST, _MARKER, _SIZE, _MTIME, _ETAG)
_DISPLAY = {_KEY: "Key", _SIZE: "Size", _MTIME: "LastModifiedDate"}
_SCHEMA_HINT = ("configure the inventory with the Size and Last modified date fields, "
                "or use a report that has them")


@dataclass(frozen=True)
class InventoryReport:
    """One S3 Inventory report, as its manifest describes it.

    ``data_files`` are local paths (for a local manifest) or ``s3://`` URLs in
    the destination bucket. ``md5`` and ``sizes`` map a data file to the
    checksum and size the manifest gives for it (when it gives them).
    """

    manifest: str
    source_bucket: str
    created_at: datetime
    file_format: str
    data_files: list[str]
    file_schema: str = ""
    destination_bucket: str = ""
    md5: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def normalize_column(name: str) -> str:
    """``"Last Modified_Date "`` -> ``"lastmodifieddate"``: case, space and ``_`` insensitive."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def decode_csv_key(encoded: str) -> str:
    """Decode a CSV inventory key (form/URL encoding; see the module docstring).

    Raise :class:`ValueError` when ``encoded`` is not validly encoded.
    """
    if "%" not in encoded and "+" not in encoded:
        return encoded
    if _BAD_ESCAPE.search(encoded):
        raise ValueError(f"'%' without two hex digits in {encoded!r}")
    try:
        return unquote_plus(encoded, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"escapes in {encoded!r} are not UTF-8") from None


def csv_columns(file_schema: str, where: str) -> list[str]:
    """The CSV column names of a manifest's ``fileSchema``; refuse unusable schemas."""
    names = [n.strip() for n in file_schema.split(",")]
    if not file_schema.strip() or any(not n for n in names):
        raise UsageError(f"{where}: fileSchema {file_schema!r} is not a comma-separated list "
                         "of field names",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    normalized = [normalize_column(n) for n in names]
    dupes = sorted({n for n in names if normalized.count(normalize_column(n)) > 1})
    if dupes:
        raise UsageError(f"{where}: fileSchema names {', '.join(dupes)} more than once",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    missing = [_DISPLAY[c] for c in _REQUIRED if c not in normalized]
    if missing:
        raise UsageError(f"{where}: the CSV report has no {', '.join(missing)} column "
                         f"(fileSchema: {file_schema})", hint=_SCHEMA_HINT)
    return names


# --------------------------------------------------------------------------- manifest


def _split_s3_url(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise UsageError(f"{url!r} is not an s3://bucket/key URL",
                         hint="give the manifest as s3://bucket/path/manifest.json")
    return bucket, key


def _client(s3_client: Any | None) -> Any:
    if s3_client is not None:
        return s3_client
    from cleanup.stores.s3 import make_client

    return make_client()


def _get_object(client: Any, bucket: str, key: str, what: str, *,
                missing_ok: bool = False) -> Any:
    """``get_object``; S3 errors become UsageError/StoreError. ``None`` if missing and ok."""
    from botocore.exceptions import BotoCoreError, ClientError

    from cleanup.stores.s3 import s3_error_message

    url = f"s3://{bucket}/{key}"
    try:
        return client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            if missing_ok:
                return None
            raise UsageError(f"{what} {url} does not exist",
                             hint="check the path; S3 deletes old reports if a lifecycle "
                                  "rule expires them") from None
        if code == "NoSuchBucket":
            raise UsageError(f"{what} {url}: bucket {bucket!r} does not exist",
                             hint="check the bucket name and --endpoint-url") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise UsageError(f"reading {what} {url} was denied ({s3_error_message(exc)})",
                             hint="grant s3:GetObject on the inventory destination bucket "
                                  "to these credentials") from None
        raise StoreError(f"reading {what} {url} failed ({s3_error_message(exc)})") from None
    except BotoCoreError as exc:
        raise StoreError(f"reading {what} {url} failed ({exc})",
                         hint="check --endpoint-url and the network") from None


def _read_manifest_bytes(manifest: str, s3_client: Any | None) -> tuple[bytes, bytes | None]:
    """The manifest's bytes and, when there is one, its ``manifest.checksum``."""
    if manifest.startswith("s3://"):
        bucket, key = _split_s3_url(manifest)
        client = _client(s3_client)
        body: bytes = _get_object(client, bucket, key, "inventory manifest")["Body"].read()
        checksum = None
        if key.endswith("manifest.json"):
            checksum_key = key[: -len("manifest.json")] + "manifest.checksum"
            obj = _get_object(client, bucket, checksum_key, "manifest checksum", missing_ok=True)
            checksum = obj["Body"].read() if obj is not None else None
        return body, checksum
    path = Path(manifest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"inventory manifest {manifest}: no such file",
                         hint="give the path of the report's manifest.json") from None
    except IsADirectoryError:
        raise UsageError(f"inventory manifest {manifest} is a directory",
                         hint=f"give the manifest file itself, e.g. {path / 'manifest.json'}",
                         ) from None
    except OSError as exc:
        raise UsageError(f"inventory manifest {manifest}: cannot read ({exc.strerror})",
                         hint="check the path and its permissions") from None
    side = path.with_name("manifest.checksum")
    checksum = None
    if path.name == "manifest.json" and side.is_file():
        checksum = side.read_bytes()
    return data, checksum


def _destination_bucket(value: object, manifest: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"inventory manifest {manifest} has no destinationBucket",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    # "arn:aws:s3:::name" (any partition: arn:aws-cn:s3:::name) or a plain name.
    name = value.rsplit(":::", 1)[-1] if value.startswith("arn:") else value
    if not name or "/" in name:
        raise UsageError(f"inventory manifest {manifest}: destinationBucket {value!r} "
                         "is not a bucket ARN",
                         hint="expected arn:aws:s3:::bucket-name")
    return name


def _created_at(value: object, manifest: str) -> datetime:
    ok = isinstance(value, str | int) and not isinstance(value, bool)
    text = str(value).strip() if ok else ""
    if not text.isdigit():
        raise UsageError(f"inventory manifest {manifest}: creationTimestamp {value!r} is not "
                         "milliseconds since the epoch",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    return _EPOCH + timedelta(milliseconds=int(text))


def _resolve_local(mdir: Path, key: str, manifest: str) -> str:
    """The local file for destination key ``key``: the first ``d / key`` walking up from mdir."""
    rel = Path(key)
    if not key or rel.is_absolute() or ".." in rel.parts:
        raise UsageError(f"inventory manifest {manifest} lists a data file key {key!r} that "
                         "is not a relative path",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    for d in (mdir, *mdir.parents):
        candidate = d / rel
        if candidate.is_file():
            return str(candidate)
    raise UsageError(f"data file {key} listed in {manifest} was not found in "
                     f"{mdir} or any directory above it",
                     hint="copy the whole report keeping the destination bucket's layout "
                          "(e.g. aws s3 sync s3://DEST/PREFIX/ ./DEST/PREFIX/) and give the "
                          "manifest.json inside it")


def load_manifest(manifest: str, *, s3_client: Any | None = None) -> InventoryReport:
    """Read and check an S3 Inventory ``manifest.json`` (a local path or ``s3://`` URL).

    Local data files are resolved as described in the module docstring and
    must exist; ``s3://`` data files are ``s3://<destination bucket>/<key>``.
    Raise :class:`UsageError` for a missing or malformed manifest, an
    unsupported format or a missing local data file.
    """
    raw, checksum = _read_manifest_bytes(manifest, s3_client)
    if checksum is not None:
        want = checksum.decode("ascii", "replace").strip().lower()
        got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if _HEX_MD5.match(want) and want != got:
            raise UsageError(f"inventory manifest {manifest} does not match its "
                             f"manifest.checksum (MD5 {got}, expected {want})",
                             hint="the manifest was changed or truncated: copy it again "
                                  "from the destination bucket")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"inventory manifest {manifest} is not valid JSON ({exc})",
                         hint="give the report's manifest.json (not manifest.checksum or a "
                              "data file)") from None
    if not isinstance(doc, dict):
        raise UsageError(f"inventory manifest {manifest} is not a JSON object",
                         hint="give the report's manifest.json")

    source = doc.get("sourceBucket")
    if not isinstance(source, str) or not source:
        raise UsageError(f"inventory manifest {manifest} has no sourceBucket",
                         hint="give the report's manifest.json, as S3 Inventory wrote it")
    dest = _destination_bucket(doc.get("destinationBucket"), manifest)
    created = _created_at(doc.get("creationTimestamp"), manifest)

    fmt_raw = doc.get("fileFormat")
    fmt = SUPPORTED_FORMATS.get(str(fmt_raw).lower()) if isinstance(fmt_raw, str) else None
    if fmt is None:
        if isinstance(fmt_raw, str) and fmt_raw.lower() == "orc":
            raise UsageError(f"inventory manifest {manifest}: ORC reports are not supported yet",
                             hint="configure the inventory with the CSV or Parquet output "
                                  "format, or list the bucket directly (leave out "
                                  "--s3-inventory)")
        raise UsageError(f"inventory manifest {manifest}: unknown fileFormat {fmt_raw!r}",
                         hint="S3 Inventory reports are CSV, Parquet or ORC; CSV and Parquet "
                              "can be read")
    schema = doc.get("fileSchema", "")
    if not isinstance(schema, str):
        raise UsageError(f"inventory manifest {manifest}: fileSchema is not a string",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    if fmt == "CSV":
        csv_columns(schema, f"inventory manifest {manifest}")

    files = doc.get("files")
    if not isinstance(files, list):
        raise UsageError(f"inventory manifest {manifest} has no files list",
                         hint="use the manifest.json that S3 Inventory wrote, unchanged")
    is_s3 = manifest.startswith("s3://")
    mdir = Path(os.path.abspath(manifest)).parent if not is_s3 else Path()
    locations: list[str] = []
    seen: set[str] = set()
    md5: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for i, entry in enumerate(files):
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str) or not key:
            raise UsageError(f"inventory manifest {manifest}: files[{i}] has no key",
                             hint="use the manifest.json that S3 Inventory wrote, unchanged")
        loc = f"s3://{dest}/{key}" if is_s3 else _resolve_local(mdir, key, manifest)
        if loc in seen:
            raise UsageError(f"inventory manifest {manifest} lists data file {key} twice",
                             hint="use the manifest.json that S3 Inventory wrote, unchanged")
        locations.append(loc)
        seen.add(loc)
        digest = entry.get("MD5checksum")
        if isinstance(digest, str) and digest:
            md5[loc] = digest.strip().lower()
        size = entry.get("size")
        if isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        if isinstance(size, int) and not isinstance(size, bool):
            sizes[loc] = size
    return InventoryReport(manifest=manifest, source_bucket=source, created_at=created,
                           file_format=fmt, data_files=locations, file_schema=schema,
                           destination_bucket=dest, md5=md5, sizes=sizes)


# --------------------------------------------------------------------------- data files


@contextmanager
def _verified_file(report: InventoryReport, loc: str, s3_client: Any | None,
                   ) -> Iterator[IO[bytes]]:
    """Open data file ``loc`` after checking its size and MD5 against the manifest.

    S3 files are spooled to a temporary file first, so nothing is parsed
    before the whole file has been checked.
    """
    want_md5 = report.md5.get(loc)
    want_size = report.sizes.get(loc)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    if loc.startswith("s3://"):
        bucket, key = _split_s3_url(loc)
        body = _get_object(_client(s3_client), bucket, key, "inventory data file")["Body"]
        fh: IO[bytes] = tempfile.TemporaryFile(prefix="cleanup-s3-inventory-")
        try:
            while chunk := body.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
        except BaseException:
            fh.close()
            raise
    else:
        try:
            fh = open(loc, "rb")  # closed in the finally below
        except OSError as exc:
            raise UsageError(f"inventory data file {loc}: cannot read ({exc.strerror})",
                             hint="check that the report was copied completely") from None
        try:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except BaseException:
            fh.close()
            raise
    try:
        if want_size is not None and size != want_size:
            raise UsageError(f"inventory data file {loc} has {size} bytes, the manifest says "
                             f"{want_size}",
                             hint="the file is truncated or replaced: copy the report again")
        if want_md5 is not None and digest.hexdigest() != want_md5:
            raise UsageError(f"inventory data file {loc} does not match the manifest's "
                             f"MD5checksum ({digest.hexdigest()}, expected {want_md5})",
                             hint="the file is corrupt or replaced: copy the report again")
        fh.seek(0)
        yield fh
    finally:
        fh.close()


def _keep_keys(full_keys: Iterable[str | None], store: StoreRef, loc: str, *,
               decode: bool) -> tuple[list[int], list[str]]:
    """Row indices to keep and their store-relative keys."""
    prefix = store.prefix
    plen = len(prefix)
    idx: list[int] = []
    keys: list[str] = []
    for i, raw in enumerate(full_keys):
        if raw is None:
            continue
        if decode:
            try:
                full = decode_csv_key(raw)
            except ValueError as exc:
                raise UsageError(f"inventory data file {loc}: key is not URL-encoded as "
                                 f"S3 Inventory writes it: {exc}",
                                 hint="CSV reports must be read as S3 wrote them; "
                                      "do not decode or edit the keys") from None
        else:
            full = raw
        if not full.startswith(prefix):
            continue
        rel = full[plen:]
        if not rel or is_reserved(rel):
            continue
        idx.append(i)
        keys.append(rel)
    return idx, keys


def _flag(col: Any, *, csv: bool) -> Any:
    """A boolean array: ``true`` where the flag is set (CSV ``"true"``, any case)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if csv:
        return pc.equal(pc.utf8_lower(col), "true")
    return col.cast(pa.bool_())


def _to_output(batch: Any, cols: dict[str, str], store: StoreRef, loc: str, *,
               csv: bool) -> pa.RecordBatch | None:
    """Filter one batch of raw rows and convert it to the inventory schema."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def col(name: str) -> Any:
        return batch.column(cols[name]) if name in cols else None

    mask = None

    def both(a: Any, b: Any) -> Any:
        return b if a is None else pc.and_(a, b)

    if (bucket := col(_BUCKET)) is not None:
        mask = both(mask, pc.fill_null(pc.equal(bucket.cast(pa.string()), store.bucket),
                                       False))
    if (marker := col(_MARKER)) is not None:
        mask = both(mask, pc.invert(pc.fill_null(_flag(marker, csv=csv), False)))
    if (latest := col(_LATEST)) is not None:
        mask = both(mask, pc.fill_null(_flag(latest, csv=csv), False))
    if mask is not None:
        batch = batch.filter(mask)
    if batch.num_rows == 0:
        return None
    idx, keys = _keep_keys(batch.column(cols[_KEY]).cast(pa.string()).to_pylist(), store, loc,
                           decode=csv)
    if not keys:
        return None
    batch = batch.take(pa.array(idx, type=pa.int64()))

    size = batch.column(cols[_SIZE])
    mtime = batch.column(cols[_MTIME])
    missing = pc.or_(pc.is_null(size), pc.is_null(mtime))
    if csv:
        missing = pc.or_(missing, pc.or_(pc.equal(size, ""), pc.equal(mtime, "")))
    if pc.any(missing).as_py():
        bad = keys[pc.index(missing, True).as_py()]
        raise UsageError(f"inventory data file {loc}: object {bad!r} has no size or last "
                         "modified date",
                         hint=_SCHEMA_HINT)
    try:
        size = size.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"inventory data file {loc}: Size is not a whole number ({exc})",
                         hint="check that the manifest's fileSchema matches its data files",
                         ) from None
    mtime = _to_utc(mtime, loc, csv=csv)

    def optional_string(name: str) -> Any:
        c = col(name)
        if c is None:
            return pa.nulls(len(keys), type=pa.string())
        c = c.cast(pa.string())
        return pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)

    etag = optional_string(_ETAG)
    etag = pc.utf8_trim(etag, characters='"')
    etag = pc.if_else(pc.equal(etag, ""), pa.scalar(None, pa.string()), etag)
    # S3 keys are always UTF-8 text: key_raw (for local names that are not) stays NULL.
    return pa.RecordBatch.from_arrays(
        [pa.array(keys, type=pa.string()), size, mtime, etag, optional_string(_VERSION),
         pa.nulls(len(keys), type=pa.binary())],
        schema=inventory_schema())


def _to_utc(col: Any, loc: str, *, csv: bool) -> Any:
    import pyarrow as pa

    target = pa.timestamp("us", tz="UTC")
    if csv:
        try:
            return col.cast(target)
        except pa.ArrowInvalid as exc:
            raise UsageError(f"inventory data file {loc}: LastModifiedDate is not an ISO 8601 "
                             f"time with a zone ({str(exc).splitlines()[0]})",
                             hint="check that the manifest's fileSchema matches its data files",
                             ) from None
    if not pa.types.is_timestamp(col.type) or col.type.tz is None:
        raise UsageError(f"inventory data file {loc}: last_modified_date is {col.type}, not a "
                         "UTC timestamp",
                         hint="read the Parquet files that S3 Inventory wrote "
                              "(int64 TIMESTAMP_MILLIS), not a rewritten copy")
    return col.cast(target)


def _csv_batches(fh: IO[bytes], report: InventoryReport, store: StoreRef, loc: str,
                 ) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = csv_columns(report.file_schema, f"inventory manifest {report.manifest}")
    cols = {normalize_column(n): n for n in names if normalize_column(n) in _WANTED}
    head = fh.read(2)
    fh.seek(0)
    stream: Any = pa.PythonFile(fh, mode="r")
    if head == b"\x1f\x8b":
        stream = pa.CompressedInputStream(stream, "gzip")
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=names, block_size=_CHUNK),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char='"',
                                              newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in cols.values()},
                include_columns=list(cols.values()),
                strings_can_be_null=False),
        )
        for raw in reader:
            out = _to_output(raw, cols, store, loc, csv=True)
            if out is not None:
                yield out
    except pa.ArrowInvalid as exc:
        if str(exc).startswith("Empty CSV file"):
            return
        raise UsageError(f"inventory data file {loc} does not match the manifest's fileSchema "
                         f"({str(exc).splitlines()[0]})",
                         hint="use the manifest.json delivered with these data files") from None


def _parquet_batches(fh: IO[bytes], store: StoreRef, loc: str, batch_rows: int,
                     ) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"inventory data file {loc} is not a readable Parquet file ({exc})",
                         hint="check that the manifest's fileFormat is Parquet") from None
    cols: dict[str, str] = {}
    for name in pf.schema_arrow.names:
        norm = normalize_column(name)
        if norm in _WANTED:
            if norm in cols:
                raise UsageError(f"inventory data file {loc} has two columns that mean "
                                 f"{norm!r} ({cols[norm]}, {name})",
                                 hint="read the Parquet files that S3 Inventory wrote")
            cols[norm] = name
    missing = [_DISPLAY[c] for c in _REQUIRED if c not in cols]
    if missing:
        raise UsageError(f"inventory data file {loc} has no {', '.join(missing)} column "
                         f"(columns: {', '.join(pf.schema_arrow.names)})", hint=_SCHEMA_HINT)
    for raw in pf.iter_batches(batch_size=batch_rows, columns=list(cols.values())):
        out = _to_output(raw, cols, store, loc, csv=False)
        if out is not None:
            yield out


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``rows`` rows (the last one may be shorter)."""
    import pyarrow as pa

    schema = inventory_schema()
    buf: list[pa.RecordBatch] = []
    count = 0
    for b in batches:
        buf.append(b)
        count += b.num_rows
        if count < rows:
            continue
        table = pa.Table.from_batches(buf, schema=schema).combine_chunks()
        start = 0
        while count - start >= rows:
            yield from table.slice(start, rows).to_batches()
            start += rows
        rest = table.slice(start)
        buf = rest.to_batches() if rest.num_rows else []
        count -= start
    if count:
        yield from pa.Table.from_batches(buf, schema=schema).combine_chunks().to_batches()


def iter_inventory_batches(
    report: InventoryReport,
    store: StoreRef,
    *,
    s3_client: Any | None = None,
    batch_rows: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Yield the report's objects in ``store`` as batches of :func:`inventory_schema` rows.

    Keys are store-relative. Delete markers, non-current versions, other
    buckets' rows, keys outside the prefix and keys under ``_cleanup/`` are
    left out (see the module docstring for why). Data files are read one at a
    time and each is checked against the manifest before its rows are used.
    """
    if store.cloud != "s3":
        raise UsageError(f"an S3 Inventory report describes an S3 bucket, not {store.url}",
                         hint="give the store as s3://bucket/prefix/")
    if report.source_bucket != store.bucket:
        raise UsageError(f"inventory report {report.manifest} is for bucket "
                         f"{report.source_bucket!r}, but the store is in bucket "
                         f"{store.bucket!r}",
                         hint=f"use a report of s3://{store.bucket}/ or the store "
                              f"s3://{report.source_bucket}/{store.prefix}")
    if batch_rows < 1:
        raise UsageError(f"batch_rows must be at least 1, not {batch_rows}")
    if report.file_format not in SUPPORTED_FORMATS.values():
        raise UsageError(f"inventory report {report.manifest}: {report.file_format} reports "
                         "are not supported yet",
                         hint="configure the inventory with the CSV or Parquet output format")
    if report.file_format == "CSV":
        csv_columns(report.file_schema, f"inventory manifest {report.manifest}")

    def raw() -> Iterator[pa.RecordBatch]:
        for loc in report.data_files:
            with _verified_file(report, loc, s3_client) as fh:
                if report.file_format == "CSV":
                    yield from _csv_batches(fh, report, store, loc)
                else:
                    yield from _parquet_batches(fh, store, loc, batch_rows)

    yield from _rebatch(raw(), batch_rows)


class S3InventorySource:
    """An S3 Inventory report as a :class:`~cleanup.stores.base.ListingSource`, next to a
    live listing (:class:`cleanup.inventory.LiveListing`).

    ``listed_at`` is the report's creationTimestamp by S3's clock: the report may be days
    old, which is safe because the executor re-checks size and etag. Last-modified times
    are whole seconds (precision 1 s). Nothing is read until :meth:`iter_batches` is
    iterated.
    """

    def __init__(self, report: InventoryReport, store: StoreRef, *,
                 s3_client: Any | None = None, batch_rows: int = 65536) -> None:
        self.report, self.store = report, store
        self.s3_client, self.batch_rows = s3_client, batch_rows

    def meta(self) -> ListingMeta:
        return ListingMeta(store=self.store.url, listed_at=self.report.created_at,
                           listed_at_clock="s3-inventory", precision=timedelta(seconds=1),
                           source=f"s3-inventory:{self.report.manifest}",
                           time_source="s3-last-modified")

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        return iter_inventory_batches(self.report, self.store, s3_client=self.s3_client,
                                      batch_rows=self.batch_rows)
