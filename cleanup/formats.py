"""File formats shared by commands: inventory and snapshot Parquet files.

Inventory Parquet
    columns ``key`` (string, store-relative), ``size`` (int64),
    ``last_modified`` (timestamp[us, UTC]), ``etag`` (string, quotes stripped,
    nullable), ``version_id`` (string, nullable), ``key_raw`` (binary,
    nullable); file metadata (all strings):
    ``cleanup.kind=inventory``, ``cleanup.store`` (store URL),
    ``cleanup.listed_at`` (ISO 8601 UTC), ``cleanup.listed_at_clock``,
    ``cleanup.precision_us`` (how much later than ``last_modified`` an object may
    really have been written: S3 listings truncate to whole seconds, so 1000000),
    ``cleanup.source`` (``listing``, or ``s3-inventory:``/``gcs-inventory:``/
    ``azure-inventory:<manifest>``),
    ``cleanup.rows``, ``cleanup.undecodable_names`` (rows with ``key_raw``).

    ``key_raw`` is NULL for every ordinary key. It is set for a local file whose
    name is not UTF-8 (``b'bad\\xff.bin'``): Parquet strings must be UTF-8, so
    ``key_raw`` holds the exact name bytes relative to the root and ``key`` a
    display form (the bytes decoded as UTF-8 with backslash escapes,
    ``bad\\xff.bin``). A UTF-8 reference can never name such a file exactly, so
    **a row with key_raw set is never a candidate**; the display form may even
    equal a real key. Inventories written before the column existed have no
    ``key_raw``: readers treat a missing column as all NULL
    (:func:`inventory_key_raw_sql`).

Snapshot Parquet
    column ``key`` (string; a reference as the metadata holds it, normalized at
    plan time); file metadata: ``cleanup.kind=snapshot``, ``cleanup.source``
    (never with secrets), ``cleanup.taken_at``, ``cleanup.taken_at_clock``
    (``metadata:<system>`` when read from the metadata system's own clock,
    ``claimed`` when given by hand), ``cleanup.local_at_taken`` (the local
    clock at the same moment, for I15), ``cleanup.rows``, ``cleanup.digest``
    (``sha256:`` of every sorted reference followed by a newline, so
    ``sort | sha256sum`` reproduces it for keys without newlines). Table sources
    (``delta://``, ``iceberg://``) add ``cleanup.table_roots``: a JSON list of the
    table roots they cover, spelled as references are (I20).
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
            ("key_raw", pa.binary()),
        ]
    )


def inventory_key_raw_sql(path: str) -> str:
    """DuckDB expression for an inventory's ``key_raw``: the column where the file has it,
    else NULL (inventories written before the column existed)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError):
        names = []  # unreadable: the reader's own read_parquet reports it
    return "key_raw" if "key_raw" in names else "CAST(NULL AS BLOB)"


def split_key(key: str) -> tuple[str, bytes | None]:
    """``(key, key_raw)`` inventory columns for a listed key.

    A key that is UTF-8 text is itself, with no raw bytes. A local name that is not
    UTF-8 arrives surrogate-escaped (as ``os.fsdecode`` gives it); it becomes its
    exact bytes and a display form with backslash escapes.
    """
    if key.isascii():
        return key, None
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        import os

        raw = os.fsencode(key)
        return raw.decode("utf-8", "backslashreplace"), raw
    return key, None


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
