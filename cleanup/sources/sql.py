"""SQL reference sources: DuckDB, SQLite and PostgreSQL.

Each runs the user's query inside one read-only, repeatable-read transaction
and takes taken_at from that same transaction, captured *before* the query's
read snapshot exists (so taken_at is never later than the snapshot).
The query's first column holds the references; NULLs are ignored.

References are taken byte for byte; a value is never converted by guesswork (a
reference that changes on the way matches no file and makes a referenced file
look unused). The first column must be:

* text (DuckDB ``VARCHAR`` or ``ENUM``; SQLite ``TEXT``; PostgreSQL ``text``,
  ``varchar``, ...): used as it is. SQLite TEXT and PostgreSQL text in a
  ``SQL_ASCII`` database may hold bytes that are not UTF-8: refused, as below.
* binary (DuckDB ``BLOB``, SQLite ``BLOB``, PostgreSQL ``bytea``): decoded as
  UTF-8, strictly. A value that is not valid UTF-8 is refused with its row and
  bytes, never escaped (DuckDB's ``CAST(BLOB AS VARCHAR)`` would turn
  ``caf\xc3\xa9`` into the text ``caf\\xC3\\xA9``) nor replaced.
* anything else (integers, floats, dates, UUIDs, JSON, arrays, ...) is refused:
  those have more than one text form. Convert in the query -- ``CAST(id AS
  VARCHAR)``, ``format('%s/%s', dir, name)`` -- so reviewers see the conversion.
"""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from cleanup.core.paths import sql_literal
from cleanup.errors import UsageError
from cleanup.sources.base import RawSnapshot, skew_from_bracket

FETCH_ROWS = 50_000


