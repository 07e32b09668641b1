"""The plan computed on Apache Spark (``cleanup plan --engine spark``).

Same inputs and result as :class:`cleanup.engine.Engine`, same manifest bytes.
What runs where:

In Spark (DataFrames and Spark SQL, over the inventory and snapshot Parquet files
or their shards):

- reference normalization (I4): the SQL fast path of
  :func:`cleanup.core.paths.fast_key_select`, written in Spark SQL
  (:func:`spark_fast_key_select`);
- one FULL OUTER JOIN of inventory and resolved references: candidates (the
  I2 rule ``last_modified + precision <= cutoff``, compared in epoch
  microseconds) and referenced keys missing from the inventory;
- protection of candidates under referenced folders (and under a missing
  reference naming a folder of theirs), by the same ancestor join as DuckDB's;
- the near-miss join (the inventory side folded by a Python UDF that mirrors
  :func:`cleanup.core.paths.fold_sql`; it runs only when references are missing),
  sentinels, scope totals and the count of names that are not UTF-8.

In the driver (Python):

- references the fast path cannot answer (URLs in other spellings, dot
  segments, a declared base, ...) are streamed to the driver and classified by
  the one resolver :func:`cleanup.core.paths.resolve_ref`, exactly as
  :func:`cleanup.refs.load_refs` does; the resolved keys go back to Spark as a
  table. Plain keys and the store's exact root spellings never leave Spark;
- the forms of missing references (at most 1M) for the near-miss join.

Also in Spark, after the join:

- the exclusion of keys without a verified copy (retirement, ``EngineInput.exclude``);
- I20: candidates that are table metadata or hidden under a declared table root are
  kept, each declared table's numbers, and the scan for keys that may name a table
  root (``_delta_log/``, ``*.metadata.json``);
- tenant extraction, on the executors by DuckDB (``mapInArrow``) with the DuckDB
  engine's own expression (:func:`cleanup.engine.tenant_sql`): the pattern is RE2's
  dialect, Java's differs, and the tenant is part of the signed manifest. An executor
  whose DuckDB is not the driver's version is refused;
- the candidate totals and the distinct tenants; then, with the pure core's
  tenant-to-stage map, stage assignment (a broadcast join) and the per-stage counts.

In the driver's DuckDB, over the Parquet parts Spark wrote into the plan's work
directory (typed as the DuckDB engine's columns): the key-length and I19 checks
(inherited), the count of table roots no source covers (the DuckDB engine's query,
over the pre-filtered keys), and the manifest: one file, written by the one writer
both engines share (:meth:`cleanup.engine.Engine.copy_manifest`, sorted by stage and
key), so the manifest, its sha256 and the plan id do not depend on the engine. The
work directory must be readable by the driver and writable by the executors: local
mode, or a cluster whose executors share it.

Inputs are files (local, or a shared file system's mount), as for the DuckDB engine:
the planner hashes the bytes it plans from, and a URL could change between that hash
and the engine's read (``s3a://`` is refused in one line).

pyspark is the optional extra ``cleanup[spark]``, imported only here.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cleanup.core.paths import (
    RESERVED_PREFIX,
    StoreRef,
    ancestors,
    fast_prefixes,
    near_miss_forms,
    resolve_ref,
)
from cleanup.engine import (
    _EPOCH,
    _NEAR_MISS_MAX,
    Engine,
    EngineInput,
    EngineResult,
    _utc,
    tenant_sql,
)
from cleanup.errors import UsageError
from cleanup.inputs import input_files, parquet_list_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SPARK_EXTRA = "pip install 'cleanup[spark]'"
EXAMPLES = 5
_BATCH = 100_000
_REF_SCHEMA = "key string, cls string"


def import_pyspark() -> Any:
    """The ``pyspark.sql`` module, or a :class:`UsageError` naming the extra."""
    try:
        import pyspark.sql
    except ImportError as exc:
        raise UsageError(f"--engine spark needs pyspark, which is not installed ({exc})",
                         hint=f"{SPARK_EXTRA} (Spark also needs a Java 17+ runtime)") from None
    return pyspark.sql


def spark_session(master: str | None, conf: tuple[str, ...]) -> tuple[SparkSession, bool]:
    """The active session (spark-submit, a notebook, tests), else a new one:
    ``(session, created)``. ``master`` defaults to spark-submit's, else ``local[*]``."""
    sql = import_pyspark()
    pairs = []
    for kv in conf:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            raise UsageError(f"--spark-conf {kv!r} is not KEY=VALUE",
                             hint="e.g. --spark-conf spark.executor.memory=4g")
        pairs.append((k.strip(), v))
    active = sql.SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = sql.SparkSession.builder.appName("cleanup plan")
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = "local[*]"  # not under spark-submit, which sets its own master
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            # Python UDF workers: this interpreter (it has cleanup), unless told otherwise.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            if not any(k == "spark.sql.shuffle.partitions" for k, _v in pairs):
                # Spark's 200 shuffle partitions are tuned for clusters: on one machine each
                # of them is a task per stage, pure overhead.
                builder = builder.config("spark.sql.shuffle.partitions", "16")
    builder = builder.config("spark.sql.session.timeZone", "UTC").config(
        "spark.ui.showConsoleProgress", "false")  # stderr is the CLI's, for its messages
    for k, v in pairs:
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session, True


