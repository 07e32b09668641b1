"""`cleanup inventory` on local directories."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from cleanup.formats import inventory_schema, read_meta
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process


def _tree(root: Path) -> None:
    for rel in ["a/1.parquet", "a/b/2.parquet", "x y/ü.bin", "top.txt"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * len(rel))
    (root / "_cleanup" / "audit").mkdir(parents=True)
    (root / "_cleanup" / "audit" / "0001.json").write_text("{}")
    (root / "nested" / "_cleanup").mkdir(parents=True)  # only the root one is reserved
    (root / "nested" / "_cleanup" / "data").write_text("d")
    os.symlink(root / "top.txt", root / "link.txt")


def test_local_inventory_lists_everything_but_reserved_and_links(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    _tree(store)
    before = datetime.now(UTC)
    r = run_cli(["inventory", str(store), "-o", str(tmp_path / "inv.parquet"), "--json"])
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["objects"] == 5
    t = pq.read_table(tmp_path / "inv.parquet")
    assert t.schema.remove_metadata() == inventory_schema()
    rows = {k: s for k, s in zip(t.column("key").to_pylist(), t.column("size").to_pylist(),
                                 strict=True)}
    assert rows == {"a/1.parquet": 11, "a/b/2.parquet": 13, "x y/ü.bin": 9, "top.txt": 7,
                    "nested/_cleanup/data": 1}
    meta = read_meta(str(tmp_path / "inv.parquet"))
    assert meta["kind"] == "inventory"
    assert meta["store"] == str(store)
    assert meta["precision_us"] == "1"
    assert meta["rows"] == "5"
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(meta["listed_at"]) <= (
        datetime.now(UTC))


def test_backdated_mtime_is_not_trusted_by_default(tmp_path: Path) -> None:
    """A file copied in with an old mtime (cp -p) must not look old: ctime counts too."""
    store = tmp_path / "store"
    store.mkdir()
    f = store / "copied.parquet"
    f.write_bytes(b"data")
    old = time.time() - 30 * 86400
    os.utime(f, (old, old))
    run_cli(["inventory", str(store), "-o", str(tmp_path / "safe.parquet")])
    lm = pq.read_table(tmp_path / "safe.parquet").column("last_modified").to_pylist()[0]
    assert lm > datetime.now(UTC) - timedelta(minutes=5)
    r = run_cli(["inventory", str(store), "-o", str(tmp_path / "trust.parquet"), "--trust-mtime"])
    assert r.code == 0
    lm = pq.read_table(tmp_path / "trust.parquet").column("last_modified").to_pylist()[0]
    assert lm < datetime.now(UTC) - timedelta(days=29)
    assert read_meta(str(tmp_path / "trust.parquet"))["time_source"] == "mtime"


def test_inventory_of_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    r = run_cli(["inventory", str(tmp_path / "nope"), "-o", str(tmp_path / "i.parquet")])
    assert_one_line_error(r, 2, "is not a directory")
    assert not (tmp_path / "i.parquet").exists()


def test_inventory_streams_in_batches(tmp_path: Path) -> None:
    """More objects than one batch: several row groups, nothing lost or repeated."""
    import cleanup.inventory as inventory
    from cleanup.stores import open_store

    store = tmp_path / "store"
    for i in range(2500):
        d = store / f"t{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.bin").write_bytes(b"")
    old = inventory.BATCH_ROWS
    inventory.BATCH_ROWS = 1000
    try:
        res = inventory.list_store(open_store(str(store)), str(tmp_path / "inv.parquet"))
    finally:
        inventory.BATCH_ROWS = old
    assert res.objects == 2500
    f = pq.ParquetFile(tmp_path / "inv.parquet")
    assert f.metadata.num_row_groups >= 3
    keys = f.read().column("key").to_pylist()
    assert len(set(keys)) == 2500
