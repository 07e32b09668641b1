"""`cleanup snapshot` sources (I3 snapshot-sound): key lists, DuckDB, SQLite, PostgreSQL.

Every source is exercised through the library (:func:`cleanup.snapshot.take_snapshot`)
and through the real command line (``python -m cleanup snapshot``): exit 0 on success,
exit 2 with exactly one ``cleanup: error: ...`` line (and at most one ``  hint: ...``
line) on bad input, never a traceback, and nothing written on refusal.

PostgreSQL tests use the server at 127.0.0.1:5432 (trust auth) and a scratch database
created for the session. In CI (``CI=true``) an unreachable server fails them; elsewhere
they are skipped with a message saying the server is unreachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanup.errors import UsageError
from cleanup.formats import read_meta
from cleanup.snapshot import take_snapshot
from tests.support import scratch_database

TAKEN = "2026-05-14T21:30:00Z"
TAKEN_DT = datetime(2026, 5, 14, 21, 30, tzinfo=UTC)
PG_HOST = "127.0.0.1:5432"

# Keys whose byte order, code point order and "human" order differ; NFC and NFD forms of
# the same word are different object keys and must both survive.
UNICODE_KEYS = ["z/1", "Z/1", "é/k", "e\u0301/k", "日本/データ.parquet", "😀/x", "～/y",
                " lead", "trail ", "a b/c"]


# --------------------------------------------------------------------------- helpers


def run_snapshot(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cleanup snapshot ARGS`` as a real process."""
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    return subprocess.run([sys.executable, "-m", "cleanup", "snapshot", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def assert_ok(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Exit 0; with ``--json`` the printed result."""
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    out = p.stdout.strip()
    if out.startswith("{"):
        parsed: dict[str, Any] = json.loads(out)
        return parsed
    return {}


def assert_usage_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one ``cleanup: error:`` line plus at most one ``  hint:`` line, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert "Traceback" not in p.stdout, p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines, "no error message on stderr"
    assert lines[0].startswith("cleanup: error: "), p.stderr
    assert len(lines) <= 2, p.stderr
    if len(lines) == 2:
        assert lines[1].startswith("  hint: "), p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    return p.stderr


def digest_of(keys: Iterable[str]) -> str:
    """I3's digest computed independently: sha256 over each sorted distinct key + "\\n"."""
    h = hashlib.sha256()
    for k in sorted({k.encode("utf-8") for k in keys}):
        h.update(k + b"\n")
    return "sha256:" + h.hexdigest()


def sorted_distinct(keys: Iterable[str | None]) -> list[str]:
    return [b.decode("utf-8") for b in sorted({k.encode("utf-8") for k in keys if k is not None})]


def read_keys(path: Path) -> list[str]:
    keys: list[str] = pq.read_table(path).column("key").to_pylist()
    return keys


def assert_snapshot_file(out: Path, expected_keys: list[str], *, clock: str,
                         source: str | None = None) -> dict[str, str]:
    """The written snapshot: distinct sorted keys, rows, digest, clock, source."""
    keys = read_keys(out)
    assert keys == expected_keys
    assert pq.read_schema(out).field("key").type == pa.string()
    meta = read_meta(str(out))
    assert meta["kind"] == "snapshot"
    assert meta["rows"] == str(len(expected_keys))
    assert meta["digest"] == digest_of(expected_keys)
    assert meta["taken_at_clock"] == clock
    if source is not None:
        assert meta["source"] == source
    return meta


def taken_at_of(out: Path) -> datetime:
    t = datetime.fromisoformat(read_meta(str(out))["taken_at"].replace("Z", "+00:00"))
    assert t.tzinfo is not None
    return t


def only_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --------------------------------------------------------------------------- key lists


def test_csv_key_list_with_column(tmp_path: Path) -> None:
    rows = ["b/2", "a/1", "b/2", *UNICODE_KEYS, "a/1"]
    src = tmp_path / "refs.csv"
    body = "".join(f'"{k}",{i}\n' for i, k in enumerate(rows))
    src.write_text("path,n\n" + body, encoding="utf-8")
    out = tmp_path / "snap.parquet"
    res = assert_ok(run_snapshot(str(src), "-o", str(out), "--column", "path",
                                 "--taken-at", TAKEN, "--json"))
    expected = sorted_distinct(rows)
    meta = assert_snapshot_file(out, expected, clock="claimed",
                                source=f"keylist:{src.resolve()}#path")
    assert meta["taken_at"] == TAKEN
    assert "metadata_skew_us" not in meta  # a claim, not a clock
    assert res == {"path": str(out), "source": meta["source"], "taken_at": TAKEN,
                   "taken_at_clock": "claimed", "rows": len(expected),
                   "digest": digest_of(rows)}
    assert only_files(tmp_path) == {"refs.csv", "snap.parquet"}  # no temporary leftovers


def test_parquet_key_list_single_column(tmp_path: Path) -> None:
    keys: list[str | None] = ["x/3", None, "x/1", "x/3", *UNICODE_KEYS, None, "x/2"]
    src = tmp_path / "refs.parquet"
    pq.write_table(pa.table({"ref": pa.array(keys, pa.string())}), src)
    out = tmp_path / "snap.parquet"
    res = take_snapshot(str(src), str(out), taken_at=TAKEN_DT)
    expected = sorted_distinct(keys)
    assert {"e\u0301/k", "é/k"} <= set(expected)  # no Unicode normalization
    assert {" lead", "trail "} <= set(expected)  # no trimming
    meta = assert_snapshot_file(out, expected, clock="claimed",
                                source=f"keylist:{src.resolve()}#ref")
    assert meta["taken_at"] == TAKEN
    assert res.rows == len(expected)
    assert res.digest == digest_of(expected)
    assert res.taken_at == TAKEN_DT
    assert res.taken_at_clock == "claimed"
    assert res.source == meta["source"]
    assert res.path == str(out)


def test_parquet_key_list_column_selection(tmp_path: Path) -> None:
    src = tmp_path / "files.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "path": ["c", "a", "c"], "other": ["z", "y", "x"]}),
                   src)
    out = tmp_path / "snap.parquet"
    res = take_snapshot(str(src), str(out), column="path", taken_at=TAKEN_DT)
    assert read_keys(out) == ["a", "c"]
    assert res.source.endswith("#path")
    # A non-string column is refused, not cast: the file "007" listed as the integer 7
    # would become the key "7", and the referenced file "007" a candidate.
    out2 = tmp_path / "snap2.parquet"
    with pytest.raises(UsageError, match="column 'n' is BIGINT, not text"):
        take_snapshot(str(src), str(out2), column="n", taken_at=TAKEN_DT)
    assert not out2.exists()


def test_digest_is_sha256_of_sorted_keys_plus_newline(tmp_path: Path) -> None:
    keys = ["b", "a", "ä", "A", "😀", "～", "a", "日本"]
    src = tmp_path / "refs.parquet"
    pq.write_table(pa.table({"key": keys}), src)
    res = take_snapshot(str(src), str(tmp_path / "s.parquet"), taken_at=TAKEN_DT)
    by_hand = hashlib.sha256("A\na\nb\nä\n日本\n～\n😀\n".encode()).hexdigest()
    assert res.digest == "sha256:" + by_hand
    assert res.rows == 7


def test_multi_column_key_list_without_column_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "refs.csv"
    csv.write_text("path,n\na,1\nb,2\n")
    out = tmp_path / "snap.parquet"
    assert_usage_error(run_snapshot(str(csv), "-o", str(out), "--taken-at", TAKEN), "--column")
    assert_usage_error(run_snapshot(str(csv), "-o", str(out), "--taken-at", TAKEN,
                                    "--column", "nope"), "no column 'nope'")
    pqf = tmp_path / "refs.parquet"
    pq.write_table(pa.table({"path": ["a"], "n": [1]}), pqf)
    with pytest.raises(UsageError, match="--column"):
        take_snapshot(str(pqf), str(out), taken_at=TAKEN_DT)
    assert only_files(tmp_path) == {"refs.csv", "refs.parquet"}


def test_missing_taken_at_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "refs.csv"
    csv.write_text("path\na\n")
    out = tmp_path / "snap.parquet"
    err = assert_usage_error(run_snapshot(str(csv), "-o", str(out)),
                             "--taken-at is required")
    assert "hint:" in err
    with pytest.raises(UsageError, match="--taken-at is required"):
        take_snapshot(str(csv), str(out))
    assert not out.exists()


def test_naive_taken_at_is_refused_on_the_command_line(tmp_path: Path) -> None:
    csv = tmp_path / "refs.csv"
    csv.write_text("path\na\n")
    out = tmp_path / "snap.parquet"
    p = run_snapshot(str(csv), "-o", str(out), "--taken-at", "2026-05-14T21:30:00")
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "has no zone" in p.stderr
    assert not out.exists()


def test_naive_taken_at_error_is_one_cleanup_error_line(tmp_path: Path) -> None:
    """Like every other usage error, a bad --taken-at is a `cleanup: error:` line."""
    csv = tmp_path / "refs.csv"
    csv.write_text("path\na\n")
    p = run_snapshot(str(csv), "-o", str(tmp_path / "s.parquet"),
                     "--taken-at", "2026-05-14T21:30:00")
    assert_usage_error(p, "has no zone")


def test_naive_taken_at_is_refused_by_the_library(tmp_path: Path) -> None:
    csv = tmp_path / "refs.csv"
    csv.write_text("path\na\n")
    out = tmp_path / "snap.parquet"
    with pytest.raises(UsageError, match="zone"):
        take_snapshot(str(csv), str(out), taken_at=datetime(2026, 5, 14, 21, 30))  # noqa: DTZ001
    assert not out.exists()


def test_future_taken_at_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "refs.csv"
    csv.write_text("path\na\n")
    out = tmp_path / "snap.parquet"
    future = datetime.now(UTC) + timedelta(hours=1)
    in_plus_two = future.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert_usage_error(run_snapshot(str(csv), "-o", str(out), "--taken-at", in_plus_two),
                       "in the future")
    assert_usage_error(run_snapshot(str(csv), "-o", str(out), "--taken-at",
                                    future.strftime("%Y-%m-%dT%H:%M:%SZ")), "in the future")
    with pytest.raises(UsageError, match="in the future"):
        take_snapshot(str(csv), str(out), taken_at=future)
    assert only_files(tmp_path) == {"refs.csv"}


def test_options_that_do_not_fit_the_source_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "refs.csv"
    csv.write_text("path\na\n")
    db = tmp_path / "m.sqlite"
    sqlite3.connect(db).close()
    out = tmp_path / "snap.parquet"
    with pytest.raises(UsageError, match="--query is for database sources"):
        take_snapshot(str(csv), str(out), query="SELECT 1", taken_at=TAKEN_DT)
    with pytest.raises(UsageError, match="--taken-at is only for key lists"):
        take_snapshot(str(db), str(out), query="SELECT 1", taken_at=TAKEN_DT)
    with pytest.raises(UsageError, match="--column is only for key lists"):
        take_snapshot(str(db), str(out), query="SELECT 1", column="x")
    assert_usage_error(run_snapshot(str(db), "-o", str(out), "--query", "SELECT 1",
                                    "--taken-at", TAKEN), "--taken-at is only for key lists")
    assert not out.exists()


def test_txt_key_list_is_refused_not_guessed(tmp_path: Path) -> None:
    """A .txt list has no header convention: guessing one could drop its first key (a
    referenced file would become a candidate). It is refused, naming the formats."""
    src = tmp_path / "refs.txt"
    src.write_text("t/k1\nt/k2\nt/k3\n")
    out = tmp_path / "snap.parquet"
    with pytest.raises(UsageError, match="cannot tell what kind of source") as exc:
        take_snapshot(str(src), str(out), taken_at=TAKEN_DT)
    assert exc.value.hint is not None
    assert ".csv" in exc.value.hint
    assert not out.exists()


# --------------------------------------------------------------------------- DuckDB / SQLite


ROWS: list[str | None] = ["t1/b.parquet", None, "t1/a.parquet", "t1/b.parquet", *UNICODE_KEYS,
                          None]


def make_sqlite(path: Path, rows: Iterable[Any] = ROWS) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE files (path TEXT, n INTEGER)")
    con.executemany("INSERT INTO files VALUES (?, ?)", [(r, i) for i, r in enumerate(rows)])
    con.commit()
    con.close()
    return path


def make_duckdb(path: Path, rows: Iterable[str | None] = ROWS) -> Path:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE files (path VARCHAR, n INTEGER)")
    con.executemany("INSERT INTO files VALUES (?, ?)", [[r, i] for i, r in enumerate(rows)])
    con.close()
    return path


DB_KINDS = {
    "duckdb": (make_duckdb, "m.duckdb", "local:duckdb-embedded"),
    "sqlite": (make_sqlite, "m.sqlite", "local:sqlite-embedded"),
}


@pytest.mark.parametrize("kind", sorted(DB_KINDS))
def test_embedded_database_query(kind: str, tmp_path: Path) -> None:
    make, name, clock = DB_KINDS[kind]
    db = make(tmp_path / name)
    out = tmp_path / "snap.parquet"
    before = datetime.now(UTC)
    res = assert_ok(run_snapshot(str(db), "--query", "SELECT path FROM files ORDER BY n",
                                 "-o", str(out), "--json"))
    after = datetime.now(UTC)
    expected = sorted_distinct(ROWS)  # NULLs ignored, duplicates removed, byte order
    meta = assert_snapshot_file(out, expected, clock=clock, source=f"{kind}:{db.resolve()}")
    taken = taken_at_of(out)
    assert before <= taken <= after
    assert res["taken_at"] == meta["taken_at"]
    assert res["rows"] == len(expected)
    assert res["digest"] == digest_of(expected)


@pytest.mark.parametrize("kind", sorted(DB_KINDS))
def test_embedded_database_url_form_through_the_library(kind: str, tmp_path: Path) -> None:
    make, name, clock = DB_KINDS[kind]
    db = make(tmp_path / name)
    out = tmp_path / "snap.parquet"
    before = datetime.now(UTC)
    res = take_snapshot(f"{kind}://{db}", str(out),
                        query="SELECT path FROM files WHERE path LIKE 't1/%'")
    after = datetime.now(UTC)
    assert read_keys(out) == ["t1/a.parquet", "t1/b.parquet"]
    assert before <= res.taken_at <= after
    assert res.taken_at_clock == clock
    assert res.rows == 2
    assert res.source == f"{kind}:{db.resolve()}"


@pytest.mark.parametrize("kind", sorted(DB_KINDS))
def test_embedded_database_errors(kind: str, tmp_path: Path) -> None:
    make, name, _ = DB_KINDS[kind]
    db = make(tmp_path / name)
    out = tmp_path / "snap.parquet"
    assert_usage_error(run_snapshot(str(db), "--query", "SELECT nope FROM files",
                                    "-o", str(out)), "query failed")
    assert_usage_error(run_snapshot(str(db), "--query", "SELEC path FROM", "-o", str(out)),
                       "query failed")
    assert_usage_error(run_snapshot(str(db), "-o", str(out)), "--query is required")
    assert_usage_error(run_snapshot(str(tmp_path / f"missing{db.suffix}"), "--query",
                                    "SELECT 1", "-o", str(out)), "no such")
    with pytest.raises(UsageError, match="query failed"):
        take_snapshot(str(db), str(out), query="SELECT nope FROM files")
    with pytest.raises(UsageError, match="--query is required"):
        take_snapshot(str(db), str(out))
    assert only_files(tmp_path) == {name}


def test_sqlite_query_cannot_write(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "m.sqlite")
    assert_usage_error(run_snapshot(str(db), "--query", "DELETE FROM files RETURNING path",
                                    "-o", str(tmp_path / "s.parquet")), "query failed")
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM files").fetchone() == (len(ROWS),)
    con.close()


@pytest.mark.parametrize("kind", sorted(DB_KINDS))
@pytest.mark.parametrize("query", ["SELECT path FROM files;",
                                   "SELECT path FROM files -- every data file"])
def test_embedded_database_query_with_trailing_semicolon_or_comment(
        kind: str, query: str, tmp_path: Path) -> None:
    """Queries pasted from a SQL console work for every source (PostgreSQL accepts them)."""
    make, name, _ = DB_KINDS[kind]
    db = make(tmp_path / name)
    res = take_snapshot(str(db), str(tmp_path / "s.parquet"), query=query)
    assert res.rows == len(sorted_distinct(ROWS))


@pytest.mark.parametrize("dirname", ["meta#prod", "100%", "what?"])
def test_sqlite_path_with_uri_special_characters(dirname: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The file named is the file read (read-only), whatever characters its path has."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / dirname).mkdir()
    make_sqlite(tmp_path / dirname / "m.sqlite", ["k/1", "k/2"])
    before = only_files(tmp_path)
    res = take_snapshot(f"{dirname}/m.sqlite", str(tmp_path / "s.parquet"),
                        query="SELECT path FROM files")
    assert res.rows == 2
    assert only_files(tmp_path) - before == {"s.parquet"}  # no stray database was created


def test_sqlite_blob_references_are_text_not_python_reprs(tmp_path: Path) -> None:
    """A BLOB holding a UTF-8 path is that path, never the string "b'...'"."""
    db = tmp_path / "m.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE files (path)")
    con.execute("INSERT INTO files VALUES (CAST('t/k1' AS BLOB)), ('t/k2')")
    con.commit()
    con.close()
    out = tmp_path / "s.parquet"
    try:
        take_snapshot(str(db), str(out), query="SELECT path FROM files")
    except UsageError:
        return  # refusing binary references is acceptable
    assert read_keys(out) == ["t/k1", "t/k2"]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_scratch() -> Iterator[str]:
    """URL of a scratch database on 127.0.0.1:5432, dropped at the end of the session."""
    import psycopg

    with scratch_database() as url:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE refs (path text, n int)")
            c.cursor().executemany("INSERT INTO refs VALUES (%s, %s)",
                                   [(r, i) for i, r in enumerate(ROWS)])
            c.execute("CREATE TABLE growing (path text)")
            c.execute("INSERT INTO growing VALUES ('g/early')")
            c.execute("""
                CREATE FUNCTION growing_after_sleep() RETURNS SETOF text
                LANGUAGE plpgsql VOLATILE AS $$
                BEGIN
                    PERFORM pg_sleep(1);
                    RETURN QUERY SELECT path FROM growing;
                END $$""")
            c.execute("CREATE FUNCTION sneaky_insert() RETURNS text LANGUAGE sql VOLATILE AS "
                      "$$ INSERT INTO growing VALUES ('g/sneaky') RETURNING path $$")
        yield url


@pytest.mark.postgres
def test_postgres_snapshot(pg_scratch: str, tmp_path: Path) -> None:
    out = tmp_path / "snap.parquet"
    before = datetime.now(UTC)
    res = assert_ok(run_snapshot(pg_scratch, "--query", "SELECT path FROM refs", "-o", str(out),
                                 "--json"))
    after = datetime.now(UTC)
    expected = sorted_distinct(ROWS)
    meta = assert_snapshot_file(out, expected, clock="metadata:postgresql",
                                source=f"postgresql:{pg_scratch}")
    tolerance = timedelta(seconds=1)  # same host; allow for clock reading granularity
    assert before - tolerance <= taken_at_of(out) <= after + tolerance
    assert "metadata_skew_us" in meta
    assert abs(int(meta["metadata_skew_us"])) < 1_000_000
    assert res["taken_at_clock"] == "metadata:postgresql"
    assert res["rows"] == len(expected)
    assert res["digest"] == digest_of(expected)


@pytest.mark.postgres
def test_postgres_taken_at_is_the_transactions_own_now(pg_scratch: str, tmp_path: Path) -> None:
    """The query runs in the transaction whose now() is taken_at: the two are equal."""
    out = tmp_path / "snap.parquet"
    before = datetime.now(UTC)
    res = take_snapshot(pg_scratch, str(out), query=(
        "SELECT (extract(epoch FROM now()) * 1000000)::bigint::text "
        "UNION ALL SELECT path FROM refs"))
    after = datetime.now(UTC)
    numeric = [k for k in read_keys(out) if k.isdigit()]
    assert len(numeric) == 1
    txn_now = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(numeric[0]))
    assert res.taken_at == txn_now
    assert before - timedelta(seconds=1) <= res.taken_at <= after + timedelta(seconds=1)
    assert res.taken_at_clock == "metadata:postgresql"
    assert res.source == f"postgresql:{pg_scratch}"


@pytest.mark.postgres
def test_postgres_reads_in_one_repeatable_read_read_only_transaction(pg_scratch: str,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "snap.parquet"
    q = ("SELECT current_setting('transaction_isolation') || ':' || "
         "current_setting('transaction_read_only')")
    assert_ok(run_snapshot(pg_scratch, "--query", q, "-o", str(out)))
    assert read_keys(out) == ["repeatable read:on"]


def _commit_while_sleeping(url: str, path: str, result: dict[str, Any]) -> None:
    """Wait until another session sleeps in pg_sleep, then insert ``path`` and commit."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                            "AND datname = current_database() AND wait_event = 'PgSleep'"
                            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.02)
        else:
            result["error"] = "the reader never reached pg_sleep"
            return
        c.execute("INSERT INTO growing VALUES (%s)", (path,))
        row = c.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        result["committed_at"] = row[0]


@pytest.mark.postgres
def test_postgres_rows_committed_during_the_read_are_not_seen(pg_scratch: str,
                                                              tmp_path: Path) -> None:
    """The whole query sees the transaction's one snapshot, as of (after) taken_at.

    ``growing_after_sleep()`` is VOLATILE plpgsql: under READ COMMITTED its inner query
    would take a fresh snapshot after the sleep and see the concurrent commit (checked
    below as a control); under the snapshot's REPEATABLE READ it must not.
    """
    import psycopg

    result: dict[str, Any] = {}
    writer = threading.Thread(target=_commit_while_sleeping,
                              args=(pg_scratch, "g/late-1", result))
    writer.start()
    out = tmp_path / "snap.parquet"
    res = take_snapshot(pg_scratch, str(out), query="SELECT * FROM growing_after_sleep()")
    writer.join()
    assert "error" not in result, result
    assert read_keys(out) == ["g/early"]
    assert res.taken_at < result["committed_at"]

    # Control: the same read under READ COMMITTED does see a concurrent commit.
    control: dict[str, Any] = {}
    writer = threading.Thread(target=_commit_while_sleeping,
                              args=(pg_scratch, "g/late-2", control))
    writer.start()
    with psycopg.connect(pg_scratch) as c:
        seen = {r[0] for r in c.execute("SELECT * FROM growing_after_sleep()").fetchall()}
    writer.join()
    assert "error" not in control, control
    assert "g/late-2" in seen


@pytest.mark.postgres
def test_postgres_source_records_no_password(pg_scratch: str, tmp_path: Path) -> None:
    url = (pg_scratch.replace("postgres@", "postgres:s3cret@")
           + "?password=x-secret-param&application_name=cleanup-test")
    out = tmp_path / "snap.parquet"
    p = run_snapshot(url, "--query", "SELECT path FROM refs", "-o", str(out), "--json")
    res = assert_ok(p)
    meta = read_meta(str(out))
    for secret in ("s3cret", "x-secret-param"):
        assert secret not in meta["source"]
        assert secret not in res["source"]
        assert secret.encode() not in out.read_bytes()
        assert secret not in p.stdout + p.stderr
    assert meta["source"] == (f"postgresql:{pg_scratch}?application_name=cleanup-test")
    lib = take_snapshot(url, str(tmp_path / "lib.parquet"), query="SELECT path FROM refs")
    assert "s3cret" not in lib.source
    assert "x-secret-param" not in lib.source


@pytest.mark.postgres
def test_postgres_percent_encoded_password_parameter_is_not_recorded(pg_scratch: str,
                                                                     tmp_path: Path) -> None:
    """libpq decodes ``pass%77ord=`` to ``password=``; the redaction must too."""
    url = pg_scratch + "?pass%77ord=enc-s3cret"
    out = tmp_path / "snap.parquet"
    p = run_snapshot(url, "--query", "SELECT path FROM refs", "-o", str(out), "--json")
    assert "enc-s3cret" not in p.stdout + p.stderr
    if p.returncode == 0:
        assert b"enc-s3cret" not in out.read_bytes()
    else:
        assert_usage_error(p)


@pytest.mark.postgres
def test_postgres_errors(pg_scratch: str, tmp_path: Path) -> None:
    secret_url = pg_scratch.replace("postgres@", "postgres:s3cret@") + "?password=s3cret"
    out = tmp_path / "snap.parquet"
    err = assert_usage_error(run_snapshot(secret_url, "--query", "SELECT nope FROM refs",
                                          "-o", str(out)), "query failed")
    assert "s3cret" not in err
    err = assert_usage_error(run_snapshot(secret_url, "-o", str(out)), "--query is required")
    assert "s3cret" not in err
    # A query may not write: the transaction is read-only.
    assert_usage_error(run_snapshot(pg_scratch, "--query", "SELECT sneaky_insert()",
                                    "-o", str(out)), "query failed", "read-only")
    with pytest.raises(UsageError, match="query failed"):
        take_snapshot(pg_scratch, str(out), query="SELECT nope FROM refs")
    assert not out.exists()


def test_postgres_connection_failure_is_one_line_without_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/db?password=s3cret"
    out = tmp_path / "snap.parquet"
    err = assert_usage_error(run_snapshot(url, "--query", "SELECT 1", "-o", str(out)),
                             "cannot connect", f"127.0.0.1:{port}")
    assert "s3cret" not in err
    with pytest.raises(UsageError, match="cannot connect") as info:
        take_snapshot(url, str(out), query="SELECT 1")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in (info.value.hint or "")
    assert not out.exists()


def test_postgres_malformed_url_error_does_not_echo_the_password(tmp_path: Path) -> None:
    """A password that is not valid percent-encoding is still a secret."""
    url = f"postgresql://postgres:s3cr%ZZet@127.0.0.1:{free_port()}/db"
    err = assert_usage_error(run_snapshot(url, "--query", "SELECT 1",
                                          "-o", str(tmp_path / "s.parquet")))
    assert "s3cr" not in err


def test_postgres_malformed_port_is_a_usage_error(tmp_path: Path) -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:notaport/db"
    err = assert_usage_error(run_snapshot(url, "--query", "SELECT 1",
                                          "-o", str(tmp_path / "s.parquet")))
    assert "s3cret" not in err


@pytest.mark.postgres
def test_postgres_bytea_references_are_text_not_python_reprs(pg_scratch: str,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    try:
        take_snapshot(pg_scratch, str(out), query="SELECT convert_to('t/k1', 'UTF8')")
    except UsageError:
        return  # refusing binary references is acceptable
    assert read_keys(out) == ["t/k1"]


# --------------------------------------------------------------------------- unknown kinds


@pytest.mark.parametrize("source", ["mysql://u@h/db", "refs.json", "s3://bucket/refs"])
def test_unknown_source_kind(source: str, tmp_path: Path) -> None:
    out = tmp_path / "snap.parquet"
    err = assert_usage_error(run_snapshot(source, "-o", str(out), "--query", "SELECT 1"),
                             "cannot tell what kind of source")
    hint = next(ln for ln in err.splitlines() if ln.startswith("  hint: "))
    for form in (".parquet", ".csv", ".duckdb", ".sqlite", "duckdb:///", "sqlite:///",
                 "postgresql://"):
        assert form in hint, (form, hint)
    with pytest.raises(UsageError, match="cannot tell what kind of source") as info:
        take_snapshot(source, str(out), query="SELECT 1")
    assert info.value.hint is not None
    assert "postgresql://" in info.value.hint
    assert not out.exists()
