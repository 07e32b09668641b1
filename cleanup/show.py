"""``cleanup show``: a plan's summary, for humans (rich tables) and scripts (JSON)."""

from __future__ import annotations

import json
import os
from typing import Any

from cleanup.core.canonical import sha256_file, sha256_hex
from cleanup.core.paths import sql_literal
from cleanup.errors import UsageError


def load_plan(plan_dir: str) -> tuple[dict[str, Any], str]:
    """Read ``plan.json``; return (plan, plan_id)."""
    path = os.path.join(plan_dir, "plan.json")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{plan_dir} is not a plan directory (no plan.json)",
                         hint="make one with `cleanup plan ... -o PLAN_DIR`") from None
    try:
        plan = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(plan, dict):
        raise UsageError(f"{path} is not a plan")
    return plan, sha256_hex(raw)


def summarize(plan_dir: str, top: int = 10) -> dict[str, Any]:
    """Everything ``show`` prints, as plain data."""
    import duckdb

    plan, plan_id = load_plan(plan_dir)
    manifest = os.path.join(plan_dir, "manifest.parquet")
    recorded = plan.get("manifest", {}).get("sha256")
    actual = sha256_file(manifest) if os.path.exists(manifest) else None
    if actual != recorded:
        actual = None  # never aggregate a manifest that is not the one planned
    con = duckdb.connect()
    try:
        m = f"read_parquet({sql_literal(manifest)})"
        tenants = [
            {"tenant": t, "stage": int(s), "objects": int(n), "bytes": int(b)}
            for t, s, n, b in con.execute(
                f"SELECT tenant, stage, count(*), sum(size) FROM {m} GROUP BY ALL "
                f"ORDER BY sum(size) DESC, tenant LIMIT {int(top)}").fetchall()
        ] if actual else []
        prefixes = [
            {"prefix": p, "objects": int(n), "bytes": int(b)}
            for p, n, b in con.execute(
                f"SELECT regexp_extract(key, '^((?:[^/]*/){{0,2}})', 1) AS p, count(*), sum(size) "
                f"FROM {m} GROUP BY p ORDER BY sum(size) DESC, p LIMIT {int(top)}").fetchall()
        ] if actual else []
    finally:
        con.close()
    return {
        "plan_dir": os.path.abspath(plan_dir),
        "plan_id": plan_id,
        "manifest_intact": actual is not None,
        "author_signed": os.path.exists(os.path.join(plan_dir, "signatures", "author.sig")),
        "plan": plan,
        "top_tenants": tenants,
        "top_prefixes": prefixes,
    }


def human_bytes(n: int | float) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(x) < 1024 or unit == "PiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} PiB"


def _references_line(refs: dict[str, Any]) -> str:
    """How the snapshot's references resolved against the store (I4), in words."""
    parts = [f"{refs.get('in_scope', 0)} in the store ({refs.get('encoding', 'literal')} "
             f"spelling)", f"{refs.get('missing', 0)} missing"]
    if refs.get("folders"):
        parts.append(f"{refs['folders']} folder(s) protecting "
                     f"{refs.get('protected_by_folder', 0)} object(s)")
    foreign = int(refs.get("foreign", 0)) + int(refs.get("foreign_acknowledged", 0))
    if foreign:
        parts.append(f"{foreign} outside the store"
                     + (f" (accepted: {', '.join(refs.get('foreign_ok', []))})"
                        if refs.get("foreign_ok") else ""))
    if refs.get("near_misses"):
        parts.append(f"{refs['near_misses']} near-miss(es) accepted")
    if refs.get("undecodable_names"):
        parts.append(f"{refs['undecodable_names']} listed name(s) not UTF-8, never candidates")
    return "; ".join(parts)


def render(summary: dict[str, Any]) -> None:
    """Print ``summary`` with rich (imported here: only ``show`` pays for it)."""
    from rich.console import Console
    from rich.table import Table

    c = Console()
    p = summary["plan"]
    if p.get("overrides"):
        c.print("[bold red]POLICY OVERRIDES[/]")
        for o in p["overrides"]:
            c.print(f"  [red]- {o}[/]")
    if p.get("inputs", {}).get("inventory", {}).get("time_source") == "mtime":
        c.print("[bold red]The inventory trusted mtime alone (--trust-mtime).[/]")
    if p.get("quarantine") == "none":
        c.print("[bold red]quarantine = none: deleted files are NOT recoverable.[/]")
    c.print(f"[bold]plan[/] {summary['plan_id']}  ({summary['plan_dir']})")
    ok = summary["manifest_intact"]
    c.print(f"manifest sha256 {'matches' if ok else '[red]DOES NOT MATCH[/]'} plan.json; "
            f"author signature {'present' if summary['author_signed'] else '[red]missing[/]'}")
    inputs = p["inputs"]
    t = Table(title="inputs", show_lines=False)
    for col in ("what", "value"):
        t.add_column(col)
    t.add_row("store", f"{p['store']} (region {p['region']})")
    t.add_row("inventory", f"{inputs['inventory']['source']}: {inputs['inventory']['rows']} "
                           f"objects, listed_at {inputs['inventory']['listed_at']['time']}, "
                           f"precision {inputs['inventory']['precision']}")
    snap = inputs["snapshot"]
    t.add_row("snapshot", f"{snap['source']}: {snap['rows']} references, taken_at "
                          f"{snap['taken_at']['time']} ({snap['taken_at']['clock']})")
    refs = p.get("references", {})
    if refs:
        t.add_row("references", _references_line(refs))
    t.add_row("cutoff", f"{p['cutoff']['time']} = taken_at - buffer {p['buffer']}")
    t.add_row("quarantine / hold", f"{p['quarantine']} / {p['hold']}")
    t.add_row("author", f"{p['author']} at {p['created_at']['time']}")
    c.print(t)
    t = Table(title="invariants")
    for col in ("invariant", "ok", "detail"):
        t.add_column(col)
    for chk in p["invariants"]:
        t.add_row(chk["invariant"], "[green]yes[/]" if chk["ok"] else "[red]NO[/]", chk["detail"])
    c.print(t)
    t = Table(title="stages")
    for col in ("stage", "selector", "tenants", "objects", "bytes"):
        t.add_column(col, justify="right" if col in ("tenants", "objects", "bytes") else "left")
    for s in p["stages"]:
        t.add_row(str(s["stage"]), s["selector"], str(s["tenants"]), str(s["objects"]),
                  human_bytes(s["bytes"]))
    t.add_row("all", "", "", str(p["manifest"]["objects"]), human_bytes(p["manifest"]["bytes"]))
    c.print(t)
    for title, rows, keycol in (("largest tenants", summary["top_tenants"], "tenant"),
                                ("largest prefixes", summary["top_prefixes"], "prefix")):
        if not rows:
            continue
        t = Table(title=title)
        for col in (keycol, "objects", "bytes"):
            t.add_column(col, justify="left" if col == keycol else "right")
        for r in rows:
            label = r[keycol] or "(none)"
            if keycol == "tenant":
                label = f"{label} (stage {r['stage']})"
            t.add_row(label, str(r["objects"]), human_bytes(r["bytes"]))
        c.print(t)
