"""``cleanup snapshot``: capture the referenced key set with its taken_at (I3).

The result is a Parquet file of distinct references in byte order, with the
source (no secrets), taken_at and the clock it came from, the row count, and a
digest over the sorted references.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup.core.timeutil import format_time
from cleanup.errors import UsageError
from cleanup.formats import encode_meta, snapshot_schema
from cleanup.sources.base import RawSnapshot


@dataclass(frozen=True)
class SnapshotResult:
    path: str
    source: str
    taken_at: datetime
    taken_at_clock: str
    rows: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "source": self.source, "taken_at": format_time(self.taken_at),
                "taken_at_clock": self.taken_at_clock, "rows": self.rows, "digest": self.digest}


def _source_kind(source: str) -> str:
    lower = source.lower()
    if lower.startswith("delta://"):
        return "delta"
    if lower.startswith("iceberg://"):
        return "iceberg"
    if lower.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if lower.startswith("sqlite://") or lower.endswith((".sqlite", ".sqlite3", ".db")):
        return "sqlite"
    if lower.startswith("duckdb://") or lower.endswith((".duckdb", ".ddb")):
        return "duckdb"
    if lower.endswith((".parquet", ".pq", ".csv", ".csv.gz", ".tsv")):
        return "keylist"
    raise UsageError(
        f"cannot tell what kind of source {source!r} is",
        hint="use a .parquet/.csv key list, a .duckdb or .sqlite file, "
             "duckdb:///path, sqlite:///path, postgresql://..., delta://PATH or "
             "iceberg://CATALOG/NAMESPACE[.TABLE]",
    )


def _strip_scheme(source: str) -> str:
    for scheme in ("sqlite://", "duckdb://"):
        if source.lower().startswith(scheme):
            return source[len(scheme):]
    return source


def finalize_snapshot(raw: RawSnapshot, out: str, *, ref_encoding: str = "literal",
                      ref_base: str | None = None) -> SnapshotResult:
    """Write distinct references in byte order to ``out`` with digest and metadata."""
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = snapshot_schema()
    h = hashlib.sha256()
    rows = 0
    tmp = f"{out}.tmp-{os.getpid()}"
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        reader = con.sql(
            f"SELECT DISTINCT key FROM {raw.from_sql} ORDER BY key"
        ).to_arrow_reader(200_000)
        newline = pa.scalar("", pa.string())
        with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for batch in reader:
                col = batch.column(0).cast(pa.string())
                # sha256 over "key\n" for every key, without a Python loop.
                joined = pc.binary_join_element_wise(col, newline, "\n")
                offsets = joined.buffers()[1]
                data = joined.buffers()[2]
                if data is not None and offsets is not None and len(joined):
                    offs = memoryview(offsets).cast("i")
                    start, end = offs[joined.offset], offs[joined.offset + len(joined)]
                    h.update(memoryview(data)[start:end])
                rows += batch.num_rows
                w.write_batch(pa.RecordBatch.from_arrays([col], schema=schema))
            meta = {
                "kind": "snapshot",
                "source": raw.source,
                "taken_at": format_time(raw.taken_at),
                "taken_at_clock": raw.taken_at_clock,
                "rows": str(rows),
                "digest": "sha256:" + h.hexdigest(),
            }
            if raw.metadata_skew is not None:
                meta["metadata_skew_us"] = str(raw.metadata_skew // timedelta(microseconds=1))
            meta["ref_encoding"] = ref_encoding
            if ref_base:
                meta["ref_base"] = ref_base
            from cleanup.sources.tables import TableSnapshot, encode_roots

            if isinstance(raw, TableSnapshot):  # I20: the table roots this source covers
                meta["table_roots"] = encode_roots(raw.table_roots)
            w.add_key_value_metadata(encode_meta(meta))
        os.replace(tmp, out)
    except duckdb.Error as exc:
        raise UsageError(f"cannot read the references ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return SnapshotResult(out, raw.source, raw.taken_at, raw.taken_at_clock, rows,
                          "sha256:" + h.hexdigest())


def take_snapshot(
    source: str, out: str, *, query: str | None = None, column: str | None = None,
    taken_at: datetime | None = None, ref_encoding: str = "literal",
    ref_base: str | None = None, retention: timedelta | None = None,
) -> SnapshotResult:
    """Capture references from ``source`` into ``out``.

    ``ref_encoding`` (``literal`` or ``uri``) and ``ref_base`` declare how the source
    spells references; both are recorded and used by the resolver at plan time.
    """
    from cleanup.core.paths import ENCODINGS

    if ref_encoding not in ENCODINGS:
        raise UsageError(f"unknown reference encoding {ref_encoding!r}",
                         hint=f"use one of {', '.join(ENCODINGS)}")
    if ref_base is not None and not ref_base.strip():
        raise UsageError("--ref-base is empty", hint="give the URL or path relative "
                                                    "references are relative to")
    from cleanup.sources import keylist, sql

    if taken_at is not None:
        if taken_at.utcoffset() is None:
            raise UsageError("taken_at has no zone",
                             hint="give a zone (Z for UTC): a guessed zone can move the cutoff")
        taken_at = taken_at.astimezone(UTC)
    kind = _source_kind(source)
    if kind != "keylist" and taken_at is not None:
        raise UsageError("--taken-at is only for key lists: a database's own clock gives taken_at")
    if kind != "keylist" and column is not None:
        raise UsageError("--column is only for key lists: a query's first column holds the keys")
    if kind == "keylist" and query is not None:
        raise UsageError("--query is for database sources, not key lists")
    if kind in ("delta", "iceberg") and query is not None:
        raise UsageError(f"--query is for database sources: a {kind} table's own metadata "
                         "gives its references")
    if kind in ("delta", "iceberg") and (ref_encoding != "literal" or ref_base is not None):
        raise UsageError(f"--ref-encoding/--ref-base do not apply to a {kind} table: its "
                         "source decodes paths as its format defines")
    if retention is not None and kind != "delta":
        raise UsageError("--retention is for delta:// sources (files removed within it are "
                         "kept for time travel)")
    if taken_at is not None and taken_at > datetime.now(UTC):
        raise UsageError(f"--taken-at {format_time(taken_at)} is in the future")
    out_dir = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(prefix=".cleanup-snap-", dir=out_dir) as td:
        staged = os.path.join(td, "raw.parquet")
        raw: RawSnapshot
        if kind == "delta":
            from cleanup.sources.delta import delta_source

            raw = delta_source(source[len("delta://"):], retention, staged)
        elif kind == "iceberg":
            from cleanup.sources.iceberg import iceberg_source

            raw = iceberg_source(source[len("iceberg://"):], staged)
        elif kind == "keylist":
            raw = keylist.keylist_source(source, column, taken_at)
        elif kind == "postgres":
            raw = sql.postgres_source(source, query, staged)
        elif kind == "sqlite":
            raw = sql.sqlite_source(_strip_scheme(source), query, staged)
        else:
            raw = sql.duckdb_source(_strip_scheme(source), query, staged)
        return finalize_snapshot(raw, out, ref_encoding=ref_encoding, ref_base=ref_base)


TABLE_KINDS = ("delta", "iceberg")


def take_snapshots(
    sources: list[str], out: str, *, query: str | None = None, column: str | None = None,
    taken_at: datetime | None = None, ref_encoding: str = "literal",
    ref_base: str | None = None, retention: timedelta | None = None,
) -> SnapshotResult:
    """Capture several sources into one snapshot: the union of their references, the
    earliest taken_at (with its clock), each source recorded, every table root declared.

    At most one source may be a non-table source (key list or database): ``query``,
    ``column`` and ``taken_at`` are its options, ``retention`` is for the Delta tables.
    References must all be spelled literally (table sources decode their own paths).
    """
    if len(sources) == 1:
        return take_snapshot(sources[0], out, query=query, column=column, taken_at=taken_at,
                             ref_encoding=ref_encoding, ref_base=ref_base, retention=retention)
    if len(set(sources)) != len(sources):
        raise UsageError("the same source is named twice")
    kinds = [_source_kind(s) for s in sources]
    others = [s for s, k in zip(sources, kinds, strict=True) if k not in TABLE_KINDS]
    if len(others) > 1:
        raise UsageError(f"{len(others)} non-table sources ({', '.join(others)}): at most one "
                         "key list or database can be merged with table sources",
                         hint="snapshot them separately, or union them in one query")
    if ref_encoding != "literal" or ref_base is not None:
        raise UsageError("--ref-encoding/--ref-base cannot apply to several sources at once",
                         hint="table sources decode their own paths; snapshot a source that "
                              "needs them on its own")
    if retention is not None and "delta" not in kinds:
        raise UsageError("--retention is for delta:// sources")
    from cleanup.formats import read_meta
    from cleanup.sources.tables import TableSnapshot, decode_roots

    out_dir = os.path.dirname(os.path.abspath(out))
    parts: list[tuple[str, dict[str, str]]] = []
    with tempfile.TemporaryDirectory(prefix=".cleanup-snap-", dir=out_dir) as td:
        for i, (source, kind) in enumerate(zip(sources, kinds, strict=True)):
            part = os.path.join(td, f"part-{i}.parquet")
            if kind in TABLE_KINDS:
                take_snapshot(source, part, retention=retention if kind == "delta" else None)
            else:
                take_snapshot(source, part, query=query, column=column, taken_at=taken_at)
            parts.append((part, read_meta(part)))
        from cleanup.core.timeutil import parse_time

        first = min(parts, key=lambda p: parse_time(p[1]["taken_at"]))[1]
        skews = [int(m["metadata_skew_us"]) for _p, m in parts if m.get("metadata_skew_us")]
        roots = tuple(r for _p, m in parts for r in decode_roots(m.get("table_roots")))
        from cleanup.core.paths import sql_literal

        union = " UNION ALL ".join(f"SELECT key FROM read_parquet({sql_literal(p)})"
                                   for p, _m in parts)
        described = " + ".join(f"[{m['source']} taken_at {m['taken_at']} ({m['taken_at_clock']})]"
                               for _p, m in parts)
        raw: RawSnapshot = TableSnapshot(
            f"({union})", parse_time(first["taken_at"]), first["taken_at_clock"], described,
            timedelta(microseconds=max(skews, key=abs)) if skews else None,
            table_roots=roots)
        return finalize_snapshot(raw, out)
