"""The plan-time safety invariants (SPEC.md I1-I5, I15, I16) as pure checks.

Each check takes facts (numbers, times) and returns a :class:`Check`; nothing
here reads a clock or a file. The planner raises the first failed check as an
:class:`~cleanup.errors.InvariantViolation`, whose message starts with the
invariant's name and explains the numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cleanup.core.names import I1, I2, I3, I4, I5, I15, I16, I20
from cleanup.core.timeutil import format_duration, format_time
from cleanup.errors import InvariantViolation

__all__ = ["I1", "I2", "I3", "I4", "I5", "I15", "I16", "I20"]


@dataclass(frozen=True)
class Check:
    invariant: str
    ok: bool
    detail: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "ok": self.ok, "detail": self.detail,
                "facts": dict(self.facts)}

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise InvariantViolation(self.invariant, self.detail, hint=self.hint)


def derive_cutoff(
    taken_at: datetime,
    buffer: timedelta,
    min_buffer: timedelta,
    requested: datetime | None = None,
) -> tuple[Check, datetime]:
    """I1: ``cutoff = taken_at - buffer`` with ``buffer >= min_buffer``.

    A cutoff given by hand is accepted only at or before the derived one; the
    returned cutoff is then the requested one (earlier is always safer).
    """
    derived = taken_at - buffer
    facts = {
        "taken_at": format_time(taken_at),
        "buffer": format_duration(buffer),
        "min_buffer": format_duration(min_buffer),
        "derived_cutoff": format_time(derived),
    }
    if buffer < min_buffer:
        return (
            Check(I1, False,
                  f"buffer {format_duration(buffer)} is below the minimum "
                  f"{format_duration(min_buffer)}", facts,
                  hint="use a larger --buffer (the minimum is policy min_buffer)"),
            derived,
        )
    if buffer <= timedelta(0):
        msg = f"buffer {format_duration(buffer)} must be positive"
        return Check(I1, False, msg, facts), derived
    cutoff = derived
    if requested is not None:
        facts["requested_cutoff"] = format_time(requested)
        if requested > derived:
            return (
                Check(I1, False,
                      f"cutoff {format_time(requested)} is not before snapshot taken_at "
                      f"{format_time(taken_at)} minus buffer {format_duration(buffer)} "
                      f"(= {format_time(derived)})", facts,
                      hint=f"drop --cutoff to use the derived cutoff {format_time(derived)}, "
                           "or give an earlier one"),
                derived,
            )
        cutoff = requested
    facts["cutoff"] = format_time(cutoff)
    return (
        Check(I1, True,
              f"cutoff {format_time(cutoff)} <= taken_at {format_time(taken_at)} - "
              f"buffer {format_duration(buffer)}", facts),
        cutoff,
    )


def check_snapshot_sound(
    *, rows: int | None, taken_at: datetime | None, digest: str | None, source: str | None,
    now: datetime,
) -> Check:
    """I3: the snapshot is non-empty, dated, digested, and not from the future."""
    facts: dict[str, Any] = {"rows": rows, "digest": digest, "source": source,
                             "taken_at": format_time(taken_at) if taken_at else None,
                             "now": format_time(now)}
    if taken_at is None:
        return Check(I3, False, "the snapshot has no taken_at", facts,
                     hint="re-create it with `cleanup snapshot` (give --taken-at for key lists)")
    if not source or not digest:
        return Check(I3, False, "the snapshot does not record its source and digest", facts,
                     hint="re-create it with `cleanup snapshot`")
    if not rows:
        return Check(I3, False, "the snapshot is empty (0 references)", facts,
                     hint="an empty snapshot would make every file look unused; check the query")
    if taken_at > now:
        return Check(I3, False,
                     f"snapshot taken_at {format_time(taken_at)} is in the future of the plan's "
                     f"clock {format_time(now)}", facts,
                     hint="check the metadata system's clock and --taken-at")
    return Check(I3, True, f"{rows} references from {source} taken at {format_time(taken_at)}",
                 facts)


def check_paths_agree(
    *, in_scope_refs: int, missing_refs: int, out_of_scope_refs: int, max_missing: float,
    examples: Iterable[str] = (), foreign_refs: int = 0, max_foreign: int = 0,
    foreign_where: Mapping[str, int] | None = None, unresolvable_refs: int = 0,
    unresolvable_examples: Iterable[str] = (), near_misses: int = 0,
    near_miss_examples: Iterable[tuple[str, str]] = (), near_misses_accepted: bool = False,
) -> Check:
    """I4: every reference resolves; foreign ones are few or named; no near-miss passes
    silently; in-scope references missing from the inventory stay under ``max_missing``.

    Many missing references mean the listing or the path normalization is wrong, and
    then "unreferenced" means nothing. ``out_of_scope_refs`` counts every foreign
    reference, ``foreign_refs`` those outside the stores named as acceptable.
    """
    ex = list(examples)[:5]
    nm = [list(p) for p in list(near_miss_examples)[:5]]
    where = dict(foreign_where or {})
    facts: dict[str, Any] = {
        "in_scope_refs": in_scope_refs, "missing_refs": missing_refs,
        "out_of_scope_refs": out_of_scope_refs, "max_missing_refs": max_missing,
        "missing_examples": ex, "foreign_refs": foreign_refs, "max_foreign_refs": max_foreign,
        "foreign_where": where, "unresolvable_refs": unresolvable_refs,
        "unresolvable_examples": list(unresolvable_examples)[:5], "near_misses": near_misses,
        "near_miss_examples": nm, "near_misses_accepted": near_misses_accepted}
    if unresolvable_refs:
        return Check(I4, False,
                     f"{unresolvable_refs} reference(s) cannot be resolved without guessing, "
                     f"e.g. {'; '.join(facts['unresolvable_examples'])}", facts,
                     hint="fix the references at the source (store-relative keys or full "
                          "URLs), or declare the snapshot's --ref-base/--ref-encoding")
    if foreign_refs > max_foreign:
        places = ", ".join(f"{w} ({n})" for w, n in list(where.items())[:5])
        none_in = "; no reference falls inside the store" if in_scope_refs == 0 else ""
        return Check(I4, False,
                     f"{foreign_refs} reference(s) point outside the store, above "
                     f"max_foreign_refs {max_foreign}: {places}{none_in}", facts,
                     hint="if the other locations are meant, name them with "
                          "--foreign-refs-ok STORE (recorded in the plan); otherwise the "
                          "snapshot's paths and --store disagree")
    if near_misses and not near_misses_accepted:
        pairs = "; ".join(f"{r!r} ~ {k!r}" for r, k in nm)
        return Check(I4, False,
                     f"{near_misses} reference(s) absent from the inventory differ from an "
                     f"inventory key only by encoding, Unicode form or dot segments "
                     f"(reference ~ key): {pairs}", facts,
                     hint="a near-miss usually means the reference names that file in "
                          "another spelling: fix the snapshot's encoding (--ref-encoding uri) "
                          "or, if they really are different files, re-plan with "
                          "--accept-near-misses (recorded for reviewers)")
    if in_scope_refs == 0:
        return Check(I4, False,
                     f"no reference falls inside the store ({out_of_scope_refs} out of scope)",
                     facts, hint="references must be store-relative keys or URLs/paths under "
                                 "the store; check --store against the snapshot's paths")
    frac = missing_refs / in_scope_refs
    facts["missing_fraction"] = frac
    if frac > max_missing:
        return Check(I4, False,
                     f"{missing_refs} of {in_scope_refs} referenced keys ({frac:.4%}) are absent "
                     f"from the inventory, above max_missing_refs {max_missing:.4%}; e.g. "
                     + ", ".join(repr(e) for e in ex), facts,
                     hint="the listing or the paths are wrong: compare the snapshot's keys "
                          "with the inventory's")
    return Check(I4, True, f"{missing_refs} of {in_scope_refs} referenced keys missing "
                           f"({frac:.4%} <= {max_missing:.4%}); {foreign_refs} foreign, "
                           f"{near_misses} near-miss(es)", facts)


def check_blast_radius(
    *, candidates: int, candidate_bytes: int, scope_objects: int, scope_bytes: int,
    max_fraction: float, tables: Iterable[Mapping[str, Any]] = (),
    table_totals: Mapping[str, int] | None = None, max_table_fraction: float = 1.0,
) -> Check:
    """I5: candidates stay within ``max_fraction`` of the scope's objects and bytes, and
    within ``max_table_fraction`` of each declared table's data files and bytes.

    With table roots (``tables``: root, objects, bytes, metadata_objects,
    metadata_bytes, candidates, candidate_bytes), the table is the scope of its own
    files: the scope limit counts only candidates and objects outside every table root
    (``table_totals``: objects, bytes, candidates, candidate_bytes under any root, each
    counted once), and each table's candidates are measured against its data files,
    i.e. its objects less its metadata (``_delta_log/``, ``metadata/``, hidden paths,
    which are never candidates), so 100% means every data file of the table.
    """
    tabs = [dict(t) for t in tables]
    tt = dict(table_totals or {})
    s_cand = candidates - tt.get("candidates", 0)
    s_cand_bytes = candidate_bytes - tt.get("candidate_bytes", 0)
    s_objects = scope_objects - tt.get("objects", 0)
    s_bytes = scope_bytes - tt.get("bytes", 0)
    obj_frac = s_cand / s_objects if s_objects else 0.0
    byte_frac = s_cand_bytes / s_bytes if s_bytes else 0.0
    facts: dict[str, Any] = {
        "candidates": candidates, "candidate_bytes": candidate_bytes,
        "scope_objects": scope_objects, "scope_bytes": scope_bytes,
        "object_fraction": obj_frac, "byte_fraction": byte_frac,
        "max_delete_fraction": max_fraction}
    where = ""
    if tabs:
        where = " outside the table roots"
        facts.update({"tables": len(tabs), "max_table_delete_fraction": max_table_fraction,
                      "table_objects": tt.get("objects", 0), "table_bytes": tt.get("bytes", 0),
                      "table_candidates": tt.get("candidates", 0),
                      "table_candidate_bytes": tt.get("candidate_bytes", 0)})
    for what, frac, n, total in (("objects", obj_frac, s_cand, s_objects),
                                 ("bytes", byte_frac, s_cand_bytes, s_bytes)):
        if frac > max_fraction:
            return Check(I5, False,
                         f"{n} of {total} {what}{where} ({frac:.2%}) would be deleted, above "
                         f"max_delete_fraction {max_fraction:.2%}", facts,
                         hint="narrow the store prefix, or raise --max-delete-fraction "
                              "(recorded in the plan for reviewers)")
    over: list[dict[str, Any]] = []
    worst = 0.0
    for t in tabs:
        data_o = t["objects"] - t.get("metadata_objects", 0)
        data_b = t["bytes"] - t.get("metadata_bytes", 0)
        fo = t["candidates"] / data_o if data_o else 0.0
        fb = t["candidate_bytes"] / data_b if data_b else 0.0
        worst = max(worst, fo, fb)
        for what, frac, n, total in (("data files", fo, t["candidates"], data_o),
                                     ("data bytes", fb, t["candidate_bytes"], data_b)):
            if frac > max_table_fraction:
                over.append({"root": t["root"], "what": what, "candidates": n, "of": total,
                             "fraction": frac})
                break
    if tabs:
        facts["worst_table_fraction"] = worst
        facts["tables_over_limit"] = over[:20]
        facts["tables_over_limit_count"] = len(over)
    if over:
        first = over[0]
        more = f" (and {len(over) - 1} more table(s))" if len(over) > 1 else ""
        return Check(I5, False,
                     f"table {first['root'] or '(store root)'!r}: {first['candidates']} of "
                     f"{first['of']} {first['what']} ({first['fraction']:.2%}) would be "
                     f"deleted, above max_table_delete_fraction {max_table_fraction:.2%}{more}",
                     facts,
                     hint="a table losing (nearly) all its data files usually means the "
                          "snapshot is not of this table; if the cleanup is meant, raise "
                          "--max-table-delete-fraction (recorded in the plan for reviewers)")
    tail = (f"; {len(tabs)} table(s), each <= {max_table_fraction:.2%} of its data files "
            f"and bytes (worst {worst:.2%})" if tabs else "")
    return Check(I5, True, f"{s_cand} of {s_objects} objects{where} ({obj_frac:.2%}), "
                           f"{byte_frac:.2%} of bytes <= {max_fraction:.2%}{tail}", facts)


def check_precision(
    *, newest_candidate: datetime | None, precision: timedelta, cutoff: datetime,
) -> Check:
    """I2, re-applied to the result: the newest candidate plus precision is at or before cutoff."""
    facts = {"precision": format_duration(precision), "cutoff": format_time(cutoff),
             "newest_candidate": format_time(newest_candidate) if newest_candidate else None}
    if newest_candidate is not None and newest_candidate + precision > cutoff:
        return Check(I2, False,
                     f"candidate last_modified {format_time(newest_candidate)} + precision "
                     f"{format_duration(precision)} is after cutoff {format_time(cutoff)}", facts)
    return Check(I2, True, f"every candidate's last_modified + {format_duration(precision)} "
                           f"<= cutoff", facts)


def check_clocks(
    skews: Mapping[str, timedelta], *, max_skew: timedelta, buffer: timedelta,
) -> Check:
    """I15: every readable clock agrees with the local one within the allowed skew.

    The allowed skew is the smaller of policy ``max_clock_skew`` and a tenth of
    the buffer: a clock that is off by a large part of the buffer eats the
    margin the buffer exists to give.
    """
    limit = min(max_skew, buffer / 10)
    facts: dict[str, Any] = {"limit": format_duration(limit),
                             "skews": {k: format_duration(v) for k, v in skews.items()}}
    for name, skew in skews.items():
        if abs(skew) > limit:
            return Check(I15, False,
                         f"the {name} clock is {format_duration(abs(skew))} "
                         f"{'ahead of' if skew > timedelta(0) else 'behind'} the local clock, "
                         f"more than the allowed {format_duration(limit)} "
                         f"(min of max_clock_skew and buffer/10)", facts,
                         hint="fix NTP on the machine or the server before planning")
    names = ", ".join(skews) or "no other clock readable"
    return Check(I15, True, f"clocks agree within {format_duration(limit)} ({names})", facts)


def check_sentinels(
    sentinels: Iterable[str], *, in_snapshot: set[str], in_inventory: set[str],
    in_candidates: set[str],
) -> Check:
    """I16: every sentinel (a file known to be live) is referenced, listed and not a candidate."""
    sents = sorted(set(sentinels))
    problems = []
    for s in sents:
        if s in in_candidates:
            problems.append(f"{s!r} is a candidate")
        if s not in in_snapshot:
            problems.append(f"{s!r} is not in the snapshot")
        if s not in in_inventory:
            problems.append(f"{s!r} is not in the inventory")
    facts = {"sentinels": len(sents), "problems": problems[:20]}
    if problems:
        return Check(I16, False, "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""),
                     facts, hint="a live file that the snapshot or the listing misses means "
                                 "the inputs are incomplete: re-take them")
    return Check(I16, True, f"{len(sents)} sentinels referenced, listed, not candidates", facts)


def check_table_metadata(
    *, declared_roots: int, uncovered_roots: int, uncovered_examples: Iterable[str] = (),
    protected: int = 0,
) -> Check:
    """I20: every table root in the scope (a ``_delta_log/`` folder or a
    ``*.metadata.json``) is covered by a table source of the snapshot. ``protected``
    counts files under a declared root that were kept as table metadata or hidden
    (each table's own numbers are plan.json's ``tables``, checked by I5)."""
    examples = [repr(e or "(store root)") for e in list(uncovered_examples)[:5]]
    facts = {"declared_roots": declared_roots, "uncovered_roots": uncovered_roots,
             "uncovered_examples": examples, "protected_table_files": protected}
    if uncovered_roots:
        return Check(I20, False,
                     f"{uncovered_roots} table root(s) in the scope are not covered by any "
                     f"source of the snapshot, e.g. {', '.join(examples)}: their files "
                     f"would look unreferenced", facts,
                     hint="snapshot those tables too (delta://, iceberg://), or plan a store "
                          "prefix that holds no other table")
    return Check(I20, True, f"{declared_roots} declared table root(s), none uncovered; "
                            f"{protected} table metadata or hidden file(s) kept", facts)
