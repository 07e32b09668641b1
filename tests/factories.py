"""Build inventory and snapshot files directly, for fast property and CLI tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cleanup.core.policy import Policy
from cleanup.core.timeutil import format_time
from cleanup.formats import encode_meta, inventory_schema, snapshot_schema
from cleanup.model import (
    CheckRecord,
    Inputs,
    InventoryInfo,
    ManifestInfo,
    Plan,
    ReferencesInfo,
    Scope,
    SnapshotInfo,
    Stage,
    Stamp,
    Tool,
)

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


def sample_plan(**changes: Any) -> Plan:
    """A complete, valid :class:`Plan` for tests that need one without planning."""
    snap_at = T0 + timedelta(hours=30)
    plan = Plan(
        tool=Tool("cleanup", "0.0.0"), store="/tmp/store", region="local",
        created_at=Stamp(snap_at + timedelta(minutes=5), "local"), author="alice",
        author_key="ssh-ed25519 AAAA alice",
        inputs=Inputs(
            InventoryInfo("/nonexistent-cleanup-test/inventory.parquet", "sha256:" + "0" * 64,
                          "listing", 3, Stamp(snap_at, "local"), timedelta(seconds=1), "test"),
            SnapshotInfo("/nonexistent-cleanup-test/snapshot.parquet", "sha256:" + "1" * 64,
                         "test", 2, "sha256:" + "2" * 64, Stamp(snap_at, "claimed"))),
        buffer=timedelta(hours=24), cutoff=Stamp(T0 + timedelta(hours=6), "derived"),
        hold=timedelta(hours=24), quarantine="copy", policy=Policy(), overrides=(),
        tenant_pattern="^([^/]+)/", internal=("acme",),
        stages=(Stage(0, "internal tenants: acme", 1, 10, 1),
                Stage(1, "tenant hash in [0%, 100%)", 0, 0, 0)),
        scope=Scope(3, 30, T0), references=ReferencesInfo(
            rows=2, in_scope=2, out_of_scope=0, missing=0, encoding="literal", base=None,
            folders=0, implicit_folders=0, protected_by_folder=0, foreign=0,
            foreign_acknowledged=0, foreign_ok=(), foreign_where={}, near_misses=0,
            near_miss_examples=(), undecodable_names=0),
        manifest=ManifestInfo("manifest.parquet", "sha256:" + "3" * 64, 1, 10, T0, T0),
        sentinels=(), unsafe_store_without_conditional_writes=False,
        clocks={"store": timedelta(0)},
        invariants=(CheckRecord("I1 strict-cutoff", True, "ok", {"cutoff": "x"}),))
    return replace(plan, **changes)
