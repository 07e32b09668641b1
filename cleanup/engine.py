"""The DuckDB side of planning: anti-join, aggregates and the manifest.

Everything runs out of core: DuckDB gets a memory limit and a spill directory,
so a plan over 100M objects runs on a laptop. Only aggregates and the list of
distinct tenants come back into Python.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, sql_literal
from cleanup.errors import UsageError

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class EngineInput:
    inventory: str
    snapshot: str
    store: StoreRef
    cutoff: datetime
    precision: timedelta
    tenant_pattern: str
    tenant_group: int
    sentinels: tuple[str, ...] = ()
    memory_limit: str = "1GB"
    threads: int | None = None
    temp_dir: str | None = None
    ref_encoding: str = "literal"
    ref_base: str | None = None
    foreign_ok: tuple[StoreRef, ...] = ()
    engine: str = "duckdb"  # which PlanEngine (cleanup.engines.open_engine)
    spark_master: str | None = None  # spark only
    spark_conf: tuple[str, ...] = ()  # spark only: k=v
    table_roots: tuple[str, ...] = ()  # declared by table sources (I20)
    #: Parquet of keys that are never candidates (cleanup.retire: no verified copy)
    exclude: str | None = None


@dataclass
class EngineResult:
    snapshot_rows: int = 0
    in_scope_refs: int = 0
    out_of_scope_refs: int = 0
    folder_refs: int = 0
    implicit_folder_refs: int = 0
    protected_by_folder: int = 0
    foreign_refs: int = 0
    foreign_acknowledged: int = 0
    foreign_where: dict[str, int] = field(default_factory=dict)
    foreign_examples: list[str] = field(default_factory=list)
    unresolvable_refs: int = 0
    unresolvable_examples: list[str] = field(default_factory=list)
    near_misses: int = 0
    near_miss_examples: list[tuple[str, str]] = field(default_factory=list)
    undecodable_names: int = 0
    missing_refs: int = 0
    missing_examples: list[str] = field(default_factory=list)
    scope_objects: int = 0
    scope_bytes: int = 0
    candidates: int = 0
    candidate_bytes: int = 0
    oldest_candidate: datetime | None = None
    newest_candidate: datetime | None = None
    newest_in_scope: datetime | None = None
    tenants: list[str] = field(default_factory=list)
    sentinels_in_snapshot: set[str] = field(default_factory=set)
    sentinels_in_inventory: set[str] = field(default_factory=set)
    sentinels_in_candidates: set[str] = field(default_factory=set)
    stages: list[dict[str, Any]] = field(default_factory=list)
    table_roots: int = 0  # I20: declared roots inside the store
    table_protected: int = 0  # I20: files kept as table metadata or hidden
    uncovered_table_roots: int = 0  # I20: table roots in scope no source covers
    uncovered_table_examples: list[str] = field(default_factory=list)
    per_table: list[dict[str, Any]] = field(default_factory=list)  # I5/I20: per declared root
    # I5: the scope's objects under any declared table root (each counted once)
    table_objects: int = 0
    table_bytes: int = 0
    table_candidates: int = 0
    table_candidate_bytes: int = 0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MANIFEST_COLUMNS = ("key", "size", "last_modified", "etag", "tenant", "stage")
_NEAR_MISS_MAX = 1_000_000  # missing references looked at for near-misses


def _utc(epoch_us: Any) -> datetime | None:
    """DuckDB returns TIMESTAMPTZ through pytz; we fetch epoch microseconds instead."""
    if epoch_us is None:
        return None
    return _EPOCH + timedelta(microseconds=int(epoch_us))


def tenant_sql(column: str, inp: EngineInput) -> str:
    """The tenant of ``column`` (DuckDB SQL: RE2, the plan's one regex dialect): the
    pattern's tenant group, ``''`` when it does not match. Both engines evaluate exactly
    this expression in DuckDB (Spark on its executors), so the tenant column of the
    signed manifest does not depend on the engine."""
    return (f"coalesce(regexp_extract({column}, {sql_literal(inp.tenant_pattern)}, "
            f"{int(inp.tenant_group)}), '')")


def _table_meta_sql(rest: str) -> str:
    """I20 (DuckDB SQL): ``rest``, a path below a table root, is table metadata or hidden."""
    return (f"(starts_with({rest}, '_delta_log/') OR starts_with({rest}, 'metadata/') OR "
            f"regexp_matches({rest}, '(^|/)[_.]'))")


def _ancestors_sql(column: str) -> str:
    from cleanup.refs import ancestors_sql

    return ancestors_sql(column)


def connect(inp: EngineInput) -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = {sql_literal(inp.memory_limit)}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    if inp.threads:
        con.execute(f"SET threads = {int(inp.threads)}")
    if inp.temp_dir:
        con.execute(f"SET temp_directory = {sql_literal(inp.temp_dir)}")
    return con


class PlanEngine(Protocol):
    """What the planner asks of an engine (DuckDB: :class:`Engine`; Spark:
    :class:`cleanup.engines.spark.SparkEngine`): :meth:`compute` once, then the two
    candidate checks, then :meth:`write_manifest` with the core's tenant to stage map,
    then :meth:`close`. The same inputs must give the same result and a byte-identical
    manifest, whatever the engine."""

    def compute(self) -> EngineResult: ...

    def long_keys(self, quarantine: bool) -> tuple[int, list[str]]: ...

    def unsafe_keys(self) -> tuple[int, list[str]]: ...

    def write_manifest(self, stage_of: dict[str, int], out: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class Engine:
    """Runs the plan's queries on one DuckDB connection.

    Call :meth:`compute` first, then :meth:`write_manifest` with the tenant to
    stage mapping the (pure) core chose.
    """

    def __init__(self, inp: EngineInput) -> None:
        self.inp = inp
        self.con = connect(inp)
        # Resolved references are staged here (inp.temp_dir, or a private one we remove).
        self._own_tmp = None if inp.temp_dir else tempfile.mkdtemp(prefix="cleanup-refs-")
        self.workdir = inp.temp_dir or str(self._own_tmp)

    def close(self) -> None:
        self.con.close()
        if self._own_tmp:
            shutil.rmtree(self._own_tmp, ignore_errors=True)

    def _one(self, sql: str) -> tuple[Any, ...]:
        rows = self.con.execute(sql).fetchall()
        row = rows[0] if rows else None
        if row is None:
            raise RuntimeError(f"aggregate query returned no row: {sql}")
        return tuple(row)

    def compute(self) -> EngineResult:
        """One resolution pass over the snapshot, one join against the inventory.

        References are resolved by :func:`cleanup.refs.load_refs` (the one resolver).
        A single FULL OUTER JOIN yields both sides' unmatched rows: listed keys no
        reference names (candidates, if old enough) and referenced keys not listed
        (I4). The join carries only key, row number and last_modified. Then
        candidates under a referenced folder (or under a missing reference that is
        a folder of theirs) are protected, and near-misses are looked for.
        """
        import duckdb

        inp = self.inp
        res = EngineResult()
        try:
            self._views()
            self._resolve(res)
            # Matched rows (referenced AND listed) never leave this join: referenced
            # keys cannot become candidates.
            self.con.execute(
                "CREATE TEMP TABLE unmatched AS SELECT i.key AS ikey, i.rn, i.last_modified, "
                "r.key AS rkey FROM (SELECT key, rn, last_modified FROM inv) i "
                "FULL OUTER JOIN (SELECT key FROM refs WHERE cls = 'key') r "
                "ON i.key = r.key WHERE i.key IS NULL OR r.key IS NULL"
            )
            latest_ok = self._latest_ok()
            self.con.execute(
                f"CREATE TEMP TABLE cand0 AS SELECT i.key, i.size, i.last_modified, i.etag, "
                f"{tenant_sql('i.key', inp)} AS tenant FROM inv i "
                f"WHERE i.rn IN (SELECT rn FROM unmatched WHERE rkey IS NULL "
                f"AND last_modified <= {latest_ok}::TIMESTAMPTZ) "
                f"AND i.last_modified <= {latest_ok}::TIMESTAMPTZ"
            )
            if inp.exclude:
                self.con.execute(f"DELETE FROM cand0 WHERE key IN (SELECT key FROM "
                                 f"read_parquet({sql_literal(inp.exclude)}))")
            self.con.execute("CREATE TEMP TABLE missing AS SELECT DISTINCT rkey AS key "
                             "FROM unmatched WHERE ikey IS NULL")
            self._protect(res)
            self._table_metadata(res)
            self._missing(res)
            self._totals(res)
            self._sentinels(res)
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise UsageError(f"planning query failed: {first}",
                             hint=self.failure_hint(first)) from None
        return res

    def failure_hint(self, message: str,
                     otherwise: str = "check that the inputs were made by `cleanup inventory` "
                                      "and `cleanup snapshot`") -> str:
        """What to do about a failed planning query: disk or memory, else ``otherwise``."""
        where = self.inp.temp_dir or "the temporary folder"
        if "No space left on device" in message:
            return (f"the join spills to {where} and the disk filled up: free space there "
                    "(about the inventory's size again, or more), or raise --memory-limit")
        if "Out of Memory" in message or "failed to pin block" in message:
            return (f"--memory-limit {self.inp.memory_limit} is too small for this join: "
                    "raise it (DuckDB spills beyond it, but needs room for its largest step)")
        return otherwise

    def _latest_ok(self) -> str:
        # I2: last_modified + precision <= cutoff, i.e. last_modified <= cutoff - precision.
        t = self.inp.cutoff - self.inp.precision
        return sql_literal(t.strftime("%Y-%m-%d %H:%M:%S.%f+00"))

    def _views(self) -> None:
        """``inv``: the listed objects in scope (reserved prefix and names that are not
        UTF-8 excluded: those are never candidates). A ``_cleanup/`` folder deeper down is
        a nested store's bookkeeping (its quarantine, audit log, trust root): out of scope
        too, never a candidate of this store's plan."""
        import pyarrow.parquet as pq

        from cleanup.inputs import input_files, parquet_list_sql

        files = input_files(self.inp.inventory, "inventory")  # a file, or its shards
        inv_file = parquet_list_sql(files)
        names = set(pq.read_schema(files[0]).names)
        raw_ok = "AND key_raw IS NULL" if "key_raw" in names else ""
        self.con.execute(
            f"CREATE TEMP VIEW inv_all AS SELECT key, size, "
            f"CAST(last_modified AS TIMESTAMPTZ) AS last_modified, etag, "
            # Row numbers restart in each shard: the file's index makes them unique.
            f"{'(file_index::BIGINT << 40) + ' if len(files) > 1 else ''}file_row_number AS rn, "
            f"{'key_raw' if raw_ok else 'NULL::BLOB AS key_raw'} "
            f"FROM read_parquet({inv_file}, file_row_number = true) WHERE key IS NOT NULL")
        self.con.execute(
            f"CREATE TEMP VIEW inv AS SELECT key, size, last_modified, etag, rn FROM inv_all "
            f"WHERE NOT starts_with(key, {sql_literal(RESERVED_PREFIX)}) "
            f"AND NOT contains(key, {sql_literal('/' + RESERVED_PREFIX)}) {raw_ok}")

    def _resolve(self, res: EngineResult) -> None:
        from cleanup.inputs import input_files, parquet_list_sql
        from cleanup.refs import load_refs

        inp = self.inp
        os.makedirs(self.workdir, exist_ok=True)
        snap = parquet_list_sql(input_files(inp.snapshot, "snapshot"))
        stats = load_refs(self.con, f"read_parquet({snap})", inp.store,
                          name="refs", workdir=self.workdir, encoding=inp.ref_encoding,
                          base=inp.ref_base, foreign_ok=inp.foreign_ok)
        res.snapshot_rows = stats.rows
        res.in_scope_refs = stats.in_scope
        res.out_of_scope_refs = stats.foreign + stats.foreign_acknowledged
        res.folder_refs = stats.folders
        res.foreign_refs, res.foreign_acknowledged = stats.foreign, stats.foreign_acknowledged
        res.foreign_where = dict(stats.foreign_where.most_common(10))
        res.foreign_examples = stats.foreign_examples
        res.unresolvable_refs = stats.unresolvable
        res.unresolvable_examples = stats.unresolvable_examples

    def _protect(self, res: EngineResult) -> None:
        """Candidates under a referenced folder are not candidates. A missing reference
        that names a folder of a candidate (``t/dir`` for ``t/dir/x``) protects it too:
        a reference to a directory written without its slash still means the files."""
        from cleanup.refs import protect_sql

        self.con.execute(
            "CREATE TEMP VIEW protect_dirs AS SELECT key FROM refs WHERE cls = 'folder' "
            "UNION ALL SELECT key || '/' FROM missing")
        (has,) = self._one("SELECT count(*) FROM protect_dirs")
        if has:
            self.con.execute("CREATE TEMP TABLE protected AS "
                             + protect_sql("cand0", "protect_dirs"))
            n, implicit = self._one(
                "SELECT count(DISTINCT key), count(DISTINCT anc) FILTER "
                "(WHERE rtrim(anc, '/') IN (SELECT key FROM missing)) FROM protected")
            res.protected_by_folder, res.implicit_folder_refs = int(n), int(implicit)
            self.con.execute("CREATE TEMP TABLE cand AS SELECT * FROM cand0 "
                             "ANTI JOIN (SELECT DISTINCT key FROM protected) p USING (key)")
            self.con.execute("DELETE FROM missing WHERE key || '/' IN "
                             "(SELECT anc FROM protected)")
        else:
            self.con.execute("CREATE TEMP TABLE cand AS SELECT * FROM cand0")

    def _table_metadata(self, res: EngineResult) -> None:
        """I20: under a declared table root, ``_delta_log/``, ``metadata/`` and any path
        component starting with ``_`` or ``.`` are never candidates; table roots in the
        scope (a ``_delta_log/`` folder, a ``*.metadata.json``) that no declared root
        covers are counted for the check."""
        roots = self._declared_roots()
        res.table_roots = len(roots)
        self._load_troots(roots)
        if roots:
            rest = "(r.inside || substr(a.key, length(a.anc) + 1))"
            self.con.execute(
                "CREATE TEMP TABLE table_kept AS SELECT DISTINCT a.key FROM "
                f"(SELECT key, unnest({_ancestors_sql('key')}) AS anc FROM cand) a "
                f"JOIN troots r ON a.anc = r.prefix WHERE {_table_meta_sql(rest)}")
            (n,) = self._one("SELECT count(*) FROM table_kept")
            res.table_protected = int(n)
            if n:
                self.con.execute("DELETE FROM cand WHERE key IN (SELECT key FROM table_kept)")
            self._per_table(res, rest)
        self._found_roots(res, "inv")

    def _declared_roots(self) -> list[tuple[str, str]]:
        """The declared table roots inside this store, sorted: (prefix of the root in the
        store, the store's own place inside the root). A store inside a table (a
        partition folder) has every key under that table."""
        from cleanup.core.paths import parse_store, resolve_ref

        roots: set[tuple[str, str]] = set()
        for root in self.inp.table_roots:
            # As a folder: `s3://b/t` is not inside store `s3://b/t/`, `s3://b/t/` is.
            r = resolve_ref(root.rstrip("/") + "/", self.inp.store)
            if r.cls == "key" and r.key:
                roots.add((r.key + "/", ""))
            elif r.cls == "folder":
                roots.add((r.key or "", ""))
            else:
                try:
                    inner = resolve_ref(self.inp.store.url.rstrip("/") + "/",
                                        parse_store(root.rstrip("/") + "/"))
                except UsageError:
                    continue
                if inner.cls == "folder" and inner.key:
                    roots.add(("", inner.key))
        return sorted(roots)

    def _load_troots(self, roots: list[tuple[str, str]]) -> None:
        """The table ``troots`` (prefix, inside) in this connection."""
        import pyarrow as pa

        self.con.register("table_roots_in", pa.table(
            {"prefix": pa.array([p for p, _o in roots], pa.string()),
             "offset": pa.array([o for _p, o in roots], pa.string())}))
        self.con.execute("CREATE TEMP TABLE troots AS SELECT prefix, \"offset\" AS inside "
                         "FROM table_roots_in")
        self.con.unregister("table_roots_in")

    def _found_roots(self, res: EngineResult, source: str) -> None:
        """I20's count of table roots no declared root covers, over ``source`` (the
        in-scope keys, or any superset of those that name a table root)."""
        self.con.execute(
            "CREATE TEMP TABLE found_roots AS SELECT DISTINCT root FROM ("
            f"SELECT regexp_extract(key, '^(.*/)?_delta_log/', 1) AS root FROM {source} "
            "WHERE contains(key, '_delta_log/') "
            "AND regexp_matches(key, '(^|/)_delta_log/') UNION ALL "
            "SELECT CASE WHEN regexp_matches(key, '(^|/)metadata/[^/]*$') "
            "THEN regexp_extract(key, '^(.*/)?metadata/[^/]*$', 1) "
            f"ELSE regexp_extract(key, '^(.*/)?[^/]*$', 1) END FROM {source} "
            "WHERE ends_with(key, '.metadata.json')) "
            "WHERE root NOT IN (SELECT prefix FROM troots WHERE inside = '')")
        (u,) = self._one("SELECT count(*) FROM found_roots")
        res.uncovered_table_roots = int(u)
        res.uncovered_table_examples = [str(r[0]) for r in self.con.execute(
            "SELECT root FROM found_roots ORDER BY root LIMIT 5").fetchall()]

    def _per_table(self, res: EngineResult, rest: str) -> None:
        """Each declared table's own numbers (I5 per table, shown to reviewers): its
        objects, those that are its metadata or hidden (never candidates) and its
        candidates; and the scope's objects under any table, each counted once."""
        self.con.execute(
            f"CREATE TEMP TABLE tkeys AS SELECT a.key, a.size, a.anc, {_table_meta_sql(rest)} "
            f"AS meta FROM (SELECT key, size, unnest({_ancestors_sql('key')}) AS anc FROM inv) a "
            "JOIN troots r ON a.anc = r.prefix")
        res.per_table = [
            {"root": str(p), "objects": int(o), "bytes": int(b), "metadata_objects": int(mo),
             "metadata_bytes": int(mb), "candidates": int(c), "candidate_bytes": int(cb)}
            for p, o, b, mo, mb, c, cb in self.con.execute(
                "SELECT t.anc, count(*), coalesce(sum(t.size), 0), count(*) FILTER (WHERE "
                "t.meta), coalesce(sum(t.size) FILTER (WHERE t.meta), 0), count(c.key), "
                "coalesce(sum(c.size), 0) FROM tkeys t LEFT JOIN cand c ON c.key = t.key "
                "GROUP BY t.anc ORDER BY t.anc").fetchall()]
        o, b, c, cb = self._one(
            "SELECT count(*), coalesce(sum(t.size), 0), count(c.key), coalesce(sum(c.size), 0) "
            "FROM (SELECT DISTINCT key, size FROM tkeys) t LEFT JOIN cand c ON c.key = t.key")
        res.table_objects, res.table_bytes = int(o), int(b)
        res.table_candidates, res.table_candidate_bytes = int(c), int(cb)

    def _missing(self, res: EngineResult) -> None:
        from cleanup.refs import near_miss_pairs

        (n,) = self._one("SELECT count(*) FROM missing")
        res.missing_refs = int(n)
        res.missing_examples = [r[0] for r in self.con.execute(
            "SELECT key FROM missing ORDER BY key LIMIT 5").fetchall()]
        if n:
            missing = (r[0] for r in self.con.execute(
                f"SELECT key FROM missing ORDER BY key LIMIT {_NEAR_MISS_MAX}").fetchall())
            res.near_misses, res.near_miss_examples = near_miss_pairs(
                self.con, missing, "inv", limit=20)

    def _totals(self, res: EngineResult) -> None:
        so, sb, newest = self._one(
            "SELECT count(*), coalesce(sum(size), 0), epoch_us(max(last_modified)) FROM inv")
        res.scope_objects, res.scope_bytes = int(so), int(sb)
        res.newest_in_scope = _utc(newest)
        (res.undecodable_names,) = self._one(
            "SELECT count(*) FROM inv_all WHERE key_raw IS NOT NULL")
        co, cb, oldest, newest_c = self._one(
            "SELECT count(*), coalesce(sum(size), 0), epoch_us(min(last_modified)), "
            "epoch_us(max(last_modified)) FROM cand")
        res.candidates, res.candidate_bytes = int(co), int(cb)
        res.oldest_candidate, res.newest_candidate = _utc(oldest), _utc(newest_c)
        res.tenants = [r[0] for r in self.con.execute(
            "SELECT DISTINCT tenant FROM cand ORDER BY tenant").fetchall()]

    def _sentinels(self, res: EngineResult) -> None:
        if not self.inp.sentinels:
            return
        import pyarrow as pa

        from cleanup.refs import protect_sql

        self.con.register("sent", pa.table({"key": list(self.inp.sentinels)}))
        for table, target in (("(SELECT key FROM refs WHERE cls = 'key')",
                               res.sentinels_in_snapshot),
                              ("inv", res.sentinels_in_inventory),
                              ("cand", res.sentinels_in_candidates)):
            target.update(r[0] for r in self.con.execute(
                f"SELECT s.key FROM sent s SEMI JOIN {table} t ON s.key = t.key").fetchall())
        # A sentinel under a referenced folder is referenced.
        res.sentinels_in_snapshot.update(r[0] for r in self.con.execute(
            protect_sql("sent", "(SELECT key FROM refs WHERE cls = 'folder')")).fetchall())
        self.con.unregister("sent")

    def long_keys(self, quarantine: bool) -> tuple[int, list[str]]:
        """Candidates too long for the store (or, with ``quarantine``, for their place
        under ``_cleanup/quarantine/<plan id>/``): they could not be moved safely."""
        from cleanup.core.limits import too_long_sql

        cond = too_long_sql("key", self.inp.store, quarantine=quarantine)
        (n,) = self._one(f"SELECT count(*) FROM cand WHERE {cond}")
        ex = [r[0][:120] + ("..." if len(r[0]) > 120 else "") for r in self.con.execute(
            f"SELECT key FROM cand WHERE {cond} ORDER BY key LIMIT 3").fetchall()]
        return int(n), ex

    def unsafe_keys(self) -> tuple[int, list[str]]:
        """Candidates that are not safe store paths (I19: ``..``/``.`` segments, absolute,
        NUL; local stores also empty segments): a quarantine or restore path built from
        them could name another object."""
        from cleanup.core.paths import unsafe_key_sql

        cond = unsafe_key_sql("key", self.inp.store.kind)
        (n,) = self._one(f"SELECT count(*) FROM cand WHERE {cond}")
        ex = [r[0][:120] for r in self.con.execute(
            f"SELECT key FROM cand WHERE {cond} ORDER BY key LIMIT 3").fetchall()]
        return int(n), ex

    def write_manifest(self, stage_of: dict[str, int], out: str) -> list[dict[str, Any]]:
        """Write manifest.parquet sorted by (stage, key); return per-stage counts."""
        import pyarrow as pa

        self.con.register("tenant_stage", pa.table({
            "tenant": list(stage_of.keys()), "stage": pa.array(list(stage_of.values()), pa.int32()),
        }))
        self.copy_manifest("SELECT c.key, c.size, c.last_modified, c.etag, c.tenant, t.stage "
                           "FROM cand c JOIN tenant_stage t USING (tenant)", out)
        rows = self.con.execute(
            "SELECT t.stage, count(*), coalesce(sum(c.size), 0), count(DISTINCT c.tenant) "
            "FROM cand c JOIN tenant_stage t USING (tenant) GROUP BY t.stage ORDER BY t.stage"
        ).fetchall()
        return [{"stage": int(s), "objects": int(n), "bytes": int(b), "tenants": int(t)}
                for s, n, b, t in rows]

    def copy_manifest(self, rows: str, out: str) -> None:
        """The manifest's one writer: ``rows`` (key, size, last_modified, etag, tenant,
        stage) sorted by (stage, key) into ``out``, whichever engine computed them."""
        # DuckDB's writer marks a column REQUIRED when the statistics of where it came from
        # rule out NULLs (a Parquet scan does; an Arrow table does not): every column is
        # written optional, so the bytes depend on the rows only, not on their source.
        cols = ", ".join(f"CASE WHEN {c} IS NULL THEN NULL ELSE {c} END AS {c}"
                         for c in MANIFEST_COLUMNS)
        self.con.execute(
            f"COPY (SELECT {cols} FROM ({rows}) ORDER BY stage, key) TO {sql_literal(out)} "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
