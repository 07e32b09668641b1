"""Resolving a reference set at scale (I4), for planning and reconciliation alike.

:func:`load_refs` turns a relation of raw references (one column ``key``) into
a DuckDB view ``<name>(key, cls)`` of store-relative keys (``cls = 'key'``) and
folders (``cls = 'folder'``, key ending in ``/`` or ``""`` for the store root),
using one resolver: the common spellings through the SQL fast path
(:func:`cleanup.core.paths.fast_key_select`), every other spelling through
:func:`cleanup.core.paths.resolve_ref` in Python, streamed to a Parquet file so
that memory stays bounded. Foreign and unresolvable references are counted
with examples; they never reach the view.

:func:`protect_sql` and :func:`near_miss_pairs` are the two further questions
both callers ask: which keys lie under a referenced folder, and which inventory
keys a missing reference may have meant.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cleanup.core.paths import (
    StoreRef,
    fast_key_select,
    fold_sql,
    near_miss_forms,
    needs_fold_sql,
    resolve_ref,
    sql_literal,
)

if TYPE_CHECKING:
    import duckdb

EXAMPLES = 5
_BATCH = 100_000


@dataclass
class RefStats:
    rows: int = 0
    keys: int = 0
    folders: int = 0
    foreign: int = 0
    foreign_acknowledged: int = 0
    unresolvable: int = 0
    null: int = 0
    foreign_where: Counter[str] = field(default_factory=Counter)
    foreign_examples: list[str] = field(default_factory=list)
    unresolvable_examples: list[str] = field(default_factory=list)

    @property
    def in_scope(self) -> int:
        return self.keys + self.folders


def load_refs(con: duckdb.DuckDBPyConnection, source: str, store: StoreRef, *, name: str,
              workdir: str, encoding: str = "literal", base: str | None = None,
              foreign_ok: Sequence[StoreRef] = ()) -> RefStats:
    """Create view ``name(key, cls)`` from relation ``source`` (column ``key``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    select = (fast_key_select(source, store, encoding) if base is None
              else f"SELECT key AS ref, NULL::VARCHAR AS fk FROM {source}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name}_raw AS {select}")
    stats = RefStats()
    total, fast_n, nulls, complex_n = con.execute(
        f"SELECT count(*), count(fk), count(*) - count(ref), "
        f"count(*) FILTER (WHERE fk IS NULL AND ref IS NOT NULL) FROM {name}_raw").fetchall()[0]
    stats.rows, stats.keys, stats.null = int(total), int(fast_n), int(nulls)
    stats.unresolvable = stats.null
    if stats.null:
        stats.unresolvable_examples.append(f"{stats.null} NULL reference(s)")
    schema = pa.schema([("key", pa.string()), ("cls", pa.string())])
    complex_file = os.path.join(workdir, f"{name}-resolved.parquet")
    # No second scan of the snapshot when the fast path answered every reference.
    batches: Iterable[pa.RecordBatch] = (
        con.sql(f"SELECT ref FROM {name}_raw WHERE fk IS NULL AND ref IS NOT NULL"
                ).to_arrow_reader(_BATCH) if complex_n else ())
    with pq.ParquetWriter(complex_file, schema) as w:
        for batch in batches:
            keys: list[str] = []
            classes: list[str] = []
            for ref in batch.column(0).to_pylist():
                r = resolve_ref(ref, store, base=base, encoding=encoding)
                if r.cls in ("key", "folder"):
                    keys.append(r.key or "")
                    classes.append(r.cls)
                    if r.cls == "key":
                        stats.keys += 1
                    else:
                        stats.folders += 1
                elif r.cls == "foreign":
                    if any(resolve_ref(ref, ok, encoding=encoding).cls in ("key", "folder")
                           for ok in foreign_ok):
                        stats.foreign_acknowledged += 1
                        continue
                    stats.foreign += 1
                    stats.foreign_where[r.where] += 1
                    if len(stats.foreign_examples) < EXAMPLES:
                        stats.foreign_examples.append(ref)
                else:
                    stats.unresolvable += 1
                    if len(stats.unresolvable_examples) < EXAMPLES:
                        stats.unresolvable_examples.append(f"{ref!r} ({r.reason})")
            if keys:
                w.write_batch(pa.RecordBatch.from_arrays(
                    [pa.array(keys, pa.string()), pa.array(classes, pa.string())],
                    schema=schema))
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS "
        f"SELECT fk AS key, 'key' AS cls FROM {name}_raw WHERE fk IS NOT NULL "
        f"UNION ALL SELECT key, cls FROM read_parquet({sql_literal(complex_file)})")
    return stats


def ancestors_sql(column: str) -> str:
    """DuckDB list of the folders containing ``column``: ``a/b/c`` -> ['', 'a/', 'a/b/']."""
    return (f"list_prepend('', list_transform(range(1, len(string_split({column}, '/'))), "
            f"lambda i: array_to_string(string_split({column}, '/')[1:i], '/') || '/'))")


def protect_sql(keys: str, folders: str) -> str:
    """SQL: the keys of relation ``keys`` (column ``key``) that lie under a folder of
    relation ``folders`` (column ``key``, folder keys ending in ``/`` or ``""``)."""
    return (f"SELECT DISTINCT a.key, a.anc FROM (SELECT key, unnest({ancestors_sql('key')}) "
            f"AS anc FROM {keys}) a SEMI JOIN {folders} f ON a.anc = f.key")


def near_miss_pairs(con: duckdb.DuckDBPyConnection, missing: Iterable[str], inventory: str,
                    limit: int = 1000) -> tuple[int, list[tuple[str, str]]]:
    """References absent from the inventory whose NFC/NFD, percent-, ``+``-decoded or
    dot-resolved form is an inventory key (relation ``inventory``, column ``key``).

    Returns the number of such references and up to ``limit`` (reference, key) pairs.
    """
    import pyarrow as pa

    refs: list[str] = []
    forms: list[str] = []
    for m in missing:
        for f in {m} | near_miss_forms(m):
            refs.append(m)
            forms.append(f)
    if not refs:
        return 0, []
    con.register("nm_forms", pa.table({"ref": pa.array(refs, pa.string()),
                                       "f": pa.array(forms, pa.string())}))
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE near_miss AS SELECT DISTINCT m.ref, i.key FROM "
            f"(SELECT key, key AS f FROM {inventory} UNION ALL "
            f"SELECT key, unnest({fold_sql('key')}) AS f FROM {inventory} "
            f"WHERE {needs_fold_sql('key')}) i JOIN nm_forms m ON i.f = m.f "
            "WHERE i.key <> m.ref")
    finally:
        con.unregister("nm_forms")
    row = con.execute("SELECT count(DISTINCT ref) FROM near_miss").fetchall()[0]
    pairs = con.execute(f"SELECT ref, key FROM near_miss ORDER BY ref, key LIMIT {int(limit)}"
                        ).fetchall()
    return int(row[0]), [(str(r), str(k)) for r, k in pairs]
