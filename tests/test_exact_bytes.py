"""Exact bytes end to end: no column type, no bad value and no spelling of a name may
turn a referenced file into a candidate.

* Reference sources: binary keys (Parquet binary/large_binary, DuckDB/SQLite BLOB,
  PostgreSQL bytea) are decoded as UTF-8, strictly; invalid UTF-8 (also in CSV
  files, SQLite TEXT and SQL_ASCII PostgreSQL text) is refused with the source, the
  row and the bytes; other column types are refused, never cast.
* Local inventories list names that are not UTF-8 losslessly (``key_raw``).
* S3 listings give back keys with spaces, '+', '%', NFC/NFD and control
  characters exactly as they were written.
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanup.errors import UsageError
from cleanup.formats import inventory_key_raw_sql, inventory_schema, read_meta, split_key
from cleanup.snapshot import take_snapshot
from tests.factories import T0, write_inventory_file
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.servers import S3Server
from tests.support import PG_HOST, scratch_database, unavailable

TAKEN = datetime(2026, 5, 14, 21, 30, tzinfo=UTC)
CAFE = "caf\u00e9/x.parquet"  # NFC
CAFE_UTF8 = CAFE.encode("utf-8")  # b'caf\xc3\xa9/x.parquet'
BAD = b"bad\xff/y.parquet"  # not UTF-8


def keys_of(path: Path) -> list[str]:
    keys: list[str] = pq.read_table(path).column("key").to_pylist()
    return keys


def refused(source: str, out: Path, *needles: str, **kw: object) -> str:
    """take_snapshot refuses with a one-line message holding ``needles``; nothing written."""
    with pytest.raises(UsageError) as info:
        take_snapshot(source, str(out), **kw)  # type: ignore[arg-type]
    msg = info.value.message
    assert "\n" not in msg, msg
    assert "\n" not in (info.value.hint or ""), info.value.hint
    for n in needles:
        assert n in msg, (n, msg)
    assert info.value.hint
    assert not out.exists()
    return msg


def run_snapshot_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    return subprocess.run([sys.executable, "-m", "cleanup", "snapshot", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


# --------------------------------------------------------------------------- key lists


@pytest.mark.parametrize("typ", [pa.binary(), pa.large_binary()], ids=str)
def test_parquet_binary_key_column_is_decoded_as_utf8(typ: pa.DataType, tmp_path: Path) -> None:
    """Before: CAST(BLOB AS VARCHAR) gave the text 'caf\\xC3\\xA9/x.parquet'."""
    src = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"k": pa.array([CAFE_UTF8, None, b"t/a"], typ)}), src)
    out = tmp_path / "s.parquet"
    take_snapshot(str(src), str(out), taken_at=TAKEN)
    assert keys_of(out) == ["caf\u00e9/x.parquet", "t/a"]


@pytest.mark.parametrize("typ", [pa.binary(), pa.large_binary(), pa.binary(len(BAD))], ids=str)
def test_parquet_binary_key_that_is_not_utf8_is_refused(typ: pa.DataType,
                                                        tmp_path: Path) -> None:
    src = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"k": pa.array([b"t/" + b"a" * (len(BAD) - 2), BAD], typ)}), src)
    refused(str(src), tmp_path / "s.parquet", str(src), "row 2", "not valid UTF-8",
            BAD.hex(), taken_at=TAKEN)


def test_parquet_string_column_with_invalid_utf8_is_refused(tmp_path: Path) -> None:
    """A string column written without validation: DuckDB refuses it, nothing is escaped."""
    b = pa.array([b"t/a", BAD], pa.binary())
    src = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"k": pa.Array.from_buffers(pa.string(), len(b), b.buffers())}), src)
    with pytest.raises(UsageError, match="not valid UTF8"):
        take_snapshot(str(src), str(tmp_path / "s.parquet"), taken_at=TAKEN)


@pytest.mark.parametrize(("values", "typ"), [
    ([7, 8], "BIGINT"), ([1.5, 2.0], "DOUBLE"), ([datetime(2026, 1, 1)], "TIMESTAMP"),
    ([["a"]], "VARCHAR[]"),
])
def test_parquet_key_column_of_another_type_is_refused(values: list[object], typ: str,
                                                       tmp_path: Path) -> None:
    src = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"k": values}), src)
    refused(str(src), tmp_path / "s.parquet", f"column 'k' is {typ}, not text",
            taken_at=TAKEN)


@pytest.mark.parametrize("name", ["keys.csv", "keys.csv.gz", "keys.tsv"])
def test_csv_key_list_that_is_not_utf8_is_refused_with_its_line(name: str,
                                                                tmp_path: Path) -> None:
    """A Latin-1 file. Before: DuckDB's 'CSV Error on Line: 3 ... Original Line: ok.txt'."""
    data = "key\nok.txt\ncafé.txt\nz.txt\n".encode("latin-1")
    src = tmp_path / name
    src.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    msg = refused(str(src), tmp_path / "s.parquet", str(src), "line 3 is not valid UTF-8",
                  "636166e92e747874", taken_at=TAKEN)
    assert "caf\\xe9.txt" in msg


