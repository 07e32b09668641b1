"""``cleanup review``: one self-contained HTML page for the reviewer.

No network, no CDN: inline CSS and SVG. Everything is aggregated in DuckDB
over the manifest (counts, bytes, a histogram, top-N tables, a deterministic
sample), so a plan with 10M candidates renders in seconds and the page never
embeds every key.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from typing import Any

from cleanup.bundle import PlanBundle
from cleanup.core.names import I6
from cleanup.core.timeutil import format_duration, format_time
from cleanup.show import human_bytes, summarize_bundle

SAMPLE = 25
BINS = 40


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _aggregates(bundle: PlanBundle, cutoff: datetime, oldest: datetime | None) -> dict[str, Any]:
    import duckdb

    m = bundle.manifest_sql()
    con = duckdb.connect()
    try:
        lo = oldest or cutoff
        span_us = max(int((cutoff - lo).total_seconds() * 1e6), 1)
        lo_us = int(lo.timestamp() * 1e6)
        hist = con.execute(
            f"SELECT least({BINS - 1}, (epoch_us(last_modified) - {lo_us}) * {BINS} // "
            f"{span_us}) AS b, count(*), sum(size) FROM {m} GROUP BY b ORDER BY b").fetchall()
        sample = con.execute(
            f"SELECT key, size, strftime(last_modified, '%Y-%m-%dT%H:%M:%SZ'), tenant, stage "
            f"FROM {m} ORDER BY md5(key), key LIMIT {SAMPLE}").fetchall()
        newest = con.execute(
            f"SELECT key, size, strftime(last_modified, '%Y-%m-%dT%H:%M:%S.%fZ'), tenant, stage "
            f"FROM {m} ORDER BY last_modified DESC, key LIMIT {SAMPLE}").fetchall()
        tenants = con.execute(
            f"SELECT tenant, stage, count(*), sum(size) FROM {m} GROUP BY ALL "
            f"ORDER BY sum(size) DESC, tenant LIMIT 50").fetchall()
        ntenants = con.execute(f"SELECT count(DISTINCT tenant) FROM {m}").fetchone()
    finally:
        con.close()
    return {"hist": hist, "lo": lo, "span_us": span_us, "sample": sample, "newest": newest,
            "tenants": tenants, "tenant_count": int(ntenants[0]) if ntenants else 0}


def _timeline(points: list[tuple[str, datetime | None]], cutoff: datetime,
              taken: datetime) -> str:
    """Ticks on a time axis, numbered; the legend below names each with its time."""
    pts = sorted(((n, t) for n, t in points if t is not None), key=lambda p: p[1])
    lo, hi = pts[0][1], pts[-1][1]
    span = max((hi - lo).total_seconds(), 1.0)
    w, pad = 900, 30

    def x(t: datetime) -> float:
        return pad + (t - lo).total_seconds() / span * (w - 2 * pad)

    parts = [f'<svg viewBox="0 0 {w} 110" width="100%" role="img" aria-label="timeline">',
             f'<rect x="{x(cutoff):.1f}" y="35" width="{max(x(taken) - x(cutoff), 2):.1f}" '
             'height="30" fill="#fbbf24" opacity=".6"><title>buffer</title></rect>',
             f'<line x1="{pad}" y1="50" x2="{w - pad}" y2="50" stroke="#444"/>']
    legend = []
    for i, (name, t) in enumerate(pts, start=1):
        color = "#b00020" if name == "cutoff" else "#1f4e79"
        y = 85 + (i % 2) * 16
        parts.append(f'<line x1="{x(t):.1f}" y1="30" x2="{x(t):.1f}" y2="{y - 12}" '
                     f'stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{y}" text-anchor="middle" font-size="12" '
                     f'font-weight="bold" fill="{color}">{i}</text>')
        legend.append(f'<li style="color:{color}">{_e(name)}: {_e(format_time(t))}</li>')
    parts.append("</svg>")
    return "".join(parts) + '<ol class="legend">' + "".join(legend) + (
        "</ol><p>The shaded band is the buffer between the cutoff and the snapshot's "
        "taken_at: nothing written in it can be a candidate.</p>")


def _ticks(top: int) -> list[int]:
    """Round counts from 0 to at least ``top``, at most five steps of 1, 2 or 5 times a
    power of ten."""
    if top <= 0:
        return [0, 1]
    step = 1
    while True:
        for m in (1, 2, 5):
            st = step * m
            if top <= 4 * st:
                return list(range(0, -(-top // st) * st + 1, st))
        step *= 10


def _histogram(agg: dict[str, Any], cutoff: datetime) -> str:
    """Candidates per last_modified bin: a count axis on the left (objects per bin,
    labelled), time along the bottom up to the cutoff."""
    counts = {int(b): (int(n), int(s or 0)) for b, n, s in agg["hist"]}
    ticks = _ticks(max((n for n, _s in counts.values()), default=0))
    top = ticks[-1] or 1
    w, h, pad, left = 900, 200, 30, 80
    bw = (w - left - pad) / BINS
    parts = [f'<svg viewBox="0 0 {w} {h + 40}" width="100%" role="img" '
             'aria-label="candidates by last_modified">']
    for tick in ticks:
        y = h + 10 - tick / top * h
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{w - pad}" y2="{y:.1f}" '
                     f'stroke="#ddd"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11" class="tick">{tick:,}</text>')
    parts.append(f'<line x1="{left}" y1="10" x2="{left}" y2="{h + 10}" stroke="#444"/>')
    parts.append(f'<text x="14" y="{h / 2 + 10:.1f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 14 {h / 2 + 10:.1f})" id="hist-y-label">'
                 'candidates (objects per bin)</text>')
    for b in range(BINS):
        n, sz = counts.get(b, (0, 0))
        bh = n / top * h
        parts.append(f'<rect x="{left + b * bw:.1f}" y="{h - bh + 10:.1f}" '
                     f'width="{bw - 1:.1f}" height="{bh:.1f}" fill="#1f4e79"><title>{n} '
                     f'objects, {_e(human_bytes(sz))}</title></rect>')
    parts.append(f'<line x1="{w - pad}" y1="0" x2="{w - pad}" y2="{h + 10}" stroke="#b00020" '
                 'stroke-width="2"/>')
    parts.append(f'<text x="{w - pad}" y="{h + 28}" text-anchor="end" font-size="11" '
                 f'fill="#b00020">cutoff {_e(format_time(cutoff))}</text>')
    parts.append(f'<text x="{left}" y="{h + 28}" font-size="11">'
                 f'{_e(format_time(agg["lo"]))}</text>')
    parts.append(f'<text x="{(left + w - pad) / 2:.0f}" y="{h + 38}" font-size="11" '
                 'text-anchor="middle">last_modified</text></svg>')
    return "".join(parts)


def _table(headers: list[str], rows: list[list[object]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num,th.num{text-align:right}
.ok{color:#0a6b2b;font-weight:600} .bad{color:#b00020;font-weight:600}
.override{background:#fde7ea;border:2px solid #b00020;color:#b00020;padding:.6em 1em}
code{font-family:ui-monospace,monospace;font-size:.92em;word-break:break-all}
"""


