"""`cleanup snapshot` from PostgreSQL at 127.0.0.1:5432 (a scratch database per run).

The server must be reachable: these tests fail instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cleanup.formats import read_meta
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.support import scratch_database

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    import psycopg

    with scratch_database() as url:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE data_files (path text, tenant text)")
            c.execute("INSERT INTO data_files SELECT 's3://lake/wh/t' || (i % 7) || '/part-' "
                      "|| i || '.parquet', 't' || (i % 7) FROM generate_series(1, 5000) i")
            c.execute("INSERT INTO data_files VALUES (NULL, 'x')")
        yield url


def test_postgres_snapshot_uses_the_transaction_clock(pg_db: str, tmp_path: Path) -> None:
    out = tmp_path / "snap.parquet"
    before = datetime.now(UTC)
    r = run_cli(["snapshot", pg_db, "--query", "SELECT path FROM data_files", "-o", str(out),
                 "--json"])
    after = datetime.now(UTC)
    assert r.code == 0, r.err
    meta = read_meta(str(out))
    assert meta["taken_at_clock"] == "metadata:postgresql"
    taken = datetime.fromisoformat(meta["taken_at"])
    assert before - timedelta(seconds=2) <= taken <= after + timedelta(seconds=2)
    assert abs(int(meta["metadata_skew_us"])) < 2_000_000
    assert meta["rows"] == "5000"  # the NULL is ignored
    keys = pq.read_table(out).column("key").to_pylist()
    assert keys == sorted(keys)
    assert len(set(keys)) == 5000


def test_postgres_reads_in_one_repeatable_read_read_only_transaction(pg_db: str,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "iso.parquet"
    q = ("SELECT current_setting('transaction_isolation') || ':' || "
         "current_setting('transaction_read_only')")
    r = run_cli(["snapshot", pg_db, "--query", q, "-o", str(out)])
    assert r.code == 0, r.err
    assert pq.read_table(out).column("key").to_pylist() == ["repeatable read:on"]


def test_postgres_source_records_no_secret(pg_db: str, tmp_path: Path) -> None:
    url = pg_db.replace("postgres@", "postgres:s3cret@") + "?password=also-secret"
    out = tmp_path / "s.parquet"
    r = run_cli(["snapshot", url, "--query", "SELECT path FROM data_files", "-o", str(out)])
    assert r.code == 0, r.err
    data = out.read_bytes()
    assert b"s3cret" not in data
    assert b"also-secret" not in data
    assert "s3cret" not in r.out


def test_postgres_errors_are_one_line_without_secrets(pg_db: str, tmp_path: Path) -> None:
    r = run_cli(["snapshot", pg_db.replace("postgres@", "postgres:s3cret@"), "--query",
                 "SELECT nope FROM data_files", "-o", str(tmp_path / "x.parquet")])
    assert_one_line_error(r, 2, "query failed")
    assert "s3cret" not in r.err
    r = run_cli(["snapshot", "postgresql://postgres:s3cret@127.0.0.1:1/db", "--query",
                 "SELECT 1", "-o", str(tmp_path / "y.parquet")])
    assert_one_line_error(r, 2, "cannot connect")
    assert "s3cret" not in r.err
    assert not (tmp_path / "x.parquet").exists()
    r = run_cli(["snapshot", pg_db, "-o", str(tmp_path / "z.parquet")])
    assert_one_line_error(r, 2, "--query is required")


def test_plan_from_postgres_snapshot(pg_db: str, tmp_path: Path, alice_key: Path) -> None:
    """End to end: references as s3:// URLs in PostgreSQL, normalized against the store."""
    from tests.factories import write_inventory_file

    snap = tmp_path / "snap.parquet"
    assert run_cli(["snapshot", pg_db, "--query", "SELECT path FROM data_files",
                    "-o", str(snap)]).code == 0
    store = tmp_path / "store"
    store.mkdir()
    old = datetime.now(UTC) - timedelta(days=10)
    objects = [(f"t{i % 7}/part-{i}.parquet", 10, old) for i in range(1, 5201)]
    # Not an S3 store: the s3:// references are out of scope, so I4 refuses.
    write_inventory_file(tmp_path / "inv.parquet", str(store), objects)
    r = run_cli(["plan", "--store", str(store), "--inventory", str(tmp_path / "inv.parquet"),
                 "--snapshot", str(snap), "-o", str(tmp_path / "p"), "--author", "alice",
                 "--key", str(alice_key)])
    assert_one_line_error(r, 3, "I4 paths-agree", "no reference falls inside the store")