_SECRET_PARAMS = ("password", "sslpassword", "passfile", "sslkey")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` -> without the secrets.

    Parameter names are percent-decoded first, as libpq does (``pass%77ord``).
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UsageError("invalid port in the PostgreSQL URL") from None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc = f"{netloc}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query = "&".join(
        q for q in parts.query.split("&")
        if q and unquote(q.partition("=")[0]).strip().lower() not in _SECRET_PARAMS
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _secrets_of(url: str) -> list[str]:
    """Every spelling of every secret in ``url``, for scrubbing messages."""
    parts = urlsplit(url)
    out = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        if ":" in userinfo:
            raw = userinfo.split(":", 1)[1]
            out += [raw, unquote(raw)]
    for q in parts.query.split("&"):
        name, _, value = q.partition("=")
        if unquote(name).strip().lower() in _SECRET_PARAMS and value:
            out += [value, unquote(value)]
    return sorted({s for s in out if s}, key=len, reverse=True)


def _scrub(message: str, url: str) -> str:
    for secret in _secrets_of(url):
        message = message.replace(secret, "***")
    return message


def _write_keys(rows_iter: Any, tmp_parquet: str, where: str) -> None:
    """Stream the first column of fetched row chunks into a one-column Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string())])
    row = 0
    with pq.ParquetWriter(tmp_parquet, schema) as w:
        for chunk in rows_iter:
            keys = [_key_text(r[0], where, row + i + 1) for i, r in enumerate(chunk)]
            row += len(chunk)
            w.write_batch(pa.RecordBatch.from_pydict({"key": keys}, schema=schema))


_CONVERT_HINT = ("return the path as text; convert other types in the query "
                 "(e.g. CAST(col AS TEXT)) so reviewers see the conversion")


def _key_text(value: Any, where: str = "the query", row: int = 0) -> str | None:
    """A reference as text (see the module docstring for the rule).

    Binary values are decoded as UTF-8, strictly, never repr()'d: a ``b'...'``
    string would match no key and make a referenced file look unused.
    """
    from cleanup.sources.keylist import shown_bytes

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(
                f"{where}: row {row} of the query's result is not valid UTF-8: "
                f"{shown_bytes(raw)}",
                hint="references are paths as UTF-8 text: fix that row, or convert it "
                     "to UTF-8 text in the query") from None
    raise UsageError(
        f"{where}: row {row} of the query's result is {type(value).__name__} "
        f"{str(value)[:60]!r}, not text", hint=_CONVERT_HINT)


def _duckdb_key_sql(column_type: str, where: str) -> str:
    """DuckDB expression turning the query's first column ``k`` into the key text."""
    if column_type == "VARCHAR":
        return "k"
    if column_type.startswith("ENUM("):
        return "CAST(k AS VARCHAR)"  # an ENUM's values are strings: exact
    if column_type == "BLOB":
        return "decode(k)"  # strict: fails on invalid UTF-8, unlike CAST(k AS VARCHAR)
    raise UsageError(f"{where}: the query's first column is {column_type}, not text",
                     hint=_CONVERT_HINT.replace("TEXT", "VARCHAR"))


def _duckdb_bad_blob(con: Any, sub: str) -> tuple[int, bytes] | None:
    """The first row (1-based) of the query's result holding a BLOB that is not UTF-8."""
    cur = con.execute(f"SELECT k FROM {sub}")
    row = 0
    while chunk := cur.fetchmany(FETCH_ROWS):
        for i, (value,) in enumerate(chunk):
            if value is not None:
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    return row + i + 1, bytes(value)
        row += len(chunk)
    return None


def _fetch_chunks(cur: Any) -> Any:
    while chunk := cur.fetchmany(FETCH_ROWS):
        yield chunk


def _require_query(query: str | None, source: str) -> str:
    if not query:
        raise UsageError(f"{source}: --query is required for a database source",
                         hint="e.g. --query 'SELECT path FROM files'")
    return query


def _strip_sql(q: str) -> str:
    """A trailing ';' would end the statement we wrap the query in."""
    return re.sub(r"[\s;]+\Z", "", q)


def _staged(tmp_parquet: str) -> str:
    return f"(SELECT key FROM read_parquet({sql_literal(tmp_parquet)}) WHERE key IS NOT NULL)"


def postgres_source(url: str, query: str | None, tmp_parquet: str) -> RawSnapshot:
    import psycopg

    q = _require_query(query, redact_url(url))
    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        msg = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise UsageError(f"{redact_url(url)}: cannot connect ({msg})",
                         hint="check host, port, user and database in the URL") from None
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            before = datetime.now(UTC)
            # now() is the transaction's start; the REPEATABLE READ snapshot is
            # taken by this first statement, i.e. at or after now().
            row = conn.execute("SELECT now(), clock_timestamp()").fetchone()
            after = datetime.now(UTC)
            if row is None:
                raise UsageError(f"{redact_url(url)}: SELECT now() returned no row")
            taken_at, server_clock = row[0].astimezone(UTC), row[1].astimezone(UTC)
            with conn.cursor(name="cleanup_snapshot") as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(q)
                _write_keys(_fetch_chunks(cur), tmp_parquet, redact_url(url))
    except psycopg.Error as exc:
        msg = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise UsageError(f"{redact_url(url)}: query failed ({msg})") from None
    except UnicodeEncodeError as exc:  # a non-ASCII query for a SQL_ASCII database
        raise UsageError(f"{redact_url(url)}: the query cannot be sent in the connection's "
                         f"encoding {exc.encoding} ({exc.object[exc.start:exc.end]!r})",
                         hint="write non-ASCII characters of the query as escapes, "
                              "e.g. E'\\u00e9'") from None
    finally:
        conn.close()
    return RawSnapshot(_staged(tmp_parquet), taken_at, "metadata:postgresql",
                       f"postgresql:{redact_url(url)}",
                       skew_from_bracket(server_clock, before, after))


def sqlite_source(path: str, query: str | None, tmp_parquet: str) -> RawSnapshot:
    q = _require_query(query, path)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such SQLite file")
    try:
        # A proper file: URI, so '#' or '?' in the path cannot open another file.
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: cannot open ({exc})") from None
    # TEXT arrives as bytes and is decoded (strictly) by _key_text, which names the row
    # of a value that is not UTF-8; sqlite3's own decoding would only say "could not
    # decode". TEXT and BLOB then follow the same rule.
    conn.text_factory = bytes
    try:
        conn.execute("BEGIN")
        # SQLite is embedded: its clock is the local one. The read snapshot starts at
        # the first table read, after this point.
        taken_at = datetime.now(UTC)
        cur = conn.execute(q)
        _write_keys(_fetch_chunks(cur), tmp_parquet, path)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: query failed ({exc})") from None
    finally:
        conn.close()
    return RawSnapshot(_staged(tmp_parquet), taken_at, "local:sqlite-embedded",
                       f"sqlite:{os.path.abspath(path)}")


def duckdb_source(path: str, query: str | None, tmp_parquet: str) -> RawSnapshot:
    import duckdb

    q = _require_query(query, path)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such DuckDB file")
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise UsageError(f"{path}: cannot open ({str(exc).splitlines()[0]})") from None
    try:
        con.execute("BEGIN TRANSACTION")
        # now() is the transaction's start, so <= its snapshot. Epoch microseconds
        # avoid DuckDB's pytz dependency for TIMESTAMPTZ results.
        row = con.execute("SELECT epoch_us(now())").fetchone()
        if row is None:
            raise UsageError(f"{path}: SELECT now() returned no row")
        taken_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(row[0]))
        sub = f"(\n{_strip_sql(q)}\n) AS t(k)"
        described = con.execute(f"DESCRIBE SELECT k FROM {sub}").fetchall()
        key_sql = _duckdb_key_sql(str(described[0][1]), path)
        try:
            con.execute(f"COPY (SELECT {key_sql} AS key FROM {sub}) "
                        f"TO {sql_literal(tmp_parquet)} (FORMAT parquet)")
        except duckdb.ConversionException:
            if key_sql != "decode(k)":
                raise
            con.execute("ROLLBACK")  # the failed statement ended the transaction's use
            bad = _duckdb_bad_blob(con, sub)
            if bad is None:
                raise
            from cleanup.sources.keylist import shown_bytes

            raise UsageError(
                f"{path}: row {bad[0]} of the query's result is not valid UTF-8: "
                f"{shown_bytes(bad[1])}",
                hint="references are paths as UTF-8 text: fix that row, or convert it "
                     "to UTF-8 text in the query") from None
        con.execute("COMMIT")
    except duckdb.Error as exc:
        raise UsageError(f"{path}: query failed ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    return RawSnapshot(_staged(tmp_parquet), taken_at, "local:duckdb-embedded",
                       f"duckdb:{os.path.abspath(path)}")
