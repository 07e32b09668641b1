"""Checks of the files a command reads or writes, before any work is done.

:func:`check_inventory` and :func:`check_snapshot` read only a Parquet file's
footer (schema, key-value metadata and column statistics) and, when the
statistics cannot answer, one aggregate DuckDB query. A column of the wrong
type would otherwise be coerced silently by the planning query (a date
compared with a timestamp means midnight, a string compares as a string), and
a file whose ``last_modified`` column is coarser than its declared precision
would let a file written after the cutoff look old (I2). Every refusal is one
:class:`~cleanup.errors.UsageError` naming the file, the column and the fix.

:func:`check_output_path` refuses an output path whose folder does not exist,
before anything is computed or written.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from cleanup.core.timeutil import MAX_DURATION, format_duration, parse_time
from cleanup.errors import UsageError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

REMAKE_INVENTORY = "re-create it with `cleanup inventory STORE -o FILE.parquet`"
REMAKE_SNAPSHOT = "re-create it with `cleanup snapshot SOURCE -o FILE.parquet`"
DEFAULT_PRECISION = timedelta(seconds=1)  # an inventory that declares none: S3's

_UNIT_PRECISION = {
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
    "us": timedelta(microseconds=1),
    "ns": timedelta(microseconds=1),  # planning compares in microseconds
}
_PARQUET_UNITS = {"milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}
_UINT_RE = re.compile(r"[0-9]+", re.ASCII)
_INT_RE = re.compile(r"-?[0-9]+", re.ASCII)


@dataclass(frozen=True)
class InventoryFacts:
    """What an inventory file says about itself, checked."""

    rows: int
    declared_precision: timedelta  # metadata cleanup.precision_us (default 1 s)
    column_precision: timedelta  # implied by the last_modified column's unit

    @property
    def precision(self) -> timedelta:
        """I2: the larger of the declared precision and the column's own unit."""
        return max(self.declared_precision, self.column_precision)


