"""``cleanup inventory``: list a store (or read an S3 Inventory report) into Parquet.

The listing is streamed: rows are buffered in batches of ``BATCH_ROWS`` and
written as Parquet row groups, so memory does not grow with the bucket.

A local file whose name is not UTF-8 is listed, not dropped and not a crash: its
exact bytes go to ``key_raw`` and ``key`` holds a display form (see
:mod:`cleanup.formats`); the count is in ``cleanup.undecodable_names``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cleanup.core.timeutil import format_time
from cleanup.formats import encode_meta, inventory_schema, split_key
from cleanup.stores.base import ListingMeta, ObjectInfo, capability

if TYPE_CHECKING:
    import pyarrow as pa

    from cleanup.stores.base import ListingSource, Store

BATCH_ROWS = 100_000
Progress = Callable[[int, int], None]  # (objects so far, bytes so far)


@dataclass(frozen=True)
class InventoryResult:
    path: str
    store: str
    objects: int
    bytes: int
    listed_at: datetime
    precision: timedelta
    source: str
    undecodable_names: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "store": self.store, "objects": self.objects,
                "bytes": self.bytes, "listed_at": format_time(self.listed_at),
                "precision_us": self.precision // timedelta(microseconds=1),
                "source": self.source, "undecodable_names": self.undecodable_names}


def _batches(objects: Iterable[ObjectInfo]) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    schema = inventory_schema()
    cols: dict[str, list[Any]] = {n: [] for n in schema.names}
    for o in objects:
        key, raw = split_key(o.key)
        cols["key"].append(key)
        cols["key_raw"].append(raw)
        cols["size"].append(o.size)
        cols["last_modified"].append(o.last_modified)
        cols["etag"].append(o.etag)
        cols["version_id"].append(o.version_id)
        if len(cols["key"]) >= BATCH_ROWS:
            yield pa.RecordBatch.from_pydict(cols, schema=schema)
            cols = {n: [] for n in schema.names}
    if cols["key"]:
        yield pa.RecordBatch.from_pydict(cols, schema=schema)


def write_inventory(
    batches: Iterable[pa.RecordBatch],
    out: str,
    meta: dict[str, str],
    progress: Progress | None = None,
) -> tuple[int, int, int]:
    """Stream ``batches`` to ``out`` atomically (temp file + rename).

    Returns (rows, bytes, rows with ``key_raw`` set).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tmp = f"{out}.tmp-{os.getpid()}"
    rows = total = undecodable = 0
    try:
        with pq.ParquetWriter(tmp, inventory_schema(), compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
                total += int(pc.sum(batch.column("size")).as_py() or 0)
                raw = batch.column("key_raw")
                undecodable += len(raw) - raw.null_count
                if progress:
                    progress(rows, total)
            writer.add_key_value_metadata(encode_meta(
                {**meta, "rows": str(rows), "undecodable_names": str(undecodable)}))
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return rows, total, undecodable


class LiveListing:
    """A live listing of ``store`` (:meth:`Store.iter_objects`) as a
    :class:`~cleanup.stores.base.ListingSource`. ``listed_at`` is the local clock when
    this is made, which is just before the listing starts.

    Objects written after the listing started may or may not appear; those that
    do not are simply never candidates.
    """

    def __init__(self, store: Store, time_source: str = "ctime-or-mtime") -> None:
        self.store = store
        self._meta = ListingMeta(
            store=store.ref.url, listed_at=datetime.now(UTC), listed_at_clock="local",
            precision=store.precision, source="listing",
            time_source=time_source if store.ref.kind == "local"
            else f"{store.ref.cloud}-last-modified")

    def meta(self) -> ListingMeta:
        return self._meta

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        fast = capability(self.store, BatchListingStore)
        if fast is not None:
            return fast.listing_batches()
        return _batches(self.store.iter_objects())


@runtime_checkable
class BatchListingStore(Protocol):
    """Optional: a store that lists straight into inventory record batches (S3: the raw
    ListObjectsV2 XML, split across folders), the same rows as :meth:`Store.iter_objects`
    gives, each key exactly once."""

    def listing_batches(self) -> Iterator[pa.RecordBatch]:
        ...


def write_listing(source: ListingSource, out: str,
                  progress: Progress | None = None) -> InventoryResult:
    """Stream any listing source into the inventory Parquet ``out``, with its metadata."""
    m = source.meta()
    meta = {
        "kind": "inventory",
        "store": m.store,
        "listed_at": format_time(m.listed_at),
        "listed_at_clock": m.listed_at_clock,
        "precision_us": str(m.precision // timedelta(microseconds=1)),
        "source": m.source,
        "time_source": m.time_source,
    }
    rows, total, undecodable = write_inventory(source.iter_batches(), out, meta, progress)
    return InventoryResult(out, m.store, rows, total, m.listed_at, m.precision, m.source,
                           undecodable)


def list_store(store: Store, out: str, progress: Progress | None = None,
               time_source: str = "ctime-or-mtime") -> InventoryResult:
    """List ``store`` into ``out``. ``listed_at`` is the local clock at the listing's start."""
    return write_listing(LiveListing(store, time_source), out, progress)


def read_s3_inventory(
    manifest: str, store_url: str, out: str, *, endpoint_url: str | None = None,
    region: str | None = None, progress: Progress | None = None,
) -> InventoryResult:
    """Read an S3 Inventory report (manifest.json, CSV or Parquet) into ``out``.

    ``listed_at`` is the report's creationTimestamp: the report may be days
    old, which is safe because the executor re-checks size and etag (I9).
    """
    from cleanup.core.paths import parse_store
    from cleanup.errors import UsageError
    from cleanup.stores.s3_inventory import S3InventorySource, load_manifest

    ref = parse_store(store_url)
    if ref.cloud != "s3":
        raise UsageError("--s3-inventory needs an s3://bucket/prefix/ store")
    client = None
    if manifest.startswith("s3://"):
        from cleanup.stores.s3 import make_client

        client = make_client(endpoint_url, region, what=f"S3 Inventory manifest {manifest}")
    report = load_manifest(manifest, s3_client=client)
    return write_listing(S3InventorySource(report, ref, s3_client=client), out, progress)


def read_gcs_inventory(
    manifest: str, store_url: str, out: str, *, endpoint_url: str | None = None,
    progress: Progress | None = None,
) -> InventoryResult:
    """Read a Storage Insights inventory report (its manifest; CSV or Parquet shards) into
    ``out``. ``listed_at`` is the report's snapshot_time (clock ``gcs-inventory``)."""
    from cleanup.core.paths import parse_store
    from cleanup.errors import UsageError
    from cleanup.stores.gcs_inventory import GCSInventorySource, load_gcs_manifest

    ref = parse_store(store_url)
    if ref.cloud != "gcs":
        raise UsageError("--gcs-inventory needs a gs://bucket/prefix/ store")
    client = None
    if manifest.startswith("gs://"):
        from cleanup.stores.gcs import make_client

        client = make_client(endpoint_url, what=f"inventory manifest {manifest}")
    report = load_gcs_manifest(manifest, client=client)
    return write_listing(GCSInventorySource(report, ref, client=client), out, progress)


def read_azure_inventory(
    manifest: str, store_url: str, out: str, *, endpoint_url: str | None = None,
    progress: Progress | None = None,
) -> InventoryResult:
    """Read an Azure blob inventory run (its ``<rule>-manifest.json``; CSV or Parquet
    files) into ``out``. ``listed_at`` is inventoryStartTime (clock ``azure-inventory``)."""
    from cleanup.core.paths import parse_store
    from cleanup.errors import UsageError
    from cleanup.stores.azure_inventory import AzureInventorySource, load_azure_manifest

    ref = parse_store(store_url)
    if ref.cloud != "azure":
        raise UsageError("--azure-inventory needs an az://container/prefix/ store")
    report = load_azure_manifest(manifest, endpoint_url=endpoint_url)
    return write_listing(AzureInventorySource(report, ref, endpoint_url=endpoint_url), out,
                         progress)
