"""Build inventory and snapshot files directly, for fast property and CLI tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cleanup.core.timeutil import format_time
from cleanup.formats import encode_meta, inventory_schema, snapshot_schema

T0 = datetime(2026, 5, 14, 21, 30, tzinfo=UTC)


def write_inventory_file(
    path: Path,
    store: str,
    objects: Sequence[tuple[str, int, datetime]],
    *,
    listed_at: datetime | None = None,
    precision: timedelta = timedelta(seconds=1),
) -> Path:
    schema = inventory_schema()
    table = pa.table(
        {
            "key": [o[0] for o in objects],
            "size": [o[1] for o in objects],
            "last_modified": [o[2] for o in objects],
            "etag": [hashlib.md5(o[0].encode()).hexdigest() for o in objects],  # noqa: S324
            "version_id": [None] * len(objects),
            "key_raw": [None] * len(objects),
        },
        schema=schema,
    )
    meta = {
        "kind": "inventory",
        "store": store,
        "listed_at": format_time(listed_at or datetime.now(UTC)),
        "listed_at_clock": "local",
        "precision_us": str(precision // timedelta(microseconds=1)),
        "source": "listing",
        "time_source": "test",
        "rows": str(len(objects)),
    }
    table = table.replace_schema_metadata(encode_meta(meta))
    pq.write_table(table, path)
    return path


def write_snapshot_file(
    path: Path,
    refs: Iterable[str],
    *,
    taken_at: datetime | None,
    source: str = "test",
    skew_us: int | None = None,
    digest: str | None = None,
) -> Path:
    keys = sorted(set(refs))
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode() + b"\n")
    meta = {"kind": "snapshot", "source": source, "rows": str(len(keys)),
            "digest": digest if digest is not None else "sha256:" + h.hexdigest(),
            "taken_at_clock": "claimed"}
    if taken_at is not None:
        meta["taken_at"] = format_time(taken_at)
    if skew_us is not None:
        meta["metadata_skew_us"] = str(skew_us)
    table = pa.table({"key": keys}, schema=snapshot_schema())
    pq.write_table(table.replace_schema_metadata(encode_meta(meta)), path)
    return path
