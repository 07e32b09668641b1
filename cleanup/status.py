"""``cleanup status``: each stage's state, counts, times, gate and next allowed action."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.bundle import PlanBundle
from cleanup.core.timeutil import format_time, parse_time
from cleanup.journal import read_records, stage_state
from cleanup.model import Plan
from cleanup.published import Published
from cleanup.published import stage_state as published_state

if TYPE_CHECKING:
    from cleanup.stores.base import Store


def plan_status(plan_dir: str, plan: Plan, now: datetime | None = None,
                store: Store | None = None, plan_id: str | None = None) -> list[dict[str, Any]]:
    """Each stage's row. With the plan's ``store`` the states are the store's stage
    records (what gates execution, I10); without it, this machine's journal."""
    now = now or datetime.now(UTC)
    hold = plan.hold
    layout = PlanBundle.layout(plan_dir)
    rows: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    pub = Published(store, plan_id) if store is not None and plan_id else None
    for s in plan.stages:
        stage = s.stage
        st = (published_state(pub, stage) if pub is not None
              else stage_state(plan_dir, stage)).to_json()
        st["source"] = "store" if pub is not None else "local journal"
        st["planned_objects"], st["planned_bytes"] = s.objects, s.bytes
        gates = [r for r in read_records(layout.journal_path(stage)) if r.get("event") == "gate"]
        st["gate"] = gates[-1] if gates else None
        if st["finished_at"]:
            st["hold_ends_at"] = format_time(parse_time(st["finished_at"]) + hold)
        st["next"] = _next(stage, st, prev, now)
        rows.append(st)
        prev = st
    return rows


def _next(stage: int, st: dict[str, Any], prev: dict[str, Any] | None, now: datetime) -> str:
    who = "the executor, with a fresh witness from another principal (cleanup witness)"
    if st["state"] == "complete":
        return "done; `cleanup restore` to undo, `cleanup purge` after the retention"
    if st["state"] == "halted":
        return "halted by reconciliation: make a new plan"
    if st["state"] == "running":
        return f"resume: run the same `cleanup execute --stage {stage}` ({who})"
    if prev is None:
        return f"`cleanup execute --stage {stage}` ({who})"
    if prev["state"] != "complete":
        return f"wait: stage {prev['stage']} must complete first"
    ends = parse_time(prev["hold_ends_at"])
    if now < ends:
        return f"wait: stage {prev['stage']}'s hold ends at {format_time(ends)}"
    return f"`cleanup execute --stage {stage}` after the health gate ({who})"