def render_report(plan_dir: str, allowed_signers: str | None = None) -> str:
    """The report as one HTML string."""
    with PlanBundle.open(plan_dir) as bundle:
        return _render(bundle, allowed_signers)


def _render(bundle: PlanBundle, allowed_signers: str | None) -> str:
    plan_dir = bundle.root
    s = summarize_bundle(bundle, top=20)
    if not s["manifest_intact"]:
        from cleanup.errors import InvariantViolation

        raise InvariantViolation(I6, "manifest.parquet does not match the "
                                 "sha256 in plan.json: this is not the plan that was signed",
                                 hint="review only an intact plan; make a new plan")
    p = bundle.plan
    inv, snap = p.inputs.inventory, p.inputs.snapshot
    cutoff, taken = p.cutoff.time, snap.taken_at.time
    listed, created = inv.listed_at.time, p.created_at.time
    m = p.manifest
    oldest, newest = m.oldest_last_modified, m.newest_last_modified
    agg = _aggregates(bundle, cutoff, oldest)
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
           f"<title>cleanup review {_e(s['plan_id'][:12])}</title><style>{CSS}</style></head>"
           "<body>"]
    warnings = list(p.overrides)
    if p.quarantine == "none":
        warnings.append("quarantine = none: removed files are NOT recoverable")
    if inv.time_source == "mtime":
        warnings.append("the inventory trusted mtime alone (--trust-mtime)")
    if warnings:
        out.append('<div class="override" id="overrides"><strong>POLICY OVERRIDES AND RISKS'
                   "</strong><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) +
                   "</ul></div>")
    out.append(f"<h1>Deletion plan <code id=plan-id>{_e(s['plan_id'])}</code></h1>")
    out.append(_verification(bundle, s, allowed_signers))
    out.append(_table(["", ""], [
        ["store", f"{p.store} (region {p.region})"],
        ["candidates", f"{m.objects:,} objects, {human_bytes(m.bytes)} "
                       f"of {p.scope.objects:,} objects, "
                       f"{human_bytes(p.scope.bytes)} in scope"],
        ["cutoff", f"{format_time(cutoff)} = snapshot taken_at {format_time(taken)} "
                   f"({snap.taken_at.clock}) - buffer {format_duration(p.buffer)}"],
        ["inventory", f"{inv.source}, listed_at {format_time(listed)}, precision "
                      f"{format_duration(inv.precision)}"],
        ["snapshot", f"{snap.source}: {snap.rows:,} references, digest {snap.digest}"
         if snap.rows is not None else f"{snap.source}: no reference snapshot"],
        ["quarantine / hold", f"{p.quarantine} / {format_duration(p.hold)}"],
        ["author", f"{p.author}, {format_time(created)}"],
    ], "facts"))
    out.append("<h2>Invariants</h2>")
    out.append(_table(["invariant", "result", "detail"], [
        [c.invariant, "ok" if c.ok else "FAILED", c.detail] for c in p.invariants]))
    if s.get("copies"):
        out.append(_copies_section(s["copies"]))
    out.append("<h2>Timeline</h2>")
    out.append(_timeline([("oldest candidate", oldest), ("newest candidate", newest),
                          ("cutoff", cutoff), ("taken_at", taken), ("listed_at", listed),
                          ("planned", created)], cutoff, taken))
    out.append("<h2>Candidates by last_modified</h2>")
    out.append(_histogram(agg, cutoff))
    if p.tables:
        out.append(_tables_section(p.to_json(), p.policy.max_table_delete_fraction))
    out.append("<h2>Stages</h2>")
    out.append(_table(["stage", "selector", "tenants", "objects", "bytes"], [
        [st.stage, st.selector, st.tenants, f"{st.objects:,}",
         human_bytes(st.bytes)] for st in p.stages], "stages"))
    out.append(f"<h2>Tenants (top {min(50, agg['tenant_count'])} of {agg['tenant_count']} "
               "by bytes)</h2>")
    out.append(_table(["tenant", "stage", "objects", "bytes"], [
        [t or "(no tenant)", st, f"{n:,}", human_bytes(b)] for t, st, n, b in agg["tenants"]]))
    out.append("<h2>Top prefixes by bytes</h2>")
    out.append(_table(["prefix", "objects", "bytes"], [
        [r["prefix"] or "(root)", f"{r['objects']:,}", human_bytes(r["bytes"])]
        for r in s["top_prefixes"]]))
    out.append(f"<h2>The {SAMPLE} candidates newest to the cutoff</h2>")
    out.append(_table(["key", "size", "last_modified", "tenant", "stage"],
                      [list(r) for r in agg["newest"]]))
    out.append(f"<h2>A deterministic sample of {SAMPLE} candidates</h2>")
    out.append(_table(["key", "size", "last_modified", "tenant", "stage"],
                      [list(r) for r in agg["sample"]]))
    out.append("<p>Generated by <code>cleanup review</code>. Approve with "
               f"<code>cleanup approve {_e(plan_dir)} --signer NAME --key KEY</code>.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def _copies_section(c: dict[str, Any]) -> str:
    """Copy verification (cleanup.retire): the regions in words, how many candidates are
    backed up, and the blocking objects with their reasons."""
    what = "retirement" if c["mode"] == "retire" else "backup copies"
    head = (f'<h2 id="copies">Copies ({what})</h2><p><strong>{_e(c["text"])}</strong></p>'
            f"<p>{c['verified']:,} of {c['candidates']:,} candidates backed up by a verified "
            f"copy ({', '.join(f'{m}: {n:,}' for m, n in sorted(c['methods'].items()))}); "
            f"{c['blocking']:,} objects blocking, never candidates"
            + "".join(f", {_e(r)}: {n:,}" for r, n in sorted(c["blocking_reasons"].items()))
            + "</p>")
    return head + _table(["blocking object", "reason"],
                         [list(e) for e in c["blocking_examples"]], "blocking")


def _tables_section(plan: dict[str, Any], limit: float) -> str:
    """Each table root of the snapshot's table sources (I5 per table): its data files
    and bytes, its candidates and their share, the metadata kept; largest share first."""
    from cleanup.show import table_rows

    rows, count = table_rows(plan, 200)
    head = (f'<h2 id="tables">Tables ({len(rows)} of {count}, largest share first)</h2>'
            f"<p>I5 per table: a table's candidates may be at most {limit:.0%} of its data "
            "files and of its data bytes (files outside <code>_delta_log/</code>, "
            "<code>metadata/</code> and hidden paths, which are never candidates).</p>")
    return head + _table(
        ["table root", "data files", "data bytes", "candidates", "% of files",
         "candidate bytes", "% of bytes", "metadata kept"],
        [[r["root"] or "(store root)", f"{r['data_objects']:,}", human_bytes(r["data_bytes"]),
          f"{r['candidates']:,}", f"{r['object_fraction']:.1%}",
          human_bytes(r["candidate_bytes"]), f"{r['byte_fraction']:.1%}",
          f"{r['metadata_objects']:,}"] for r in rows], "tables")


def _verification(bundle: PlanBundle, s: dict[str, Any], allowed: str | None) -> str:
    if not s["manifest_intact"]:
        return '<p class="bad" id=verify>manifest.parquet does NOT match plan.json</p>'
    if allowed is None:
        return ('<p id=verify>Signatures not verified here (pass <code>--allowed-signers'
                "</code>). Manifest matches plan.json.</p>")
    from cleanup.signoff import verify_bundle

    rep = verify_bundle(bundle, allowed)
    rows = [[sig.role, sig.signer, sig.state, sig.to_json()["signed_at"] or "", sig.detail]
            for sig in ([rep.author] if rep.author else []) + rep.approvals]
    status = (f'<p id=verify class="{"ok" if rep.ok else "bad"}">'
              f'{"VERIFIED" if rep.ok else "NOT VERIFIED"}: {_e(rep.integrity.detail)}; '
              f"{_e(rep.two_person.detail)}</p>")
    return status + _table(["role", "signer", "state", "signed_at", "detail"], rows)


def write_report(plan_dir: str, out: str, allowed_signers: str | None = None) -> str:
    text = render_report(plan_dir, allowed_signers)
    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return out
