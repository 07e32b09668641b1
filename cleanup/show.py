"""``cleanup show``: a plan's summary as plain data (the CLI renders it as text or JSON)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cleanup.bundle import PlanBundle

if TYPE_CHECKING:
    from cleanup.model import Plan


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
        **copies_summary(bundle.plan),
    }


def copies_summary(plan: Plan) -> dict[str, Any]:
    """A plan's copy verification (cleanup.retire) for show and review: the regions in
    words and how many candidates have a verified copy; {} for plans without."""
    if plan.copies is None:
        return {}
    from cleanup.retire import describe

    c = plan.copies
    return {"copies": {"mode": c.mode, "text": describe(c, plan.store, plan.region),
                       "checksum": "content" if c.verify_content else c.checksum,
                       "target": c.target, "target_region": c.target_region,
                       "source_region": plan.region, "verified": c.verified,
                       "verified_bytes": c.verified_bytes, "candidates": plan.manifest.objects,
                       "blocking": c.blocking, "blocking_reasons": dict(c.blocking_reasons),
                       "blocking_examples": [list(e) for e in c.blocking_examples],
                       "methods": dict(c.methods),
                       "allowed_regions": {k: list(v) for k, v in c.allowed_regions.items()}}}


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


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(summary: dict[str, Any]) -> str:
    """:func:`summarize`'s result as Markdown for a pull-request comment or a ticket:
    policy overrides and risks first, then invariants, stages, tenants and regions."""
    p = summary["plan"]
    m = p["manifest"]
    lines = [f"## cleanup plan `{summary['plan_id'][:16]}`", "",
             f"**{m['objects']} objects ({human_bytes(m['bytes'])})** to remove from "
             f"`{p['store']}` (region `{p['region']}`), cutoff `{p['cutoff']['time']}` "
             f"(taken_at - buffer {p['buffer']}), author `{p['author']}`.", ""]
    risks = [f"policy override: {o}" for o in p.get("overrides", [])]
    if p.get("quarantine") == "none":
        risks.append("quarantine = none: removed files are NOT recoverable")
    if p.get("inputs", {}).get("inventory", {}).get("time_source") == "mtime":
        risks.append("the inventory trusted mtime alone (--trust-mtime)")
    if not summary.get("manifest_intact", True):
        risks.append("the manifest DOES NOT MATCH plan.json")
    if not summary.get("author_signed", True):
        risks.append("the author signature is missing")
    if not p.get("trust"):
        risks.append("no trust root pinned when planned: this plan cannot be executed (I17)")
    if not p.get("reconcile"):
        risks.append("no reconciliation source: this plan cannot be executed (I19)")
    failed = [c for c in p.get("invariants", []) if not c.get("ok")]
    risks += [f"invariant {c['invariant']} FAILED: {c['detail']}" for c in failed]
    lines.append("### Overrides and risks")
    lines += [f"- :warning: {_md_cell(r)}" for r in risks] or ["- none"]
    lines += ["", "### Invariants", "", "| invariant | ok | detail |", "|---|---|---|"]
    lines += [f"| {_md_cell(c['invariant'])} | {'yes' if c['ok'] else '**NO**'} | "
              f"{_md_cell(c['detail'])} |" for c in p.get("invariants", [])]
    lines += ["", f"### Stages (hold {p.get('hold')}, quarantine {p.get('quarantine')})", "",
              "| stage | selector | tenants | objects | bytes |", "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {_md_cell(s['selector'])} | {s['tenants']} | {s['objects']} "
              f"| {human_bytes(s['bytes'])} |" for s in p.get("stages", [])]
    lines += [f"| all | | | {m['objects']} | {human_bytes(m['bytes'])} |"]
    if summary.get("top_tenants"):
        lines += ["", "### Largest tenants", "", "| tenant | stage | objects | bytes |",
                  "|---|---|---|---|"]
        lines += [f"| {_md_cell(t['tenant'] or '(none)')} | {t['stage']} | {t['objects']} | "
                  f"{human_bytes(t['bytes'])} |" for t in summary["top_tenants"]]
    lines += ["", "### Regions", "", f"- store `{p['store']}`: region `{p['region']}`; plans, "
              "quarantine and copies never leave it (I13)"]
    lines += ["", f"plan id `{summary['plan_id']}`: review with `cleanup show`, approve with "
              "`cleanup approve PLAN_DIR --signer NAME --key KEY`.", ""]
    return "\n".join(lines)
