"""`cleanup snapshot` from key lists, SQLite and DuckDB files."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.timeutil import format_time
from cleanup.formats import read_meta
from cleanup.snapshot import take_snapshot
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process

TAKEN = "2026-05-14T21:30:00Z"


def test_csv_key_list(tmp_path: Path) -> None:
    (tmp_path / "k.csv").write_text("path,n\nb,1\na,2\nb,3\nü,4\n")
    out = tmp_path / "s.parquet"
    assert_one_line_error(run_cli(["snapshot", str(tmp_path / "k.csv"), "-o", str(out),
                                   "--taken-at", TAKEN]), 2, "--column")
    assert_one_line_error(run_cli(["snapshot", str(tmp_path / "k.csv"), "-o", str(out),
                                   "--column", "path"]), 2, "--taken-at is required")
    assert_one_line_error(run_cli(["snapshot", str(tmp_path / "k.csv"), "-o", str(out),
                                   "--column", "path", "--taken-at", "2026-05-14T21:30:00"]),
                          2, "has no zone")
    future = format_time(datetime.now(UTC) + timedelta(hours=1))
    assert_one_line_error(run_cli(["snapshot", str(tmp_path / "k.csv"), "-o", str(out),
                                   "--column", "path", "--taken-at", future]), 2, "future")
    assert not out.exists()
    r = run_cli(["snapshot", str(tmp_path / "k.csv"), "-o", str(out), "--column", "path",
                 "--taken-at", TAKEN])
    assert r.code == 0, r.err
    assert pq.read_table(out).column("key").to_pylist() == ["a", "b", "ü"]
    meta = read_meta(str(out))
    assert meta["taken_at"] == TAKEN
    assert meta["taken_at_clock"] == "claimed"
    assert meta["rows"] == "3"
    assert meta["digest"] == "sha256:" + hashlib.sha256("a\nb\nü\n".encode()).hexdigest()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=12).map(lambda s: s.replace("\x00", "")).filter(bool),
                max_size=40))
def test_digest_is_sha256_of_sorted_keys(tmp_path: Path, keys: list[str]) -> None:
    """I3's digest is reproducible by hand: sha256 of each sorted key plus a newline."""
    src = tmp_path / "k.parquet"
    pq.write_table(pa.table({"key": pa.array(keys, pa.string())}), src)
    out = tmp_path / "s.parquet"
    if out.exists():
        out.unlink()
    res = take_snapshot(str(src), str(out), taken_at=datetime(2026, 1, 1, tzinfo=UTC))
    expected = hashlib.sha256(b"".join(k.encode() + b"\n"
                                       for k in sorted(set(keys), key=str.encode))).hexdigest()
    assert res.digest == "sha256:" + expected
    assert res.rows == len(set(keys))


def test_sqlite_and_duckdb_sources(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE f (p TEXT)")
    con.executemany("INSERT INTO f VALUES (?)", [("x/1",), ("x/2",), (None,)])
    con.commit()
    con.close()
    dd = tmp_path / "m.duckdb"
    dcon = duckdb.connect(str(dd))
    dcon.execute("CREATE TABLE f AS SELECT * FROM (VALUES ('y/1'), ('y/2'), (NULL)) t(p)")
    dcon.close()
    for src, expect in ((db, ["x/1", "x/2"]), (dd, ["y/1", "y/2"])):
        out = tmp_path / f"{src.suffix[1:]}.parquet"
        before = datetime.now(UTC)
        r = run_cli(["snapshot", str(src), "--query", "SELECT p FROM f", "-o", str(out)])
        after = datetime.now(UTC)
        assert r.code == 0, r.err
        assert pq.read_table(out).column("key").to_pylist() == expect
        taken = datetime.fromisoformat(read_meta(str(out))["taken_at"])
        assert before - timedelta(seconds=1) <= taken <= after
        assert_one_line_error(run_cli(["snapshot", str(src), "--query", "SELECT nope FROM f",
                                       "-o", str(tmp_path / "bad.parquet")]), 2, "query failed")
        assert_one_line_error(run_cli(["snapshot", str(src), "-o", str(out)]), 2,
                              "--query is required")


def test_unknown_source_kind(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(["snapshot", "mysql://x/y", "-o", str(tmp_path / "o")]), 2,
                          "cannot tell what kind of source")
