"""``cleanup snapshot iceberg://CATALOG/NAMESPACE[.TABLE]``: the files Iceberg tables need.

The catalog is configured as pyiceberg configures it (``~/.pyiceberg.yaml`` or
``$PYICEBERG_HOME/.pyiceberg.yaml``, or ``PYICEBERG_CATALOG__<NAME>__<PROP>``
environment variables): a SQL catalog (SQLite, PostgreSQL), REST, Glue, ...
``NAMESPACE.TABLE`` names one table; a namespace alone names every table in it
(many tables under one store prefix at once).

For every table, the references are

* the current ``metadata.json`` and every one in its metadata log;
* for every snapshot still in the metadata (branch and tag heads included: they
  are snapshots of the metadata): its manifest list, its manifests, and the live
  (``ADDED``/``EXISTING``) data and delete files of those manifests (position
  and equality deletes, deletion vectors);
* the statistics and partition-statistics files.

Locations are taken literally, as Iceberg writes them (``file:///...``,
``s3://...``, ``s3a://...``): the resolver (I4) treats ``file:/``,
``file:///``, ``file://localhost/`` and ``s3``/``s3a``/``s3n`` as the same
places; nothing is percent-decoded (Iceberg's partition folders hold ``%25``
literally). Each table's ``location`` is declared as a table root (I20).

taken_at is the local clock just before the catalog is asked for the tables:
a commit after it may or may not be in the snapshot, which only adds references.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cleanup.errors import UsageError
from cleanup.sources.tables import TableSnapshot

SCHEME = "iceberg://"
_HINT = "write iceberg://CATALOG/NAMESPACE or iceberg://CATALOG/NAMESPACE.TABLE"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_spec(spec: str) -> tuple[str, str]:
    """``CATALOG/NAMESPACE[.TABLE]`` -> (catalog, identifier)."""
    catalog, sep, ident = spec.partition("/")
    ident = ident.strip("/")
    if not sep or not catalog or not ident or "/" in ident:
        raise UsageError(f"{SCHEME}{spec}: cannot tell the catalog and the namespace", hint=_HINT)
    return catalog, ident


def _load_catalog(name: str) -> Any:
    try:
        from pyiceberg.catalog import load_catalog
    except ImportError:
        raise UsageError("reading Iceberg tables needs the pyiceberg package",
                         hint="pip install 'cleanup[iceberg]'") from None
    try:
        from pyiceberg.utils.config import Config

        # pyiceberg reads ~/.pyiceberg.yaml and PYICEBERG_* once, at import; read them
        # again now, so the configuration is the one in force when the snapshot is taken.
        fresh: dict[str, Any] = dict(Config().get_catalog_config(name) or {})
        return load_catalog(name, **fresh)
    except Exception as exc:  # noqa: BLE001 - pyiceberg raises many unrelated types
        raise UsageError(f"{SCHEME}{name}: cannot open the catalog ({_first_line(exc)})",
                         hint="configure it as pyiceberg does: ~/.pyiceberg.yaml or "
                              f"PYICEBERG_CATALOG__{name.upper()}__URI and friends") from None


def _identifiers(catalog: Any, ident: str, where: str) -> list[tuple[str, ...]]:
    """The tables ``ident`` names: itself if it is a table, else its namespace's tables."""
    parts = tuple(ident.split("."))
    if any(not p for p in parts):
        raise UsageError(f"{where}: empty name in {ident!r}", hint=_HINT)
    try:
        if len(parts) >= 2 and catalog.table_exists(parts):
            return [parts]
        tables = [tuple(t) for t in catalog.list_tables(parts)]
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{where}: no such table or namespace ({_first_line(exc)})") from None
    if not tables:
        raise UsageError(f"{where}: the namespace has no tables",
                         hint="an empty namespace references nothing: check the name")
    return sorted(tables)


def table_references(table: Any) -> tuple[set[str], str]:
    """Every location the table's metadata references, and the table's location."""
    meta = table.metadata
    io = table.io
    refs: set[str] = {table.metadata_location}
    refs.update(e.metadata_file for e in meta.metadata_log)
    seen_manifests: set[str] = set()
    for snapshot in meta.snapshots:
        refs.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                refs.add(entry.data_file.file_path)
    refs.update(s.statistics_path for s in meta.statistics)
    refs.update(s.statistics_path for s in meta.partition_statistics)
    return refs, str(meta.location)


def iceberg_source(spec: str, tmp_parquet: str) -> TableSnapshot:
    """Read the tables that ``CATALOG/NAMESPACE[.TABLE]`` names (scheme removed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cleanup.sources.sql import _staged

    catalog_name, ident = parse_spec(spec)
    where = f"{SCHEME}{spec}"
    catalog = _load_catalog(catalog_name)
    taken_at = datetime.now(UTC)  # before any table's metadata is read
    refs: set[str] = set()
    roots: list[str] = []
    described: list[str] = []
    for parts in _identifiers(catalog, ident, where):
        name = ".".join(parts)
        try:
            table = catalog.load_table(parts)
            table_refs, root = table_references(table)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"{where}: cannot read table {name} ({_first_line(exc)})") from None
        refs |= table_refs
        roots.append(root)
        current = table.metadata.current_snapshot_id
        described.append(f"{name}@{current if current is not None else 'empty'}")
    pq.write_table(pa.table({"key": pa.array(sorted(refs), pa.string())}), tmp_parquet)
    shown = ", ".join(described[:5]) + (f", ... ({len(described)} tables)"
                                        if len(described) > 5 else "")
    return TableSnapshot(_staged(tmp_parquet), taken_at, "local:iceberg-reader",
                         f"iceberg:{catalog_name}/{ident} ({shown})", table_roots=tuple(roots))
