"""The DuckDB side of planning: anti-join, aggregates and the manifest.

Everything runs out of core: DuckDB gets a memory limit and a spill directory,
so a plan over 100M objects runs on a laptop. Only aggregates and the list of
distinct tenants come back into Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, normalize_ref_sql, sql_literal
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


@dataclass
class EngineResult:
    snapshot_rows: int = 0
    in_scope_refs: int = 0
    out_of_scope_refs: int = 0
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(epoch_us: Any) -> datetime | None:
    """DuckDB returns TIMESTAMPTZ through pytz; we fetch epoch microseconds instead."""
    if epoch_us is None:
        return None
    return _EPOCH + timedelta(microseconds=int(epoch_us))


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


class Engine:
    """Runs the plan's queries on one DuckDB connection.

    Call :meth:`compute` first, then :meth:`write_manifest` with the tenant to
    stage mapping the (pure) core chose.
    """

    def __init__(self, inp: EngineInput) -> None:
        self.inp = inp
        self.con = connect(inp)

    def close(self) -> None:
        self.con.close()

    def _one(self, sql: str) -> tuple[Any, ...]:
        row = self.con.execute(sql).fetchone()
        if row is None:
            raise RuntimeError(f"aggregate query returned no row: {sql}")
        return tuple(row)

    def compute(self) -> EngineResult:
        """One pass over the snapshot, one join against the inventory.

        The snapshot is normalized on the fly (``refs``). A single
        FULL OUTER JOIN yields both sides' unmatched rows: listed keys no
        reference names (candidates, if old enough) and referenced keys not
        listed (I4). The join carries only key, row number and last_modified;
        size and etag are fetched afterwards for the few unmatched rows.
        """
        import duckdb

        inp = self.inp
        inv_file = sql_literal(inp.inventory)
        snap = f"read_parquet({sql_literal(inp.snapshot)})"
        reserved = sql_literal(RESERVED_PREFIX)
        # I2: last_modified + precision <= cutoff, i.e. last_modified <= cutoff - precision.
        latest_ok = sql_literal((inp.cutoff - inp.precision).strftime("%Y-%m-%d %H:%M:%S.%f+00"))
        res = EngineResult()
        try:
            # A view, not a table: the snapshot is already distinct and sorted, and
            # grouping 100M normalized keys does not fit a 1GB memory limit. Two
            # references normalizing to one key (s3:// and s3a://) only repeat a
            # missing reference, which is counted DISTINCT below.
            self.con.execute(
                f"CREATE TEMP VIEW refs AS SELECT {normalize_ref_sql('key', inp.store)} AS key "
                f"FROM {snap}"
            )
            total, in_scope = self._one("SELECT count(*), count(key) FROM refs")
            res.snapshot_rows, res.in_scope_refs = int(total), int(in_scope)
            res.out_of_scope_refs = int(total) - int(in_scope)
            self.con.execute(
                f"CREATE TEMP VIEW inv AS SELECT key, size, last_modified, etag, "
                f"file_row_number AS rn FROM read_parquet({inv_file}, file_row_number = true) "
                f"WHERE key IS NOT NULL AND NOT starts_with(key, {reserved})"
            )
            # Matched rows (referenced AND listed) never leave this join: referenced
            # keys cannot become candidates.
            self.con.execute(
                "CREATE TEMP TABLE unmatched AS SELECT i.key AS ikey, i.rn, i.last_modified, "
                "r.key AS rkey FROM (SELECT key, rn, last_modified FROM inv) i "
                "FULL OUTER JOIN (SELECT key FROM refs WHERE key IS NOT NULL) r "
                "ON i.key = r.key WHERE i.key IS NULL OR r.key IS NULL"
            )
            self.con.execute(
                f"CREATE TEMP TABLE cand AS SELECT i.key, i.size, i.last_modified, i.etag, "
                f"coalesce(regexp_extract(i.key, {sql_literal(inp.tenant_pattern)}, "
                f"{inp.tenant_group}), '') AS tenant FROM inv i "
                f"WHERE i.rn IN (SELECT rn FROM unmatched WHERE rkey IS NULL "
                f"AND last_modified <= {latest_ok}::TIMESTAMPTZ) "
                f"AND i.last_modified <= {latest_ok}::TIMESTAMPTZ"
            )
            (res.missing_refs,) = self._one(
                "SELECT count(DISTINCT rkey) FROM unmatched WHERE ikey IS NULL")
            res.missing_examples = [
                r[0] for r in self.con.execute(
                    "SELECT DISTINCT rkey FROM unmatched WHERE ikey IS NULL ORDER BY rkey LIMIT 5"
                ).fetchall()
            ]
            so, sb, newest = self._one(
                "SELECT count(*), coalesce(sum(size), 0), epoch_us(max(last_modified)) FROM inv")
            res.scope_objects, res.scope_bytes = int(so), int(sb)
            res.newest_in_scope = _utc(newest)
            co, cb, oldest, newest_c = self._one(
                "SELECT count(*), coalesce(sum(size), 0), epoch_us(min(last_modified)), "
                "epoch_us(max(last_modified)) FROM cand")
            res.candidates, res.candidate_bytes = int(co), int(cb)
            res.oldest_candidate, res.newest_candidate = _utc(oldest), _utc(newest_c)
            res.tenants = [r[0] for r in self.con.execute(
                "SELECT DISTINCT tenant FROM cand ORDER BY tenant").fetchall()]
            self._sentinels(res)
        except duckdb.Error as exc:
            raise UsageError(f"planning query failed: {str(exc).splitlines()[0]}",
                             hint="check that the inputs were made by `cleanup inventory` "
                                  "and `cleanup snapshot`") from None
        return res

    def _sentinels(self, res: EngineResult) -> None:
        if not self.inp.sentinels:
            return
        import pyarrow as pa

        self.con.register("sent", pa.table({"key": list(self.inp.sentinels)}))
        for table, target in (("(SELECT key FROM refs WHERE key IS NOT NULL)",
                               res.sentinels_in_snapshot),
                              ("inv", res.sentinels_in_inventory),
                              ("cand", res.sentinels_in_candidates)):
            target.update(r[0] for r in self.con.execute(
                f"SELECT s.key FROM sent s SEMI JOIN {table} t ON s.key = t.key").fetchall())
        self.con.unregister("sent")

    def write_manifest(self, stage_of: dict[str, int], out: str) -> list[dict[str, Any]]:
        """Write manifest.parquet sorted by (stage, key); return per-stage counts."""
        import pyarrow as pa

        self.con.register("tenant_stage", pa.table({
            "tenant": list(stage_of.keys()), "stage": pa.array(list(stage_of.values()), pa.int32()),
        }))
        self.con.execute(
            "COPY (SELECT c.key, c.size, c.last_modified, c.etag, c.tenant, t.stage "
            "FROM cand c JOIN tenant_stage t USING (tenant) ORDER BY t.stage, c.key) "
            f"TO {sql_literal(out)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"
        )
        rows = self.con.execute(
            "SELECT t.stage, count(*), coalesce(sum(c.size), 0), count(DISTINCT c.tenant) "
            "FROM cand c JOIN tenant_stage t USING (tenant) GROUP BY t.stage ORDER BY t.stage"
        ).fetchall()
        return [{"stage": int(s), "objects": int(n), "bytes": int(b), "tenants": int(t)}
                for s, n, b, t in rows]


