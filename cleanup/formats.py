"""File formats shared by commands: inventory and snapshot Parquet files.

Inventory Parquet
    columns ``key`` (string, store-relative), ``size`` (int64),
    ``last_modified`` (timestamp[us, UTC]), ``etag`` (string, quotes stripped,
    nullable), ``version_id`` (string, nullable); file metadata (all strings):
    ``cleanup.kind=inventory``, ``cleanup.store`` (store URL),
    ``cleanup.listed_at`` (ISO 8601 UTC), ``cleanup.listed_at_clock``,
    ``cleanup.precision_us`` (how much later than ``last_modified`` an object may
    really have been written: S3 listings truncate to whole seconds, so 1000000),
    ``cleanup.source`` (``listing`` or ``s3-inventory:<manifest>``),
    ``cleanup.rows``.

Snapshot Parquet
    column ``key`` (string; a reference as the metadata holds it, normalized at
    plan time); file metadata: ``cleanup.kind=snapshot``, ``cleanup.source``
    (never with secrets), ``cleanup.taken_at``, ``cleanup.taken_at_clock``
    (``metadata:<system>`` when read from the metadata system's own clock,
    ``claimed`` when given by hand), ``cleanup.local_at_taken`` (the local
    clock at the same moment, for I15), ``cleanup.rows``, ``cleanup.digest``
    (``sha256:`` of every sorted reference followed by a newline, so
    ``sort | sha256sum`` reproduces it for keys without newlines).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

META_PREFIX = "cleanup."


def inventory_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.string()),
            ("size", pa.int64()),
            ("last_modified", pa.timestamp("us", tz="UTC")),
            ("etag", pa.string()),
            ("version_id", pa.string()),
        ]
    )


def snapshot_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("key", pa.string())])


def encode_meta(meta: dict[str, str]) -> dict[bytes, bytes]:
    return {(META_PREFIX + k).encode(): v.encode() for k, v in meta.items()}


def read_meta(path: str) -> dict[str, str]:
    """The ``cleanup.*`` key-value metadata of a Parquet file (prefix removed)."""
    import pyarrow.parquet as pq

    from cleanup.errors import UsageError

    try:
        raw = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
        raise UsageError(f"{path}: not a readable Parquet file ({exc})") from None
    out = {}
    for k, v in raw.items():
        ks = k.decode("utf-8", "replace")
        if ks.startswith(META_PREFIX):
            out[ks[len(META_PREFIX) :]] = v.decode("utf-8", "replace")
    return out