def check_output_path(path: str, option: str = "-o") -> None:
    """Refuse an output path whose folder does not exist, is not a folder or cannot be
    written (probed with an anonymous temporary file: nothing is left behind)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise UsageError(f"{option} {path}: folder {folder} does not exist",
                         hint="create the folder first, or write somewhere else")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: {folder} is not a folder",
                         hint="write somewhere else")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in folder {folder} "
                         f"({exc.strerror or exc})", hint="write somewhere else") from None


def _footer(path: str, kind: str) -> tuple[pa.Schema, pq.FileMetaData]:
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise UsageError(f"{kind} {path}: no such file")
    try:
        md = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except (OSError, ValueError, TypeError) as exc:  # ArrowInvalid is a ValueError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{kind} {path}: not a readable Parquet file ({first})",
                         hint=REMAKE_INVENTORY if kind == "inventory"
                         else REMAKE_SNAPSHOT) from None
    return schema, md


def _field(schema: pa.Schema, path: str, kind: str, name: str, hint: str) -> pa.Field | None:
    if schema.names.count(name) > 1:
        raise UsageError(f"{kind} {path}: column {name!r} appears more than once", hint=hint)
    idx = schema.get_field_index(name)
    return schema.field(idx) if idx >= 0 else None


def _value_type(t: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    return t.value_type if pa.types.is_dictionary(t) else t


def _is_string(t: pa.DataType) -> bool:
    import pyarrow as pa

    t = _value_type(t)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_string_view(t))


def _is_binary(t: pa.DataType) -> bool:
    import pyarrow as pa

    t = _value_type(t)
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t))


def _check_key_type(schema: pa.Schema, path: str, kind: str, hint: str) -> None:
    key = _field(schema, path, kind, "key", hint)
    if key is None:
        raise UsageError(f"{kind} {path}: no 'key' column (columns: "
                         f"{', '.join(schema.names) or 'none'})", hint=hint)
    if _is_binary(key.type):
        raise UsageError(f"{kind} {path}: column 'key' is {key.type}, not string: bytes are "
                         "not compared as the text keys they may encode",
                         hint=f"{hint}, which writes keys as UTF-8 strings")
    if not _is_string(key.type):
        raise UsageError(f"{kind} {path}: column 'key' is {key.type}, not string", hint=hint)


def _stored_arrow_schema(md: pq.FileMetaData) -> pa.Schema | None:
    """The Arrow schema pyarrow stores in the footer: it keeps ``timestamp[s]``, which
    Parquet itself can only hold as milliseconds."""
    import pyarrow as pa

    raw = (md.metadata or {}).get(b"ARROW:schema")
    if not raw:
        return None
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))
    except (ValueError, TypeError, OSError):
        return None


def _column_index(md: pq.FileMetaData, name: str) -> int | None:
    for i in range(md.num_columns):
        if md.schema.column(i).path == name:
            return i
    return None


def _timestamp_precision(lm: pa.Field, md: pq.FileMetaData) -> timedelta:
    """The coarsest unit any layer of the file gives ``last_modified``."""
    import pyarrow as pa

    units = [lm.type.unit]
    stored = _stored_arrow_schema(md)
    if stored is not None and stored.get_field_index("last_modified") >= 0:
        st = stored.field("last_modified").type
        if pa.types.is_timestamp(st):
            units.append(st.unit)
    idx = _column_index(md, "last_modified")
    if idx is not None:
        logical = md.schema.column(idx).logical_type
        text = logical.to_json() if logical is not None else ""
        units += [u for word, u in _PARQUET_UNITS.items() if f'"{word}"' in text]
    return max(_UNIT_PRECISION.get(u, timedelta(seconds=1)) for u in units)


def _stat_counts(md: pq.FileMetaData, has_raw: bool) -> dict[str, int] | None:
    """Null, empty-key and negative-size counts from the column statistics; ``None``
    where the statistics cannot tell (missing, or NULL keys that key_raw may explain)."""
    cols = {name: _column_index(md, name) for name in ("key", "size", "last_modified")}
    out = {"key_null": 0, "key_empty": 0, "size_null": 0, "size_negative": 0,
           "last_modified_null": 0}
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for name, idx in cols.items():
            if idx is None:
                return None
            chunk = group.column(idx)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count:
                return None
            out[f"{name}_null"] += stats.null_count
            if name == "last_modified":
                continue
            if stats.num_values > 0 and not stats.has_min_max:
                return None
            if stats.num_values > 0:
                if name == "key" and stats.min in ("", b""):
                    out["key_empty"] += 1
                elif name == "size" and isinstance(stats.min, int) and stats.min < 0:
                    out["size_negative"] += 1
    if has_raw and (out["key_null"] or out["key_empty"]):
        return None  # rows with a raw (undecodable) name may carry no text key: count exactly
    return out


def _exact_counts(path: str, kind: str, has_raw: bool) -> dict[str, int]:
    import duckdb

    from cleanup.core.paths import sql_literal

    raw = " AND key_raw IS NULL" if has_raw else ""
    sql = (f"SELECT count(*) FILTER (WHERE key IS NULL{raw}), "
           f"count(*) FILTER (WHERE key = ''{raw}), count(*) FILTER (WHERE size IS NULL), "
           "count(*) FILTER (WHERE size < 0), count(*) FILTER (WHERE last_modified IS NULL) "
           f"FROM read_parquet({sql_literal(path)})")
    con = duckdb.connect()
    try:
        row = con.execute(sql).fetchone()
    except duckdb.Error as exc:
        raise UsageError(f"{kind} {path}: cannot read its columns "
                         f"({str(exc).splitlines()[0]})", hint=REMAKE_INVENTORY) from None
    finally:
        con.close()
    if row is None:
        raise UsageError(f"{kind} {path}: cannot read its columns", hint=REMAKE_INVENTORY)
    names = ("key_null", "key_empty", "size_null", "size_negative", "last_modified_null")
    return {n: int(v or 0) for n, v in zip(names, row, strict=True)}


def _meta_uint(meta: dict[str, str], name: str, path: str, kind: str, default: int) -> int:
    text = meta.get(name)
    if text is None:
        return default
    if not _UINT_RE.fullmatch(text) or len(text.lstrip("0")) > 18:
        raise UsageError(f"{kind} {path}: metadata cleanup.{name}={text[:40]!r} is not a "
                         "non-negative whole number",
                         hint=REMAKE_INVENTORY if kind == "inventory" else REMAKE_SNAPSHOT)
    return int(text)


def check_inventory(path: str) -> InventoryFacts:
    """:func:`check_inventory_file` for each shard of ``path`` (see :func:`input_files`);
    shards must share one schema. Rows add up; the precision is the coarsest."""
    files = input_files(path, "inventory")
    facts = [check_inventory_file(f) for f in files]
    _same_schema(files, "inventory")
    return InventoryFacts(rows=sum(f.rows for f in facts),
                          declared_precision=max(f.declared_precision for f in facts),
                          column_precision=max(f.column_precision for f in facts))


def check_inventory_file(path: str) -> InventoryFacts:
    """Refuse an inventory whose columns could make a referenced or new file a candidate.

    ``key`` string without NULLs or empty keys; ``size`` an integer type without
    NULLs or negative values; ``last_modified`` a UTC timestamp without NULLs;
    ``etag`` present. The declared precision (``cleanup.precision_us``) must be a
    whole number of microseconds; the returned precision is the larger of it and
    the ``last_modified`` column's own unit (I2).
    """
    import pyarrow as pa

    from cleanup.formats import read_meta

    kind, hint = "inventory", REMAKE_INVENTORY
    schema, md = _footer(path, kind)
    _check_key_type(schema, path, kind, hint)
    size = _field(schema, path, kind, "size", hint)
    if size is None:
        raise UsageError(f"{kind} {path}: no 'size' column", hint=hint)
    if not pa.types.is_integer(_value_type(size.type)):
        raise UsageError(f"{kind} {path}: column 'size' is {size.type}, not an integer type",
                         hint=hint)
    lm = _field(schema, path, kind, "last_modified", hint)
    if lm is None:
        raise UsageError(f"{kind} {path}: no 'last_modified' column", hint=hint)
    if not pa.types.is_timestamp(lm.type):
        raise UsageError(f"{kind} {path}: column 'last_modified' is {lm.type}, not a "
                         "timestamp: a date or number cannot say when a file was written",
                         hint=hint)
    if lm.type.tz is None:
        raise UsageError(f"{kind} {path}: column 'last_modified' is {lm.type}, a timestamp "
                         "without a time zone: its zone would be guessed",
                         hint=f"store it as timestamp with time zone UTC, or {hint}")
    etag = _field(schema, path, kind, "etag", hint)
    if etag is None:
        raise UsageError(f"{kind} {path}: no 'etag' column", hint=hint)
    if not (_is_string(etag.type) or pa.types.is_null(etag.type)):
        raise UsageError(f"{kind} {path}: column 'etag' is {etag.type}, not string",
                         hint=hint)
    has_raw = schema.get_field_index("key_raw") >= 0

    meta = read_meta(path)
    declared_us = _meta_uint(meta, "precision_us", path, kind,
                             DEFAULT_PRECISION // timedelta(microseconds=1))
    declared = timedelta(microseconds=declared_us) if declared_us <= (
        MAX_DURATION // timedelta(microseconds=1)) else None
    if declared is None:
        raise UsageError(f"{kind} {path}: metadata cleanup.precision_us={declared_us} is "
                         f"longer than {format_duration(MAX_DURATION)}", hint=hint)
    rows = _meta_uint(meta, "rows", path, kind, md.num_rows)
    if "listed_at" not in meta:
        raise UsageError(f"{kind} {path}: metadata cleanup.listed_at is missing", hint=hint)
    try:
        parse_time(meta["listed_at"])
    except UsageError as exc:
        raise UsageError(f"{kind} {path}: metadata cleanup.listed_at: {exc.message}",
                         hint=hint) from None

    counts = _stat_counts(md, has_raw)
    if counts is None:
        counts = _exact_counts(path, kind, has_raw)
    problems = [(counts["key_null"], "key", "NULL keys"),
                (counts["key_empty"], "key", "empty keys"),
                (counts["size_null"], "size", "NULL sizes"),
                (counts["size_negative"], "size", "negative sizes"),
                (counts["last_modified_null"], "last_modified", "NULL times")]
    for n, column, what in problems:
        if n:
            some = "some" if what in ("empty keys", "negative sizes") else str(n)
            raise UsageError(f"{kind} {path}: column {column!r} has {some} {what}",
                             hint=f"every listed object needs a key, size and time; {hint}")
    return InventoryFacts(rows=rows, declared_precision=declared,
                          column_precision=_timestamp_precision(lm, md))


def check_snapshot(path: str) -> None:
    """:func:`check_snapshot_file` for each shard of ``path``; shards share one schema."""
    files = input_files(path, "snapshot")
    for f in files:
        check_snapshot_file(f)
    _same_schema(files, "snapshot")


def check_snapshot_file(path: str) -> None:
    """Refuse a snapshot without a string ``key`` column or with unreadable metadata."""
    from cleanup.formats import read_meta

    kind, hint = "snapshot", REMAKE_SNAPSHOT
    schema, _md = _footer(path, kind)
    _check_key_type(schema, path, kind, hint)
    meta = read_meta(path)
    _meta_uint(meta, "rows", path, kind, 0)
    skew = meta.get("metadata_skew_us")
    if skew is not None and (not _INT_RE.fullmatch(skew) or len(skew.lstrip("-0")) > 18
                             or abs(int(skew)) > MAX_DURATION // timedelta(microseconds=1)):
        raise UsageError(f"{kind} {path}: metadata cleanup.metadata_skew_us={skew[:40]!r} is "
                         "not a whole number of microseconds within 100 years", hint=hint)


# --- sharded inputs: a file, a directory or a glob of Parquet files -------------------------


def input_files(path: str, kind: str) -> list[str]:
    """The Parquet files an input names, sorted and absolute: a file; a directory (its
    ``*.parquet`` files, recursively, skipping names that start with ``_`` or ``.``, as
    Spark and Hive write ``_SUCCESS`` and ``.crc`` files); or a glob pattern (``*``,
    ``?``, ``[``; ``**`` recurses). A name that matches no file is refused."""
    import glob

    hint = REMAKE_INVENTORY if kind == "inventory" else REMAKE_SNAPSHOT
    scheme = path.partition("://")[0]
    if "://" in path and scheme.isascii() and scheme.isalnum():
        # The planner hashes every input byte it plans from (the plan records the sha256);
        # a URL would be read twice, by the driver's hash and by the engine, and could
        # change in between. Inputs are files: local, or a shared file system's mount.
        raise UsageError(f"{kind} {path}: inputs are read from a file system, not from a "
                         f"{scheme}:// URL",
                         hint=f"copy it first (e.g. `aws s3 cp --recursive {path} DIR`) or "
                              "give the path where the bucket is mounted")
    if os.path.isfile(path):
        return [os.path.abspath(path)]
    if os.path.isdir(path):
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
            found += [os.path.join(root, n) for n in names
                      if n.endswith(".parquet") and not n.startswith(("_", "."))]
        if not found:
            raise UsageError(f"{kind} {path}: a directory without *.parquet files", hint=hint)
        return sorted(os.path.abspath(f) for f in found)
    if glob.has_magic(path):
        found = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
        if not found:
            raise UsageError(f"{kind} {path}: the pattern matches no file", hint=hint)
        return sorted(os.path.abspath(f) for f in found)
    raise UsageError(f"{kind} {path}: no such file", hint=f"make it with `cleanup {kind} ... "
                     f"-o {path}` (or give a directory or glob of its Parquet shards)")


def _same_schema(files: list[str], kind: str) -> None:
    """Every shard has the first one's columns and types (metadata aside)."""
    import pyarrow.parquet as pq

    first = pq.read_schema(files[0]).remove_metadata()
    for f in files[1:]:
        other = pq.read_schema(f).remove_metadata()
        if not other.equals(first):
            raise UsageError(f"{kind} shards disagree on their columns: {f} has "
                             f"{other.to_string(show_schema_metadata=False)!r}, {files[0]} "
                             f"has {first.to_string(show_schema_metadata=False)!r}",
                             hint="all shards of one input must come from one writer")


def input_meta(path: str, kind: str) -> dict[str, str]:
    """The ``cleanup.*`` metadata of an input. Every shard must carry the same metadata
    (one listing or snapshot, written in parts), except ``rows``, which adds up."""
    from cleanup.formats import read_meta

    files = input_files(path, kind)
    merged: dict[str, str] | None = None
    rows = 0
    for f in files:
        meta = read_meta(f)
        if meta.get("kind") != kind:
            raise UsageError(f"{f} is not a cleanup {kind} file (kind={meta.get('kind')!r})",
                             hint=f"make it with `cleanup {kind} ... -o FILE.parquet`")
        rows += _meta_uint(meta, "rows", f, kind, 0)
        rest = {k: v for k, v in meta.items() if k != "rows"}
        if merged is None:
            merged = rest
        elif rest != merged:
            diff = sorted(k for k in set(rest) | set(merged) if rest.get(k) != merged.get(k))
            raise UsageError(f"{kind} shards disagree on their metadata ({', '.join(diff)}): "
                             f"{f} and {files[0]}",
                             hint=f"the shards of one {kind} must be written together, with "
                                  "one set of cleanup.* metadata")
    if merged is None or len(files) == 1:
        return read_meta(files[0])
    return {**merged, "rows": str(rows)}


def input_sha256(path: str, kind: str) -> str:
    """``sha256:<hex>`` of an input: of the file's bytes, or, for shards, of the text
    ``<sha256 of shard>  <shard path relative to their common folder>\n`` per shard in
    path order (what ``sha256sum`` prints, so it can be checked by hand)."""
    import hashlib

    from cleanup.core.canonical import sha256_file

    files = input_files(path, kind)
    if len(files) == 1 and os.path.isfile(path):
        return sha256_file(files[0])
    base = os.path.commonpath([os.path.dirname(f) for f in files])
    lines = "".join(f"{sha256_file(f).removeprefix('sha256:')}  {os.path.relpath(f, base)}\n"
                    for f in files)
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def parquet_list_sql(files: list[str]) -> str:
    """A DuckDB list literal of ``files`` for ``read_parquet``."""
    from cleanup.core.paths import sql_literal

    return "[" + ", ".join(sql_literal(f) for f in files) + "]"
