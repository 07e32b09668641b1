"""Parquet and CSV key lists. Their taken_at is a claim given by hand (``--taken-at``)."""

from __future__ import annotations

import os
from datetime import datetime

from cleanup.core.paths import sql_literal
from cleanup.errors import UsageError
from cleanup.sources.base import RawSnapshot


def keylist_source(path: str, column: str | None, taken_at: datetime | None) -> RawSnapshot:
    import duckdb

    if taken_at is None:
        raise UsageError(
            f"{path}: a key list carries no clock, so --taken-at is required",
            hint="give the time the list was complete as of, with a zone: "
                 "--taken-at 2026-05-14T21:30:00Z",
        )
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        reader = f"read_parquet({sql_literal(path)})"
    elif lower.endswith((".csv", ".csv.gz", ".tsv")):
        # Delimiter and header fixed, never sniffed: a guess could drop the first key.
        delim = "\t" if lower.endswith(".tsv") else ","
        reader = (f"read_csv({sql_literal(path)}, all_varchar=true, header=true, "
                  f"delim={sql_literal(delim)}, quote='\"')")
    else:
        raise UsageError(f"{path}: unknown key list format", hint="use .parquet or .csv")
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
    except duckdb.Error as exc:
        raise UsageError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    if column is None:
        if len(cols) != 1:
            raise UsageError(f"{path} has columns {cols}; say which holds the keys with --column")
        column = cols[0]
    if column not in cols:
        raise UsageError(f"{path} has no column {column!r} (columns: {cols})")
    ident = '"' + column.replace('"', '""') + '"'
    rel = f"(SELECT CAST({ident} AS VARCHAR) AS key FROM {reader} WHERE {ident} IS NOT NULL)"
    return RawSnapshot(rel, taken_at, "claimed", f"keylist:{os.path.abspath(path)}#{column}")
