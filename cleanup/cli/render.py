"""Text renderings of the library's results: lines, or :class:`~cleanup.cli.output.Rich`
renderables for the plan summary. Nothing here prints: commands hand these to their
:class:`~cleanup.cli.output.Output`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cleanup.cli.output import Rich

if TYPE_CHECKING:
    from cleanup.runbook import CheckReport
    from cleanup.signoff import VerifyReport


def human_bytes(n: int | float) -> str:
    from cleanup.show import human_bytes as fmt  # cleanup.show is slow to import: --help

    return fmt(n)


def references_line(refs: dict[str, Any]) -> str:
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


def plan_summary(summary: dict[str, Any]) -> Rich:
    """``cleanup show``'s tables of a :func:`cleanup.show.summarize` result."""
    from rich.table import Table

    out: list[Any] = []
    p = summary["plan"]
    if p.get("overrides"):
        out.append("[bold red]POLICY OVERRIDES[/]")
        out += [f"  [red]- {o}[/]" for o in p["overrides"]]
    if p.get("inputs", {}).get("inventory", {}).get("time_source") == "mtime":
        out.append("[bold red]The inventory trusted mtime alone (--trust-mtime).[/]")
    if p.get("quarantine") == "none":
        out.append("[bold red]quarantine = none: deleted files are NOT recoverable.[/]")
    copies = summary.get("copies")
    if copies:
        from rich.markup import escape

        out.append(f"[bold]{escape(copies['text'])}[/]")
        out.append(f"  {copies['verified']} of {copies['candidates']} candidates have a verified "
                   f"copy; {copies['blocking']} objects blocking (never candidates)"
                   + "".join(f", {r}: {n}" for r, n in sorted(copies["blocking_reasons"].items())))
    out.append(f"[bold]plan[/] {summary['plan_id']}  ({summary['plan_dir']})")
    ok = summary["manifest_intact"]
    out.append(f"manifest sha256 {'matches' if ok else '[red]DOES NOT MATCH[/]'} plan.json; "
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
        t.add_row("references", references_line(refs))
    t.add_row("cutoff", f"{p['cutoff']['time']} = taken_at - buffer {p['buffer']}")
    t.add_row("quarantine / hold", f"{p['quarantine']} / {p['hold']}")
    t.add_row("author", f"{p['author']} at {p['created_at']['time']}")
    trust = p.get("trust")
    t.add_row("trust root", f"version {trust['version']} ({trust['digest'][:19]}...)" if trust
              else "none pinned when planned: this plan cannot be executed (I17)")
    recon = p.get("reconcile")
    t.add_row("reconcile with", recon["source"] + (f" ({recon['query']})"
                                                   if recon.get("query") else "")
              if recon else "none recorded: this plan cannot be executed (I19)")
    out.append(t)
    t = Table(title="invariants")
    for col in ("invariant", "ok", "detail"):
        t.add_column(col)
    for chk in p["invariants"]:
        t.add_row(chk["invariant"], "[green]yes[/]" if chk["ok"] else "[red]NO[/]", chk["detail"])
    out.append(t)
    t = Table(title="stages")
    for col in ("stage", "selector", "tenants", "objects", "bytes"):
        t.add_column(col, justify="right" if col in ("tenants", "objects", "bytes") else "left")
    for s in p["stages"]:
        t.add_row(str(s["stage"]), s["selector"], str(s["tenants"]), str(s["objects"]),
                  human_bytes(s["bytes"]))
    t.add_row("all", "", "", str(p["manifest"]["objects"]), human_bytes(p["manifest"]["bytes"]))
    out.append(t)
    tables = p.get("tables", [])
    if tables:
        out.append(_tables_table(summary, p, len(tables)))
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
        out.append(t)
    return Rich(out)


def _tables_table(summary: dict[str, Any], p: dict[str, Any], count: int) -> Any:
    """The snapshot's tables (I5 per table): candidates against each table's data files
    and bytes, the largest share first."""
    from rich.table import Table

    limit = p["policy"].get("max_table_delete_fraction")
    shown = summary.get("tables", [])
    t = Table(title=f"tables ({len(shown)} of {count}, largest share first; I5 limit "
                    f"{limit:.0%} of a table's data files and bytes)" if limit is not None
              else f"tables ({len(shown)} of {count})")
    for col in ("table root", "data files", "data bytes", "candidates", "% files",
                "candidate bytes", "% bytes", "metadata kept"):
        t.add_column(col, justify="left" if col == "table root" else "right")
    for r in shown:
        t.add_row(r["root"] or "(store root)", str(r["data_objects"]),
                  human_bytes(r["data_bytes"]), str(r["candidates"]),
                  f"{r['object_fraction']:.1%}", human_bytes(r["candidate_bytes"]),
                  f"{r['byte_fraction']:.1%}", str(r["metadata_objects"]))
    return t


def verify_report(rep: VerifyReport) -> Iterator[str]:
    """``cleanup verify``: integrity, each signature's state, two-person sign-off."""
    from cleanup.core.signoff import VALID

    yield f"plan {rep.plan_id}"
    yield (f"  {rep.integrity.invariant}: {'ok' if rep.integrity.ok else 'FAILED'} "
           f"({rep.integrity.detail})")
    for sig in ([rep.author] if rep.author else []) + rep.approvals:
        mark = "ok " if sig.state == VALID else "BAD"
        when = sig.to_json()["signed_at"] or "?"
        yield (f"  [{mark}] {sig.role:8} {sig.signer:16} {sig.state:16} {when}  "
               f"{'' if sig.state == VALID else sig.detail}")
    yield (f"  {rep.two_person.invariant}: {'ok' if rep.two_person.ok else 'NOT MET'} "
           f"({rep.two_person.detail})")


def plan_status(plan_id: str, rows: list[dict[str, Any]]) -> Iterator[str]:
    """``cleanup status``: per stage, its state, counts, times, gate and next action."""
    yield f"plan {plan_id}"
    for r in rows:
        skipped = ", ".join(f"{k} {v}" for k, v in r["skipped"].items()) or "none"
        yield (f"  stage {r['stage']}: {r['state']:11} removed {r['moved']}/"
               f"{r['planned_objects']} ({human_bytes(r['moved_bytes'])} of "
               f"{human_bytes(r['planned_bytes'])}), skipped {skipped}"
               + (f", {r['restored']} restored since" if r["restored"] else ""))
        for label, key in (("started", "started_at"), ("finished", "finished_at"),
                           ("hold ends", "hold_ends_at")):
            if r.get(key):
                yield f"      {label}: {r[key]}"
        if r.get("gate"):
            g = r["gate"]
            yield f"      health gate: {'passed' if g['passed'] else 'FAILED'} at {g['time']}"
        yield f"      next: {r['next']}"


def runbook_report(report: CheckReport) -> Iterator[str]:
    """``cleanup runbook check`` when every runbook passed."""
    n_destructive = sum(r.destructive for r in report.runbooks)
    n_commands = sum(len(r.commands) for r in report.runbooks)
    yield (f"{len(report.runbooks)} runbooks ok ({n_destructive} destructive, reviewed): "
           f"{n_commands} commands, {report.cleanup_commands} `cleanup` invocations valid, "
           "no raw deletions")
    width = max(len(str(r.path)) for r in report.runbooks)
    for r in report.runbooks:
        yield (f"  {str(r.path):{width}}  "
               f"{'destructive    ' if r.destructive else 'non-destructive'}  "
               f"{len(r.commands):3} commands  {r.title}")
