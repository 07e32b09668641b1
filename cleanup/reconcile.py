"""Live reconciliation (I9): the reference set, re-read during execution.

The source must be taken after the plan's snapshot (else the execution is
refused). A database source is re-read whenever the copy in hand is older than
``max_age``, because a long execution must also see references committed
while it runs (a slow writer committing files older than the cutoff).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cleanup.core.paths import StoreRef, normalize_ref_sql, sql_literal
from cleanup.core.timeutil import format_time, parse_time
from cleanup.errors import InvariantViolation, UsageError
from cleanup.formats import read_meta

I9 = "I9 reconcile"


class Reconciler:
    def __init__(self, source: str, store: StoreRef, plan_taken_at: datetime, *,
                 query: str | None = None, max_age: timedelta = timedelta(minutes=5),
                 workdir: str | None = None) -> None:
        """``workdir``: where re-read snapshots go (the plan's journal dir, so that a
        killed execution leaves nothing outside the plan)."""
        import duckdb

        self.source, self.query, self.store = source, query, store
        self.plan_taken_at, self.max_age = plan_taken_at, max_age
        if workdir:
            os.makedirs(workdir, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="reconcile-", dir=workdir)
        self.con = duckdb.connect()
        self.taken_at = plan_taken_at
        self.loaded_at = datetime.now(UTC)
        self.static = False
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise

    def _snapshot_file(self) -> str:
        from cleanup.snapshot import take_snapshot

        lower = self.source.lower()
        if lower.endswith((".parquet", ".pq")) and read_meta(self.source).get("kind") == "snapshot":
            self.static = True
            return self.source
        if lower.endswith((".parquet", ".pq", ".csv", ".csv.gz", ".tsv", ".txt")):
            raise UsageError(
                f"--reconcile-with {self.source}: a key list has no clock",
                hint="give the metadata database itself (with --reconcile-query), or a "
                     "snapshot made by `cleanup snapshot` after the plan's snapshot")
        out = os.path.join(self.tmp, "live.parquet")
        if os.path.exists(out):
            os.unlink(out)
        take_snapshot(self.source, out, query=self.query)
        return out

    def refresh(self) -> None:
        path = self._snapshot_file()
        meta = read_meta(path)
        taken_at = parse_time(meta["taken_at"]) if meta.get("taken_at") else None
        if taken_at is None or taken_at <= self.plan_taken_at:
            raise InvariantViolation(
                I9, f"the reconcile source was taken at "
                    f"{format_time(taken_at) if taken_at else 'an unknown time'}, not after "
                    f"the plan's snapshot ({format_time(self.plan_taken_at)})",
                hint="reconcile against the live metadata, read now")
        self.con.execute(
            f"CREATE OR REPLACE TABLE live AS SELECT DISTINCT k AS key FROM "
            f"(SELECT {normalize_ref_sql('key', self.store)} AS k FROM "
            f"read_parquet({sql_literal(path)})) WHERE k IS NOT NULL")
        self.taken_at = taken_at
        self.loaded_at = datetime.now(UTC)

    def referenced(self, keys: Sequence[str]) -> list[str]:
        """The keys of ``keys`` that the live metadata references."""
        import pyarrow as pa

        if not self.static and datetime.now(UTC) - self.loaded_at > self.max_age:
            self.refresh()
        self.con.register("batch", pa.table({"key": list(keys)}))
        try:
            rows = self.con.execute(
                "SELECT b.key FROM batch b SEMI JOIN live l ON b.key = l.key ORDER BY b.key"
            ).fetchall()
        finally:
            self.con.unregister("batch")
        return [r[0] for r in rows]

    def close(self) -> None:
        import shutil

        self.con.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
