"""SQL reference sources: DuckDB, SQLite and PostgreSQL.

Each runs the user's query inside one read-only, repeatable-read transaction
and takes taken_at from that same transaction, captured *before* the query's
read snapshot exists (so taken_at is never later than the snapshot).
The query's first column holds the references; NULLs are ignored.
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


def _write_keys(rows_iter: Any, tmp_parquet: str) -> None:
    """Stream the first column of fetched row chunks into a one-column Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string())])
    with pq.ParquetWriter(tmp_parquet, schema) as w:
        for chunk in rows_iter:
            keys = [_key_text(r[0]) for r in chunk]
            w.write_batch(pa.RecordBatch.from_pydict({"key": keys}, schema=schema))


def _key_text(value: Any) -> str | None:
    """A reference as text. Binary values are decoded as UTF-8, never repr()'d: a
    ``b'...'`` string would match no key and make a referenced file look unused."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("a reference is binary and not valid UTF-8",
                             hint="select the path as text") from None
    return str(value)


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
                _write_keys(_fetch_chunks(cur), tmp_parquet)
    except psycopg.Error as exc:
        msg = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise UsageError(f"{redact_url(url)}: query failed ({msg})") from None
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
    try:
        conn.execute("BEGIN")
        # SQLite is embedded: its clock is the local one. The read snapshot starts at
        # the first table read, after this point.
        taken_at = datetime.now(UTC)
        cur = conn.execute(q)
        _write_keys(_fetch_chunks(cur), tmp_parquet)
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
        con.execute(
            f"COPY (SELECT CAST(k AS VARCHAR) AS key FROM (\n{_strip_sql(q)}\n) AS t(k)) "
            f"TO {sql_literal(tmp_parquet)} (FORMAT parquet)"
        )
        con.execute("COMMIT")
    except duckdb.Error as exc:
        raise UsageError(f"{path}: query failed ({str(exc).splitlines()[0]})") from None
    finally:
        con.close()
    return RawSnapshot(_staged(tmp_parquet), taken_at, "local:duckdb-embedded",
                       f"duckdb:{os.path.abspath(path)}")
