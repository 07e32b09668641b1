"""``cleanup show``: a plan's summary as plain data (the CLI renders it as text or JSON)."""

from __future__ import annotations

import os
from typing import Any

from cleanup.bundle import PlanBundle


def summarize(plan_dir: str, top: int = 10) -> dict[str, Any]:
    """Everything ``show`` prints, as plain data."""
    with PlanBundle.open(plan_dir) as bundle:
        return summarize_bundle(bundle, top)


def summarize_bundle(bundle: PlanBundle, top: int = 10) -> dict[str, Any]:
    """:func:`summarize` of an opened bundle."""
    import duckdb

    intact = bundle.manifest_intact  # never aggregate a manifest that is not the one planned
    tenants: list[dict[str, Any]] = []
    prefixes: list[dict[str, Any]] = []
    if intact:
        m = bundle.manifest_sql()
        con = duckdb.connect()
        try:
            tenants = [
                {"tenant": t, "stage": int(s), "objects": int(n), "bytes": int(b)}
                for t, s, n, b in con.execute(
                    f"SELECT tenant, stage, count(*), sum(size) FROM {m} GROUP BY ALL "
                    f"ORDER BY sum(size) DESC, tenant LIMIT {int(top)}").fetchall()
            ]
            prefixes = [
                {"prefix": p, "objects": int(n), "bytes": int(b)}
                for p, n, b in con.execute(
                    f"SELECT regexp_extract(key, '^((?:[^/]*/){{0,2}})', 1) AS p, count(*), "
                    f"sum(size) FROM {m} GROUP BY p ORDER BY sum(size) DESC, p "
                    f"LIMIT {int(top)}").fetchall()
            ]
        finally:
            con.close()
    return {
        "plan_dir": os.path.abspath(bundle.root),
        "plan_id": bundle.plan_id,
        "manifest_intact": intact,
        "author_signed": os.path.exists(bundle.author_sig),
        "plan": bundle.plan.to_json(),
        "top_tenants": tenants,
        "top_prefixes": prefixes,
        "tables": table_rows(bundle.plan.to_json(), top)[0],
    }


def table_rows(plan: dict[str, Any], limit: int = 20) -> tuple[list[dict[str, Any]], int]:
    """The plan's table roots (plan.json ``tables``) with each one's share of its data
    files and bytes (what I5 per table checks), the largest share first; at most
    ``limit`` rows, and how many tables there are."""
    rows = []
    for t in plan.get("tables", []):
        data_o = t["objects"] - t["metadata_objects"]
        data_b = t["bytes"] - t["metadata_bytes"]
        rows.append({**t, "data_objects": data_o, "data_bytes": data_b,
                     "object_fraction": t["candidates"] / data_o if data_o else 0.0,
                     "byte_fraction": t["candidate_bytes"] / data_b if data_b else 0.0})
    rows.sort(key=lambda r: (-max(r["object_fraction"], r["byte_fraction"]), r["root"]))
    return rows[:limit], len(rows)


def human_bytes(n: int | float) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(x) < 1024 or unit == "PiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} PiB"