def _uri(path: str) -> str:
    """A local path as a URI, so that a cluster's default file system is not assumed."""
    return path if "://" in path else "file://" + os.path.abspath(path)


def _simple_tail_spark(expr: str) -> str:
    """Spark SQL twin of :func:`cleanup.core.paths._simple_tail_sql`."""
    return (f"({expr} <> '' AND NOT contains({expr}, '//') AND NOT contains({expr}, '/./') "
            f"AND NOT contains({expr}, '/../') AND NOT startswith({expr}, '/') "
            f"AND NOT startswith({expr}, './') AND NOT startswith({expr}, '../') "
            f"AND NOT endswith({expr}, '/') AND NOT endswith({expr}, '/.') "
            f"AND NOT endswith({expr}, '/..') AND {expr} NOT IN ('.', '..') "
            f"AND NOT contains({expr}, chr(0)))")


def spark_literal(value: str) -> str:
    """A Spark SQL string literal (backslashes are escapes in Spark's default dialect)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def spark_fast_key_select(store: StoreRef, encoding: str = "literal") -> tuple[str, str]:
    """Spark SQL twin of :func:`cleanup.core.paths.fast_key_select`: the expressions for
    ``t`` (the tail after an exact root spelling, or a key without ``:``) over column
    ``key``, and for ``fk`` over ``t``. ``substr`` counts code points in both engines."""
    whens = " ".join(
        f"WHEN startswith(key, {spark_literal(p)}) THEN substr(key, {len(p) + 1})"
        for p in fast_prefixes(store))
    extra = " AND NOT contains(t, '%')" if encoding == "uri" else ""
    t = f"CASE {whens} WHEN NOT contains(key, ':') THEN key END"
    fk = f"CASE WHEN t IS NOT NULL AND {_simple_tail_spark('t')}{extra} THEN t END"
    return t, fk


def ancestors_spark(column: str) -> str:
    """Spark SQL twin of :func:`cleanup.refs.ancestors_sql`: ``a/b/c`` -> ['', 'a/', 'a/b/']."""
    parts = f"split({column}, '/', -1)"
    return (f"concat(array(''), CASE WHEN size({parts}) > 1 THEN "
            f"transform(sequence(1, size({parts}) - 1), "
            f"i -> concat(array_join(slice({parts}, 1, i), '/'), '/')) "
            f"ELSE CAST(array() AS array<string>) END)")


def _url_decode(s: str) -> str | None:
    """DuckDB's ``try(url_decode(s))``: %XX decoded, malformed escapes kept, NULL when
    the bytes are not UTF-8."""
    from urllib.parse import unquote

    try:
        return unquote(s, errors="strict")
    except UnicodeDecodeError:
        return None


def fold_forms(key: str) -> list[str]:
    """Python twin of :func:`cleanup.core.paths.fold_sql` (NFC of the key, of its
    percent-decoded and of its ``+``-decoded form), for the inventory side of the
    near-miss join."""
    import unicodedata

    out: list[str] = []
    for form in (key, _url_decode(key), _url_decode(key.replace("+", " "))):
        nfc = unicodedata.normalize("NFC", key if form is None else form)
        if nfc not in out:
            out.append(nfc)
    return out


class SparkEngine(Engine):
    """:class:`cleanup.engine.Engine` with :meth:`compute` on Spark (see the module
    docstring); the candidate checks and the manifest writer are inherited."""

    def __init__(self, inp: EngineInput) -> None:
        self.spark, self._created = spark_session(inp.spark_master, inp.spark_conf)
        super().__init__(inp)
        self._persisted: list[DataFrame] = []
        self._tag = "cleanup_" + uuid.uuid4().hex[:12]
        self._cand: DataFrame | None = None
        self._per_tenant: dict[str, tuple[int, int]] = {}  # tenant: (candidates, bytes)
        self._types: dict[str, str] = {}  # the DuckDB engine's column types (_candidate_view)

    def close(self) -> None:
        for df in self._persisted:
            df.unpersist()
        if self._created:
            self.spark.stop()
        super().close()

    # ------------------------------------------------------------------ helpers

    def _keep(self, df: DataFrame) -> DataFrame:
        from pyspark import StorageLevel

        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(df)
        return df

    def _frame(self, rows: dict[str, list[Any]], schema: str) -> DataFrame:
        """A small driver-side table as a DataFrame (through Arrow)."""
        import pyarrow as pa

        if not next(iter(rows.values())):
            return self.spark.createDataFrame([], schema)
        return self.spark.createDataFrame(
            pa.table({k: pa.array(v, pa.string()) for k, v in rows.items()}))

    @staticmethod
    def _first(df: DataFrame) -> tuple[Any, ...]:
        row = df.first()
        if row is None:
            raise RuntimeError("aggregate query returned no row")
        return tuple(row)

    def _read(self, path: str, kind: str) -> DataFrame:
        files = input_files(path, kind)
        return self.spark.read.parquet(*[_uri(f) for f in files])

    # ------------------------------------------------------------------ compute

    def compute(self) -> EngineResult:
        import importlib

        sql = import_pyspark()
        py4j_error: type[BaseException] = importlib.import_module("py4j.protocol").Py4JError
        errors: tuple[type[BaseException], ...] = (py4j_error,)
        try:
            from pyspark.errors import PySparkException

            errors += (PySparkException,)
        except ImportError:  # pragma: no cover - pyspark < 3.4
            pass
        res = EngineResult()
        try:
            self._compute(res, sql)
        except errors as exc:
            text = str(exc).strip()
            ours = [ln for ln in text.splitlines() if _EXECUTOR_ERROR in ln]
            first = (ours or text.splitlines() or [type(exc).__name__])[0]
            first = first[first.find(_EXECUTOR_ERROR):] if ours else first
            raise UsageError(f"planning on Spark failed: {first[:500]}", hint=self.failure_hint(
                text, "check that the inputs were made by `cleanup inventory` and `cleanup "
                      "snapshot` and that Spark can read them")) from None
        return res

    def _compute(self, res: EngineResult, sql: Any) -> None:
        f = sql.functions
        inp = self.inp
        raw = self._read(inp.inventory, "inventory")
        has_raw = "key_raw" in raw.columns
        inv_all = raw.where("key IS NOT NULL")
        # The reserved prefix, and a nested store's own (a layer inside this one).
        in_scope = (f"NOT startswith(key, {spark_literal(RESERVED_PREFIX)}) "
                    f"AND instr(key, {spark_literal('/' + RESERVED_PREFIX)}) = 0")
        if has_raw:
            in_scope += " AND key_raw IS NULL"
        inv = inv_all.where(in_scope).select("key", "size", "last_modified", "etag")

        refkeys, folders = self._spark_resolve(res)

        # One FULL OUTER JOIN: unmatched inventory rows (candidates if old enough) and
        # unmatched references (missing from the inventory, I4).
        unmatched = self._keep(
            inv.select(f.col("key").alias("ikey"), "size", "last_modified", "etag")
            .join(refkeys.select(f.col("key").alias("rkey")), f.col("ikey") == f.col("rkey"),
                  "full_outer")
            .where("ikey IS NULL OR rkey IS NULL"))
        latest_us = (inp.cutoff - inp.precision - _EPOCH) // timedelta(microseconds=1)
        cand0 = self._keep(unmatched.where(
            f"rkey IS NULL AND unix_micros(last_modified) <= {latest_us}").select(
            f.col("ikey").alias("key"), "size", "last_modified", "etag"))
        missing = self._keep(unmatched.where("ikey IS NULL").select(
            f.col("rkey").alias("key")).distinct())

        if inp.exclude:  # keys that are never candidates (retirement: no verified copy)
            cand0 = self._keep(cand0.join(
                self.spark.read.parquet(_uri(inp.exclude)).select("key"), "key", "left_anti"))
        n_missing = missing.count()
        cand = cand0
        if res.folder_refs or n_missing:
            cand, missing, n_missing = self._spark_protect(res, cand0, folders, missing)
        cand = self._spark_table_metadata(res, cand, inv)
        self._spark_missing(res, missing, n_missing, inv)
        self._spark_totals(res, inv_all, in_scope, has_raw)
        self._cand = self._keep(self._with_tenant(cand))
        self._spark_candidates(res, self._cand)
        self._spark_sentinels(res, refkeys, folders, inv, self._cand)
        self._candidate_view("cand", self._write_parts(self._cand, "candidates"), stage=False)

    def _spark_resolve(self, res: EngineResult) -> tuple[DataFrame, DataFrame]:
        """References to (keys, folders), as :func:`cleanup.refs.load_refs` does: the fast
        path in Spark SQL, every other spelling through :func:`resolve_ref` in the driver."""
        inp = self.inp
        snap = self._read(inp.snapshot, "snapshot").select("key")
        if inp.ref_base is None:
            t, fk = spark_fast_key_select(inp.store, inp.ref_encoding)
            refs = snap.selectExpr("key AS ref", f"{t} AS t").selectExpr("ref", f"{fk} AS fk")
        else:
            refs = snap.selectExpr("key AS ref", "CAST(NULL AS string) AS fk")
        total, fast_n, nulls, complex_n = self._first(refs.selectExpr(
            "count(*)", "count(fk)", "count(*) - count(ref)",
            "count_if(fk IS NULL AND ref IS NOT NULL)"))
        res.snapshot_rows, keys_n, folders_n = int(total), int(fast_n), 0
        unresolvable, unresolvable_ex = int(nulls), []
        if nulls:
            unresolvable_ex.append(f"{nulls} NULL reference(s)")
        foreign = acknowledged = 0
        where: dict[str, int] = {}
        foreign_ex: list[str] = []
        keys: list[str] = []
        classes: list[str] = []
        slow = (refs.where("fk IS NULL AND ref IS NOT NULL").select("ref").toLocalIterator()
                if complex_n else iter(()))  # no second scan when the fast path answered all
        for row in slow:
            ref = row[0]
            r = resolve_ref(ref, inp.store, base=inp.ref_base, encoding=inp.ref_encoding)
            if r.cls in ("key", "folder"):
                keys.append(r.key or "")
                classes.append(r.cls)
                if r.cls == "key":
                    keys_n += 1
                else:
                    folders_n += 1
            elif r.cls == "foreign":
                if any(resolve_ref(ref, ok, encoding=inp.ref_encoding).cls in ("key", "folder")
                       for ok in inp.foreign_ok):
                    acknowledged += 1
                    continue
                foreign += 1
                where[r.where] = where.get(r.where, 0) + 1
                if len(foreign_ex) < EXAMPLES:
                    foreign_ex.append(ref)
            else:
                unresolvable += 1
                if len(unresolvable_ex) < EXAMPLES:
                    unresolvable_ex.append(f"{ref!r} ({r.reason})")
        resolved = self._keep(self._frame({"key": keys, "cls": classes}, _REF_SCHEMA))
        res.in_scope_refs = keys_n + folders_n
        res.out_of_scope_refs = foreign + acknowledged
        res.folder_refs = folders_n
        res.foreign_refs, res.foreign_acknowledged = foreign, acknowledged
        top = sorted(where.items(), key=lambda kv: -kv[1])[:10]  # as Counter.most_common
        res.foreign_where = dict(top)
        res.foreign_examples = foreign_ex
        res.unresolvable_refs = unresolvable
        res.unresolvable_examples = unresolvable_ex
        refkeys = refs.where("fk IS NOT NULL").selectExpr("fk AS key").unionAll(
            resolved.where("cls = 'key'").select("key"))
        folders = resolved.where("cls = 'folder'").select("key")
        return refkeys, folders

    def _spark_protect(self, res: EngineResult, cand0: DataFrame, folders: DataFrame,
                       missing: DataFrame) -> tuple[DataFrame, DataFrame, int]:
        """As :meth:`Engine._protect`: candidates under a referenced folder, or under a
        missing reference that names a folder of theirs, are not candidates. Returns the
        candidates, the missing references left and their number."""
        from pyspark.sql import functions as f

        pdirs = folders.unionAll(missing.selectExpr("concat(key, '/') AS key")
                                 ).withColumnRenamed("key", "pkey")
        protected = self._keep(
            cand0.selectExpr("key", f"explode({ancestors_spark('key')}) AS anc")
            .join(pdirs, f.col("anc") == f.col("pkey"), "left_semi").distinct())
        ancs = protected.select("anc").distinct()
        implicit = ancs.join(missing.withColumnRenamed("key", "mkey"),
                             f.expr("trim(TRAILING '/' FROM anc)") == f.col("mkey"),
                             "left_semi").selectExpr("count(*) AS implicit")
        n, implicit_n = self._first(
            protected.selectExpr("count(DISTINCT key) AS n").crossJoin(implicit))
        res.protected_by_folder, res.implicit_folder_refs = int(n), int(implicit_n)
        cand = cand0.join(protected.select("key").distinct(), "key", "left_anti")
        missing = self._keep(missing.join(
            ancs, f.concat(f.col("key"), f.lit("/")) == f.col("anc"), "left_anti"))
        return cand, missing, missing.count()

    def _spark_missing(self, res: EngineResult, missing: DataFrame, n: int,
                       inv: DataFrame) -> None:
        res.missing_refs = int(n)
        if n:
            # One job (a top-N), not one per partition as toLocalIterator would run.
            keys = [r[0] for r in missing.orderBy("key").limit(_NEAR_MISS_MAX).collect()]
            res.missing_examples = keys[:EXAMPLES]
            res.near_misses, res.near_miss_examples = self._near_misses(keys, inv)

    def _near_misses(self, missing: list[str], inv: DataFrame,
                     limit: int = 20) -> tuple[int, list[tuple[str, str]]]:
        """As :func:`cleanup.refs.near_miss_pairs`: the reference side's forms from
        :func:`near_miss_forms` (driver), the inventory side folded in Spark."""
        from pyspark.sql import functions as f
        from pyspark.sql import types as st

        refs: list[str] = []
        forms: list[str] = []
        for m in missing:
            for form in {m} | near_miss_forms(m):
                refs.append(m)
                forms.append(form)
        if not refs:
            return 0, []
        nm = self._frame({"ref": refs, "f": forms}, "ref string, f string")
        def fold_on_executor(key: str) -> list[str]:
            # A closure, so that cloudpickle ships its code by value: executors need only
            # Python's standard library, not cleanup (same code as fold_forms).
            import unicodedata
            from urllib.parse import unquote

            def decode(s: str) -> str | None:
                try:
                    return unquote(s, errors="strict")
                except UnicodeDecodeError:
                    return None

            out: list[str] = []
            for form in (key, decode(key), decode(key.replace("+", " "))):
                nfc = unicodedata.normalize("NFC", key if form is None else form)
                if nfc not in out:
                    out.append(nfc)
            return out

        fold = f.udf(fold_on_executor, st.ArrayType(st.StringType()), useArrow=False)
        needs = ("contains(key, '%') OR contains(key, '+') "
                 "OR octet_length(key) <> char_length(key)")
        inv_forms = inv.selectExpr("key", "key AS f").unionAll(
            inv.where(needs).select("key", f.explode(fold("key")).alias("f")))
        near = self._keep(inv_forms.join(nm.withColumnRenamed("f", "nf"),
                                         f.col("f") == f.col("nf"))
                          .where("key <> ref").select("ref", "key").distinct())
        count = near.select("ref").distinct().count()
        pairs = near.orderBy("ref", "key").limit(int(limit)).collect()
        return int(count), [(str(r), str(k)) for r, k in pairs]

    def _spark_totals(self, res: EngineResult, inv_all: DataFrame, in_scope: str,
                      has_raw: bool) -> None:
        """Scope totals and undecodable names in one pass over the inventory."""
        so, sb, newest, undecodable = self._first(inv_all.selectExpr(
            f"count_if({in_scope})", f"coalesce(sum(CASE WHEN {in_scope} THEN size END), 0)",
            f"max(CASE WHEN {in_scope} THEN unix_micros(last_modified) END)",
            "count_if(key_raw IS NOT NULL)" if has_raw else "0"))
        res.scope_objects, res.scope_bytes = int(so), int(sb)
        res.newest_in_scope = _utc(newest)
        res.undecodable_names = int(undecodable)

    def _spark_sentinels(self, res: EngineResult, refkeys: DataFrame, folders: DataFrame,
                         inv: DataFrame, cand: DataFrame) -> None:
        sents = list(self.inp.sentinels)
        if not sents:
            return
        from pyspark.sql import functions as f

        tagged = [df.where(f.col("key").isin(sents)).select("key", f.lit(tag).alias("tag"))
                  for df, tag in ((refkeys, "s"), (inv, "i"), (cand, "c"))]
        if res.folder_refs:  # a sentinel under a referenced folder is referenced
            pairs = [(s, a) for s in sents for a in ancestors(s)]
            anc = self._frame({"key": [p[0] for p in pairs], "anc": [p[1] for p in pairs]},
                              "key string, anc string")
            tagged.append(anc.join(folders.withColumnRenamed("key", "fkey"),
                                   f.col("anc") == f.col("fkey"), "left_semi")
                          .select("key", f.lit("s").alias("tag")))
        union = tagged[0]
        for df in tagged[1:]:
            union = union.unionAll(df)
        targets = {"s": res.sentinels_in_snapshot, "i": res.sentinels_in_inventory,
                   "c": res.sentinels_in_candidates}
        for key, tag in union.distinct().collect():
            targets[tag].add(key)

    def _spark_table_metadata(self, res: EngineResult, cand: DataFrame,
                              inv: DataFrame) -> DataFrame:
        """I20 as :meth:`Engine._table_metadata`, in Spark: candidates that are table
        metadata or hidden under a declared root are kept (returns the candidates left),
        each declared table's numbers, and the in-scope keys that may name a table root
        (written for the driver's DuckDB, which counts the roots no source covers with the
        DuckDB engine's own query: a filtered scan, distributed)."""
        from pyspark.sql import functions as f

        roots = self._declared_roots()
        res.table_roots = len(roots)
        self._load_troots(roots)
        if roots:
            troots = self._frame({"prefix": [p for p, _o in roots],
                                  "inside": [o for _p, o in roots]},
                                 "prefix string, inside string")
            meta = _table_meta_spark("concat(inside, substr(key, length(anc) + 1))")
            kept = self._keep(
                cand.selectExpr("key", f"explode({ancestors_spark('key')}) AS anc")
                .join(troots, f.col("anc") == f.col("prefix")).where(meta)
                .select("key").distinct())
            n = kept.count()
            res.table_protected = int(n)
            if n:
                cand = cand.join(kept, "key", "left_anti")
            self._spark_per_table(res, inv, cand, troots, meta)
        hints = inv.where("contains(key, '_delta_log/') OR endswith(key, '.metadata.json')")
        self._candidate_view("inv_hint", self._write_parts(hints.select("key"), "table-hints"),
                             keys_only=True)
        self._found_roots(res, "inv_hint")
        return cand

    def _spark_per_table(self, res: EngineResult, inv: DataFrame, cand: DataFrame,
                         troots: DataFrame, meta: str) -> None:
        """As :meth:`Engine._per_table`."""
        from pyspark.sql import functions as f

        tkeys = self._keep(
            inv.selectExpr("key", "size", f"explode({ancestors_spark('key')}) AS anc")
            .join(troots, f.col("anc") == f.col("prefix"))
            .selectExpr("key", "size", "anc", f"{meta} AS meta"))
        c = cand.select(f.col("key").alias("ckey"), f.col("size").alias("csize"))
        agg = ("count(*)", "coalesce(sum(size), 0)", "count_if(meta)",
               "coalesce(sum(CASE WHEN meta THEN size END), 0)", "count(ckey)",
               "coalesce(sum(csize), 0)")
        rows = (tkeys.join(c, f.col("key") == f.col("ckey"), "left").groupBy("anc")
                .agg(*[f.expr(a) for a in agg]).orderBy("anc").collect())
        res.per_table = [
            {"root": str(p), "objects": int(o), "bytes": int(b), "metadata_objects": int(mo),
             "metadata_bytes": int(mb), "candidates": int(n), "candidate_bytes": int(nb)}
            for p, o, b, mo, mb, n, nb in rows]
        o, b, n, nb = self._first(
            tkeys.select("key", "size").distinct().join(c, f.col("key") == f.col("ckey"), "left")
            .selectExpr("count(*)", "coalesce(sum(size), 0)", "count(ckey)",
                        "coalesce(sum(csize), 0)"))
        res.table_objects, res.table_bytes = int(o), int(b)
        res.table_candidates, res.table_candidate_bytes = int(n), int(nb)

    def _with_tenant(self, cand: DataFrame) -> DataFrame:
        """The candidates with their tenant, extracted on the executors by DuckDB with the
        DuckDB engine's own expression (:func:`cleanup.engine.tenant_sql`): RE2, not Java's
        regex dialect, which differs (``.`` and ``\\r``, ``$`` before a final newline, named
        groups, ...), and the tenant is part of the signed manifest. Executors need DuckDB
        (cleanup's own dependency) of the driver's version; a different one is refused."""
        import duckdb
        from pyspark.sql import types as st

        want = duckdb.__version__
        expr = tenant_sql("key", self.inp)
        marker = _EXECUTOR_ERROR

        def add_tenant(batches: Iterator[Any]) -> Iterator[Any]:
            # A closure, shipped by value: executors need DuckDB and pyarrow, not cleanup.
            import pyarrow as pa

            try:
                import duckdb as executor_duckdb
            except ImportError:
                raise RuntimeError(f"{marker} executors need DuckDB {want} for tenant "
                                   f"extraction: pip install duckdb=={want}") from None
            if executor_duckdb.__version__ != want:
                raise RuntimeError(
                    f"{marker} an executor has DuckDB {executor_duckdb.__version__}, the "
                    f"driver {want}: tenants must be extracted by the same regex engine; "
                    f"pip install duckdb=={want} on the executors")
            con = executor_duckdb.connect()
            try:
                con.execute("SET threads = 1")  # a task is one core already
                for batch in batches:
                    con.register("batch", pa.Table.from_batches([batch], schema=batch.schema))
                    tenant = con.sql(f"SELECT {expr} FROM batch").to_arrow_table()
                    con.unregister("batch")
                    yield batch.append_column(
                        "tenant", tenant.column(0).combine_chunks().cast(pa.string()))
            finally:
                con.close()

        schema = st.StructType([*cand.schema.fields, st.StructField("tenant", st.StringType())])
        return cand.mapInArrow(add_tenant, schema)

    def _spark_candidates(self, res: EngineResult, cand: DataFrame) -> None:
        """The candidate totals and the sorted list of tenants (for the core's stages), from
        one job: the candidates' numbers per tenant, kept for the per-stage counts."""
        from pyspark.sql import functions as f

        rows = cand.groupBy("tenant").agg(*[f.expr(a) for a in (
            "count(*)", "coalesce(sum(size), 0)", "min(unix_micros(last_modified))",
            "max(unix_micros(last_modified))")]).orderBy("tenant").collect()
        self._per_tenant = {str(t): (int(n), int(b)) for t, n, b, _lo, _hi in rows}
        res.candidates = sum(n for n, _b in self._per_tenant.values())
        res.candidate_bytes = sum(b for _n, b in self._per_tenant.values())
        res.oldest_candidate = _utc(min((r[3] for r in rows), default=None))
        res.newest_candidate = _utc(max((r[4] for r in rows), default=None))
        res.tenants = list(self._per_tenant)

    def _write_parts(self, df: DataFrame, name: str) -> list[str]:
        """``df`` written by Spark as Parquet parts into the plan's work directory; the
        part files, in order."""
        import glob

        out = os.path.join(self.workdir, f"{self._tag}-{name}")
        self.spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        df.write.mode("overwrite").parquet(_uri(out))
        return sorted(glob.glob(os.path.join(glob.escape(out), "*.parquet")))

    def _candidate_view(self, name: str, parts: list[str], *, stage: bool = False,
                        keys_only: bool = False) -> None:
        """A view ``name`` in the driver's DuckDB over Spark's parts, with the DuckDB
        engine's column types (the inventory's, ``last_modified`` as TIMESTAMPTZ), so that
        the shared checks and the manifest writer see the same values either way."""
        if not self._types:  # the inventory's footers, read once
            inv = parquet_list_sql(input_files(self.inp.inventory, "inventory"))
            self._types = {str(r[0]): str(r[1]) for r in self.con.execute(
                f"DESCRIBE SELECT key, size, CAST(last_modified AS TIMESTAMPTZ) AS "
                f"last_modified, etag FROM read_parquet({inv})").fetchall()}
        types = self._types
        cols = [(c, types[c]) for c in (("key",) if keys_only
                                        else ("key", "size", "last_modified", "etag"))]
        if not keys_only:
            cols.append(("tenant", "VARCHAR"))
        if stage:
            cols.append(("stage", "INTEGER"))
        if parts:
            body = (f"SELECT {', '.join(f'CAST({c} AS {t}) AS {c}' for c, t in cols)} "
                    f"FROM read_parquet({parquet_list_sql(parts)})")
        else:  # Spark wrote no part: an empty view of the same types
            body = f"SELECT {', '.join(f'CAST(NULL AS {t}) AS {c}' for c, t in cols)} WHERE false"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")

    def write_manifest(self, stage_of: dict[str, int], out: str) -> list[dict[str, Any]]:
        """Stages assigned in Spark (the core's tenant-to-stage map, broadcast and joined
        to the candidates); the driver's DuckDB writes the manifest from Spark's parts
        with the DuckDB engine's statement (:meth:`Engine.copy_manifest`), so its bytes
        and the plan id do not depend on the engine."""
        import pyarrow as pa
        from pyspark.sql import functions as f

        if self._cand is None:
            raise RuntimeError("write_manifest before compute")
        stages = (self.spark.createDataFrame(pa.table({
            "tenant": pa.array(list(stage_of), pa.string()),
            "stage": pa.array(list(stage_of.values()), pa.int32())}))
            if stage_of else self.spark.createDataFrame([], "tenant string, stage int"))
        staged = (self._cand.join(f.broadcast(stages), "tenant").select(
            "key", "size", "last_modified", "etag", "tenant", "stage"))
        self._candidate_view("staged", self._write_parts(staged, "manifest"), stage=True)
        self.copy_manifest("SELECT key, size, last_modified, etag, tenant, stage FROM staged",
                           out)
        per: dict[int, list[int]] = {}
        for tenant, (n, b) in self._per_tenant.items():  # the candidates' numbers per tenant
            if tenant in stage_of:
                acc = per.setdefault(stage_of[tenant], [0, 0, 0])
                acc[0], acc[1], acc[2] = acc[0] + n, acc[1] + b, acc[2] + 1
        # The counts the plan records and the rows the manifest holds must agree (they come
        # from two evaluations of the persisted candidates).
        (written,) = self._one("SELECT count(*) FROM staged")
        if written != sum(n for n, _b, _t in per.values()):
            raise RuntimeError(f"Spark staged {written} rows, its aggregate counted "
                               f"{sum(n for n, _b, _t in per.values())}")
        return [{"stage": s, "objects": n, "bytes": b, "tenants": t}
                for s, (n, b, t) in sorted(per.items())]


def _table_meta_spark(rest: str) -> str:
    """Spark twin of :func:`cleanup.engine._table_meta_sql`, without a regex: RE2's
    ``(^|/)[_.]`` is "starts with ``_`` or ``.``, or holds ``/_`` or ``/.``" (and
    ``_delta_log/`` starts with ``_``)."""
    return (f"(startswith({rest}, 'metadata/') OR startswith({rest}, '_') "
            f"OR startswith({rest}, '.') OR contains({rest}, '/_') OR contains({rest}, '/.'))")


_EXECUTOR_ERROR = "cleanup-executor:"

__all__ = ["SPARK_EXTRA", "SparkEngine", "fold_forms", "import_pyspark", "spark_session"]