def test_csv_key_list_in_utf8_keeps_nfc_and_nfd_apart(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", CAFE)
    src = tmp_path / "keys.csv"
    src.write_bytes(f"key\n{CAFE}\n{nfd}\n".encode())
    out = tmp_path / "s.parquet"
    take_snapshot(str(src), str(out), taken_at=TAKEN)
    assert sorted(keys_of(out)) == sorted([CAFE, nfd])


def test_invalid_key_list_is_one_cli_error_line(tmp_path: Path) -> None:
    src = tmp_path / "keys.csv"
    src.write_bytes(b"key\ncaf\xe9\n")
    p = run_snapshot_cli(str(src), "--taken-at", "2026-05-14T21:30:00Z",
                         "-o", str(tmp_path / "s.parquet"))
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2, p.stderr
    assert lines[0].startswith("cleanup: error: ")
    assert "line 2 is not valid UTF-8" in lines[0]
    assert lines[1].startswith("  hint: ")
    assert "iconv" in lines[1]


# --------------------------------------------------------------------------- DuckDB


def _duckdb(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute("CREATE TYPE kind AS ENUM ('t/e1', 't/e2')")
    con.execute("CREATE TABLE f (i INTEGER, b BLOB, e kind, d DATE)")
    con.execute("INSERT INTO f VALUES (1, from_hex(?), 't/e1', DATE '2026-01-01'), "
                "(2, NULL, 't/e2', NULL), (3, from_hex(?), NULL, NULL)",
                [CAFE_UTF8.hex(), BAD.hex()])
    con.close()
    return path


def test_duckdb_blob_keys_are_decoded_as_utf8(tmp_path: Path) -> None:
    """Before: CAST(BLOB AS VARCHAR) gave 'caf\\xC3\\xA9/x.parquet'."""
    db = _duckdb(tmp_path / "m.duckdb")
    out = tmp_path / "s.parquet"
    take_snapshot(str(db), str(out), query="SELECT b FROM f WHERE i < 3")
    assert keys_of(out) == [CAFE]


def test_duckdb_blob_key_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    db = _duckdb(tmp_path / "m.duckdb")
    refused(str(db), tmp_path / "s.parquet", str(db), "row 3", "not valid UTF-8", BAD.hex(),
            query="SELECT b FROM f ORDER BY i")


def test_duckdb_enum_keys_are_their_text(tmp_path: Path) -> None:
    db = _duckdb(tmp_path / "m.duckdb")
    out = tmp_path / "s.parquet"
    take_snapshot(str(db), str(out), query="SELECT e FROM f")
    assert keys_of(out) == ["t/e1", "t/e2"]


@pytest.mark.parametrize(("column", "typ"), [("i", "INTEGER"), ("d", "DATE"),
                                             ("1.5", "DECIMAL(2,1)")])
def test_duckdb_key_column_of_another_type_is_refused(column: str, typ: str,
                                                      tmp_path: Path) -> None:
    db = _duckdb(tmp_path / "m.duckdb")
    refused(str(db), tmp_path / "s.parquet", str(db), f"first column is {typ}, not text",
            query=f"SELECT {column} FROM f")
    # The explicit conversion is the way to say what text is meant.
    out = tmp_path / "ok.parquet"
    take_snapshot(str(db), str(out), query=f"SELECT CAST({column} AS VARCHAR) FROM f")
    assert keys_of(out)


# --------------------------------------------------------------------------- SQLite


def _sqlite(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE f (p, i INTEGER)")
    con.execute("INSERT INTO f VALUES (CAST(? AS TEXT), 1), (?, 2), (NULL, 3), "
                "(CAST(? AS TEXT), 4), (?, 5), (42, 6), (1.5, 7)",
                [CAFE_UTF8, b"t/blob", BAD, BAD])
    con.commit()
    con.close()
    return path


def test_sqlite_text_and_blob_keys_are_exact(tmp_path: Path) -> None:
    db = _sqlite(tmp_path / "m.sqlite")
    out = tmp_path / "s.parquet"
    take_snapshot(str(db), str(out), query="SELECT p FROM f WHERE i <= 3")
    assert keys_of(out) == [CAFE, "t/blob"]


@pytest.mark.parametrize(("i", "what"), [(4, "TEXT"), (5, "BLOB")])
def test_sqlite_key_that_is_not_utf8_is_refused_with_its_row(i: int, what: str,
                                                             tmp_path: Path) -> None:
    """Before, TEXT: 'query failed (Could not decode to UTF-8 column ...)', no row."""
    db = _sqlite(tmp_path / "m.sqlite")
    refused(str(db), tmp_path / "s.parquet", str(db), "row 2", "not valid UTF-8", BAD.hex(),
            query=f"SELECT p FROM f WHERE i IN (1, {i}) ORDER BY i")


@pytest.mark.parametrize(("i", "shown"), [(6, "int '42'"), (7, "float '1.5'")])
def test_sqlite_number_keys_are_refused(i: int, shown: str, tmp_path: Path) -> None:
    """Before: the number 42 became the key '42'."""
    db = _sqlite(tmp_path / "m.sqlite")
    refused(str(db), tmp_path / "s.parquet", str(db), f"row 1 of the query's result is {shown}",
            query=f"SELECT p FROM f WHERE i = {i}")
    out = tmp_path / "ok.parquet"
    take_snapshot(str(db), str(out), query=f"SELECT CAST(p AS TEXT) FROM f WHERE i = {i}")
    assert keys_of(out) == ["42" if i == 6 else "1.5"]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_bytes() -> Iterator[str]:
    import psycopg

    with scratch_database() as url:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE f (b bytea, i int)")
            c.cursor().executemany("INSERT INTO f VALUES (%s, %s)",
                                   [(CAFE_UTF8, 1), (None, 2), (BAD, 3)])
        yield url


@pytest.mark.postgres
def test_postgres_bytea_keys_are_decoded_as_utf8(pg_bytes: str, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    take_snapshot(pg_bytes, str(out), query="SELECT b FROM f WHERE i < 3")
    assert keys_of(out) == [CAFE]


@pytest.mark.postgres
def test_postgres_bytea_key_that_is_not_utf8_is_refused(pg_bytes: str, tmp_path: Path) -> None:
    """Before: 'a reference is binary and not valid UTF-8', naming neither source nor row."""
    refused(pg_bytes, tmp_path / "s.parquet", pg_bytes, "row 3", "not valid UTF-8", BAD.hex(),
            query="SELECT b FROM f ORDER BY i")


@pytest.mark.postgres
@pytest.mark.parametrize(("expr", "shown"), [("i", "int '1'"),
                                             ("gen_random_uuid()", "UUID")])
def test_postgres_key_column_of_another_type_is_refused(pg_bytes: str, expr: str, shown: str,
                                                        tmp_path: Path) -> None:
    """Before: the integer 1 became the key '1'."""
    refused(pg_bytes, tmp_path / "s.parquet", "row 1 of the query's result is", shown,
            query=f"SELECT {expr} FROM f ORDER BY i LIMIT 1")


@pytest.fixture(scope="module")
def pg_sql_ascii() -> Iterator[str]:
    """A SQL_ASCII database: its text columns hold any bytes, UTF-8 or not."""
    import psycopg

    try:
        admin = psycopg.connect(f"postgresql://postgres@{PG_HOST}/postgres", autocommit=True,
                                connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL server at {PG_HOST} is unreachable: {exc}".splitlines()[0])
    name = f"cleanup_test_{uuid.uuid4().hex}"
    admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' "
                  "LC_CTYPE 'C' TEMPLATE template0")
    url = f"postgresql://postgres@{PG_HOST}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE f (p text, i int)")
            for i, raw in enumerate([CAFE_UTF8, BAD]):
                c.execute(f"INSERT INTO f VALUES (convert_from('\\x{raw.hex()}'::bytea, "
                          f"'SQL_ASCII'), {i + 1})")
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
def test_postgres_sql_ascii_text_keys(pg_sql_ascii: str, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    take_snapshot(pg_sql_ascii, str(out), query="SELECT p FROM f WHERE i = 1")
    assert keys_of(out) == [CAFE]
    refused(pg_sql_ascii, tmp_path / "bad.parquet", "row 2", "not valid UTF-8", BAD.hex(),
            query="SELECT p FROM f ORDER BY i")
    # A query the connection cannot encode is a usage error, not a crash.
    refused(pg_sql_ascii, tmp_path / "q.parquet", "cannot be sent",
            query="SELECT p FROM f WHERE p = 'café'")


# --------------------------------------------------------------------------- local names


def _touch(root: Path, rel: bytes, data: bytes = b"x") -> None:
    fd = os.open(os.path.join(os.fsencode(root), rel), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_local_names_that_are_not_utf8_are_listed_losslessly(tmp_path: Path) -> None:
    """Before: exit 1, UnicodeEncodeError ('surrogates not allowed')."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "ok").mkdir()
    (store / "ok" / "a.parquet").write_bytes(b"aaa")
    (store / CAFE.split("/")[0]).mkdir()
    (store / CAFE).write_bytes(b"cc")
    _touch(store, b"bad\xff.bin", b"12345")
    os.mkdir(os.path.join(os.fsencode(store), b"dir\xfe"))
    _touch(store, b"dir\xfe/in.bin", b"1")
    inv = tmp_path / "inv.parquet"
    r = run_cli(["inventory", str(store), "-o", str(inv), "--json"])
    assert r.code == 0, r.err
    t = pq.read_table(inv)
    assert t.schema.remove_metadata() == inventory_schema()
    rows = {row["key"]: row for row in t.to_pylist()}
    assert set(rows) == {"ok/a.parquet", CAFE, "bad\\xff.bin", "dir\\xfe/in.bin"}
    assert rows["bad\\xff.bin"]["key_raw"] == b"bad\xff.bin"
    assert rows["bad\\xff.bin"]["size"] == 5
    assert rows["dir\\xfe/in.bin"]["key_raw"] == b"dir\xfe/in.bin"
    assert rows["ok/a.parquet"]["key_raw"] is None
    assert rows["ok/a.parquet"]["size"] == 3
    assert rows[CAFE]["key_raw"] is None
    # The raw bytes name the file exactly.
    assert os.path.getsize(os.path.join(os.fsencode(store), rows["bad\\xff.bin"]["key_raw"])) == 5
    assert read_meta(str(inv))["undecodable_names"] == "2"


def test_undecodable_count_is_zero_for_ordinary_listings(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "a").write_text("a")
    inv = tmp_path / "inv.parquet"
    assert run_cli(["inventory", str(store), "-o", str(inv)]).code == 0
    assert read_meta(str(inv))["undecodable_names"] == "0"
    assert pq.read_table(inv).column("key_raw").to_pylist() == [None]


def test_split_key() -> None:
    assert split_key("a/b") == ("a/b", None)
    assert split_key(CAFE) == (CAFE, None)
    assert split_key(os.fsdecode(b"x/bad\xff")) == ("x/bad\\xff", b"x/bad\xff")


def test_inventory_without_key_raw_reads_as_all_null(tmp_path: Path) -> None:
    """Inventories written before key_raw existed keep working."""
    new = write_inventory_file(tmp_path / "new.parquet", "/s", [("a", 1, T0)])
    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(new).drop_columns(["key_raw"]), old)
    con = duckdb.connect()
    for path in (new, old):
        expr = inventory_key_raw_sql(str(path))
        rows = con.execute(f"SELECT key, {expr} AS key_raw FROM read_parquet(?)",
                           [str(path)]).fetchall()
        assert rows == [("a", None)]
    assert inventory_key_raw_sql(str(old)) == "CAST(NULL AS BLOB)"


# --------------------------------------------------------------------------- S3 keys


# NFC and NFD differ in the last segment only: rclone serve s3 (local backend) folds
# directory names to NFC on write, which real S3 never does.
S3_KEYS = ["sp ace.txt", "trail ", " lead", "x+y.txt", "p%41.bin", "p%2B.bin", "100%",
           "sp%20ace", "amp&lt;;.txt", "q'\"<>.txt", "n/caf\u00e9", "n/cafe\u0301",
           "tab\there", "ctl\x01x", "cr\rx", "emoji\U0001f600", "\u2028sep", "+", "%%"]


@pytest.mark.s3
def test_s3_listing_keeps_every_key_exactly(s3_server: S3Server, tmp_path: Path) -> None:
    """botocore asks for EncodingType=url and unquotes exactly once: keys come back as
    written, NFC and NFD apart, '%' and '+' untouched, control characters intact."""
    bucket = s3_server.bucket()
    c = s3_server.client()
    for k in S3_KEYS:
        c.put_object(Bucket=bucket, Key="data/" + k, Body=k.encode())
    inv = tmp_path / "inv.parquet"
    r = run_cli(["inventory", f"s3://{bucket}/data/", "-o", str(inv)], env=s3_server.env())
    assert r.code == 0, r.err
    t = pq.read_table(inv)
    got = dict(zip(t.column("key").to_pylist(), t.column("size").to_pylist(), strict=True))
    assert got == {k: len(k.encode()) for k in S3_KEYS}
    assert t.column("key_raw").null_count == len(S3_KEYS)
    assert read_meta(str(inv))["undecodable_names"] == "0"
