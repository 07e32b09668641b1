"""Live reconciliation (I9): the reference set, re-read during execution.

The source must be taken after the plan's snapshot (else the execution is
refused). A database source is re-read whenever the copy in hand is older than
``max_age``, because a long execution must also see references committed
while it runs (a slow writer committing files older than the cutoff).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

from cleanup.core.names import I9
from cleanup.core.paths import (
    StoreRef,
    ancestors,
    fold_sql,
    near_miss_forms,
    needs_fold_sql,
    sql_literal,
)
from cleanup.core.timeutil import format_time, parse_time
from cleanup.errors import InvariantViolation, UsageError
from cleanup.formats import read_meta


class Reconciler:
    def __init__(self, source: str, store: StoreRef, plan_taken_at: datetime, *,
                 query: str | None = None, max_age: timedelta = timedelta(minutes=5),
                 workdir: str | None = None, encoding: str | None = None,
                 base: str | None = None,
                 exists: Callable[[Sequence[str]], Collection[str]] | None = None,
                 refuse_claimed: bool = False) -> None:
        """``workdir``: where re-read snapshots go (the plan's journal dir, so that a
        killed execution leaves nothing outside the plan). ``encoding``/``base``: how
        the live source spells references (default: as its snapshot file declares).
        ``exists``: which of some keys exist in the store right now; a live reference
        that differs from a batch key only by spelling (a near-miss) halts unless it
        names an object of its own."""
        import duckdb

        self.source, self.query, self.store = source, query, store
        self.refuse_claimed = refuse_claimed
        self.encoding, self.base, self.exists = encoding, base, exists
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
            if self.refuse_claimed and read_meta(self.source).get("taken_at_clock") == "claimed":
                raise InvariantViolation(
                    I9, f"the reconcile source {self.source} has a claimed taken_at (a key "
                        "list with --taken-at), not one read from a clock",
                    hint="reconcile against the metadata database itself, or a snapshot "
                         "`cleanup snapshot` read from it")
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
        import duckdb

        from cleanup.refs import load_refs

        try:
            stats = load_refs(self.con, f"read_parquet({sql_literal(path)})", self.store,
                              name="live_refs", workdir=self.tmp,
                              encoding=self.encoding or meta.get("ref_encoding", "literal"),
                              base=self.base if self.base is not None else meta.get("ref_base"))
        except (duckdb.Error, OSError, ValueError) as exc:
            raise UsageError(f"--reconcile-with {self.source}: cannot read the references "
                             f"({str(exc).splitlines()[0][:200]})",
                             hint="re-take the reconcile snapshot; nothing was touched") from None
        if stats.unresolvable:
            raise InvariantViolation(
                I9, f"the reconcile source has {stats.unresolvable} reference(s) that cannot "
                    f"be resolved, e.g. {'; '.join(stats.unresolvable_examples)}",
                hint="fix the references at the source; execution cannot prove a key "
                     "unreferenced against references it cannot place")
        # Keys and folders (folder keys end in '/'); every key also as a folder name
        # without its slash, so a reference to a directory protects what is under it.
        try:
            self.con.execute(
                "CREATE OR REPLACE TABLE live AS SELECT DISTINCT key FROM live_refs")
            self.con.execute(
                f"CREATE OR REPLACE TABLE live_fold AS SELECT DISTINCT key AS ref, "
                f"unnest({fold_sql('key')}) AS f FROM live WHERE {needs_fold_sql('key')}")
        except duckdb.Error as exc:
            raise UsageError(f"--reconcile-with {self.source}: cannot read the references "
                             f"({str(exc).splitlines()[0][:200]})",
                             hint="re-take the reconcile snapshot; nothing was touched") from None
        self.taken_at = taken_at
        self.loaded_at = datetime.now(UTC)

    def referenced(self, keys: Sequence[str]) -> list[str]:
        """The keys of ``keys`` that the live metadata references: exactly, through a
        folder that contains them (``t/dir/`` or ``t/dir``), or through a near-miss
        spelling (NFC/NFD, percent- or ``+``-decoded) that names no object of its own."""
        import pyarrow as pa

        if not self.static and datetime.now(UTC) - self.loaded_at > self.max_age:
            self.refresh()
        probe_key: list[str] = []
        probe: list[str] = []
        form_key: list[str] = []
        form: list[str] = []
        for k in keys:
            for p in [k, *ancestors(k), *(a[:-1] for a in ancestors(k)[1:])]:
                probe_key.append(k)
                probe.append(p)
            for f in {k} | near_miss_forms(k):
                form_key.append(k)
                form.append(f)
        self.con.register("probe", pa.table({"key": pa.array(probe_key, pa.string()),
                                             "p": pa.array(probe, pa.string())}))
        self.con.register("forms", pa.table({"key": pa.array(form_key, pa.string()),
                                             "f": pa.array(form, pa.string())}))
        try:
            hits = {r[0] for r in self.con.execute(
                "SELECT DISTINCT b.key FROM probe b SEMI JOIN live l ON b.p = l.key"
            ).fetchall()}
            near = self.con.execute(
                "SELECT DISTINCT b.key, l.ref FROM forms b JOIN "
                "(SELECT ref, f FROM live_fold UNION ALL SELECT key, key FROM live) l "
                "ON b.f = l.f WHERE l.ref <> b.key").fetchall()
        finally:
            self.con.unregister("probe")
            self.con.unregister("forms")
        near = [(k, r) for k, r in near if k not in hits]
        if near:
            own = set(self.exists([r for _k, r in near])) if self.exists else set()
            hits.update(k for k, r in near if r not in own)
        return sorted(hits)

    def close(self) -> None:
        import shutil

        self.con.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
