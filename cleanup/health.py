"""The health gate (I10): before stage k, after stage k-1's hold.

(a) A read probe: a deterministic sample of the live referenced keys (policy
``probe_sample``), plus every referenced key that shares a directory with the
previous stage's removals (up to ``PREFIX_BOUND``), must exist in the store,
with the size the plan's inventory recorded where it has one. A missing
referenced file means the previous stage removed something production needed.
(b) Each ``--health-check`` command (e.g. a query error-rate check) must exit 0
within its timeout.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import TYPE_CHECKING

from cleanup.core.invariants import Check
from cleanup.core.names import I10
from cleanup.core.paths import sql_literal

if TYPE_CHECKING:
    from cleanup.bundle import PlanBundle
    from cleanup.reconcile import Reconciler
    from cleanup.stores.base import Store

PREFIX_BOUND = 10_000


def probe_keys(rec: Reconciler, bundle: PlanBundle, prev_stage: int, sample: int) -> list[str]:
    manifest = bundle.manifest_sql()
    con = rec.con
    # Folder references (ending in '/', e.g. a Delta table's `_delta_log/`) name no object
    # of their own: they protect what is under them, and are not probed as files.
    sampled = [r[0] for r in con.execute(
        "SELECT key FROM live WHERE NOT suffix(key, '/') "
        f"ORDER BY md5(key), key LIMIT {int(sample)}").fetchall()]
    near = [r[0] for r in con.execute(
        "SELECT l.key FROM live l SEMI JOIN (SELECT DISTINCT regexp_extract(key, '^(.*/)', 1) "
        f"AS p FROM {manifest} WHERE stage = {int(prev_stage)}) d "
        "ON regexp_extract(l.key, '^(.*/)', 1) = d.p WHERE NOT suffix(l.key, '/') "
        f"ORDER BY md5(l.key), l.key LIMIT {PREFIX_BOUND}").fetchall()]
    return sorted(set(sampled) | set(near))


def read_probe(store: Store, rec: Reconciler, bundle: PlanBundle, prev_stage: int,
               sample: int) -> Check:
    import duckdb
    import pyarrow as pa

    keys = probe_keys(rec, bundle, prev_stage, sample)
    found: dict[str, int] = {}
    for i in range(0, len(keys), 1000):
        found.update({k: o.size for k, o in store.current(keys[i:i + 1000]).items()})
    missing = [k for k in keys if k not in found]
    recorded: dict[str, int] = {}
    inv = bundle.plan.inputs.inventory.path
    if inv and os.path.isfile(inv) and keys:
        con = duckdb.connect()
        con.register("probe", pa.table({"key": keys}))
        recorded = dict(con.execute(
            f"SELECT i.key, i.size FROM read_parquet({sql_literal(inv)}) i "
            "SEMI JOIN probe p ON i.key = p.key").fetchall())
        con.close()
    resized = [k for k, size in recorded.items() if k in found and found[k] != size]
    facts = {"probed": len(keys), "missing": missing[:20], "size_changed": resized[:20]}
    if missing:
        return Check(I10, False, f"read probe: {len(missing)} of {len(keys)} referenced keys are "
                                 f"missing from the store, e.g. {missing[0]!r}", facts,
                     hint="restore the previous stage (`cleanup restore PLAN --stage N`) and "
                          "investigate before going wider")
    if resized:
        return Check(I10, False, f"read probe: {len(resized)} referenced keys changed size since "
                                 f"the inventory, e.g. {resized[0]!r}", facts)
    return Check(I10, True, f"read probe: {len(keys)} referenced keys present", facts)


def run_health_checks(commands: list[str], timeout: float) -> Check:
    results = []
    for cmd in commands:
        try:
            p = subprocess.run(shlex.split(cmd), capture_output=True, text=True,
                               timeout=timeout, check=False, stdin=subprocess.DEVNULL)
            ok, detail = p.returncode == 0, f"exit {p.returncode}"
            tail = (p.stderr or p.stdout).strip().splitlines()
            if not ok and tail:
                detail += f": {tail[-1][:200]}"
        except subprocess.TimeoutExpired:
            ok, detail = False, f"timed out after {timeout:g}s"
        except OSError as exc:
            ok, detail = False, f"could not run: {exc}"
        results.append({"command": cmd, "ok": ok, "detail": detail})
        if not ok:
            return Check(I10, False, f"health check {cmd!r} failed ({detail})",
                         {"checks": results}, hint="fix the service's health, then retry")
    return Check(I10, True, f"{len(commands)} health check(s) passed", {"checks": results})
