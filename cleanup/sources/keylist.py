"""Parquet and CSV key lists. Their taken_at is a claim given by hand (``--taken-at``).

Keys are taken byte for byte, never converted by guesswork (a key that changes on
the way matches no file and makes a referenced file look unused):

* CSV/TSV files are UTF-8 text. Any other encoding (Latin-1, UTF-16, ...) is
  refused with the line and bytes that are not UTF-8; the fix is to convert the
  file (``iconv -f latin1 -t utf-8``).
* Parquet string columns are used as they are (DuckDB checks they are UTF-8).
* Parquet binary columns (``binary``, ``large_binary``, fixed-size binary) are
  decoded as UTF-8, strictly: a value that is not valid UTF-8 is refused with
  its row number and bytes, never escaped or replaced.
* Any other column type (integers, floats, dates, lists, ...) is refused: those
  have more than one text form, so converting them would be a guess. Write the
  keys as strings.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
from datetime import datetime

from cleanup.core.paths import sql_literal
from cleanup.errors import UsageError
from cleanup.sources.base import RawSnapshot

_CHUNK = 1 << 20
_TEXT_HINT = "key lists are UTF-8 text: convert the file, e.g. iconv -f latin1 -t utf-8"


def shown_bytes(raw: bytes, limit: int = 60) -> str:
    """``raw`` for a one-line message: Python bytes notation and hex, cut at ``limit``."""
    cut = raw[:limit]
    more = "..." if len(raw) > limit else ""
    return f"{cut!r}{more} (hex {cut.hex()}{more})"


def _open_text_bytes(path: str) -> io.BufferedIOBase:
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's with


def check_utf8_text(path: str) -> None:
    """Refuse a text file that is not UTF-8, naming the first bad line and its bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with _open_text_bytes(path) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                final = not chunk
                try:
                    decoder.decode(chunk, final)
                except UnicodeDecodeError as exc:
                    data = bytes(exc.object)
                    line += data.count(b"\n", 0, exc.start)
                    start = data.rfind(b"\n", 0, exc.start) + 1
                    end = data.find(b"\n", exc.end)
                    text = data[start:end if end >= 0 else len(data)].rstrip(b"\r")
                    raise UsageError(f"{path}: line {line} is not valid UTF-8: "
                                     f"{shown_bytes(text)}", hint=_TEXT_HINT) from None
                if final:
                    return
                line += chunk.count(b"\n")
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise UsageError(f"{path}: cannot read ({exc})") from None


def check_utf8_binary_column(path: str, column: str) -> None:
    """Refuse a Parquet binary column holding a value that is not UTF-8 (row and bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=65536, columns=[column]):
            col = batch.column(0)
            try:
                # The cast checks UTF-8 in C; only a failing batch is searched in Python.
                col.cast(pa.large_string() if pa.types.is_large_binary(col.type)
                         else pa.string()).validate(full=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                for i, value in enumerate(col.to_pylist()):
                    try:
                        if value is not None:
                            value.decode("utf-8")
                    except UnicodeDecodeError:
                        raise UsageError(
                            f"{path}: row {row + i + 1} of binary column {column!r} is not "
                            f"valid UTF-8: {shown_bytes(value)}",
                            hint="keys are paths as UTF-8 text: fix that row, or write "
                                 "the column as strings") from None
            row += batch.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path}: cannot read column {column!r} "
                         f"({str(exc).splitlines()[0]})") from None


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
        check_utf8_text(path)
        # Delimiter and header fixed, never sniffed: a guess could drop the first key.
        delim = "\t" if lower.endswith(".tsv") else ","
        reader = (f"read_csv({sql_literal(path)}, all_varchar=true, header=true, "
                  f"delim={sql_literal(delim)}, quote='\"')")
    else:
        raise UsageError(f"{path}: unknown key list format", hint="use .parquet or .csv")
    con = duckdb.connect()
    try:
        described = con.sql(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except duckdb.Error as exc:
        raise UsageError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    cols = [str(r[0]) for r in described]
    types = {str(r[0]): str(r[1]) for r in described}
    if column is None:
        if len(cols) != 1:
            raise UsageError(f"{path} has columns {cols}; say which holds the keys with --column")
        column = cols[0]
    if column not in cols:
        raise UsageError(f"{path} has no column {column!r} (columns: {cols})")
    ident = '"' + column.replace('"', '""') + '"'
    ctype = types[column]
    if ctype == "VARCHAR":
        expr = ident
    elif ctype == "BLOB":
        check_utf8_binary_column(path, column)
        expr = f"decode({ident})"
    else:
        raise UsageError(
            f"{path}: column {column!r} is {ctype}, not text: keys must be strings",
            hint="write the keys as a string (or UTF-8 binary) column; other types have "
                 "more than one text form, so they are never converted")
    rel = f"(SELECT {expr} AS key FROM {reader} WHERE {ident} IS NOT NULL)"
    return RawSnapshot(rel, taken_at, "claimed", f"keylist:{os.path.abspath(path)}#{column}")
