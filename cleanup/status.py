"""``cleanup status``: each stage's state, counts, times, gate and next allowed action."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.bundle import PlanBundle
from cleanup.core.timeutil import format_time, parse_time
from cleanup.errors import UsageError
from cleanup.journal import read_records, stage_state
from cleanup.model import Plan
from cleanup.published import Published, RecordTrust
from cleanup.published import stage_state as published_state

if TYPE_CHECKING:
    from cleanup.stores.base import Store


def record_trust(store: Store, pin: str | None, config: str | None,
                 stack: ExitStack) -> RecordTrust | None:
    """The runners of the store's trust root, verified against the pin (option,
    CLEANUP_TRUST_ROOT or cleanup.toml); None when no pin is configured."""
    from cleanup import trust as trust_mod

    try:
        trust_mod.resolve_pin(pin, config)
    except UsageError:
        return None
    root = trust_mod.current(store, pin, config)
    allowed = stack.enter_context(root.allowed_signers())
    return RecordTrust(allowed, lambda n: root.has_role(n, "runner"))


def plan_status(plan_dir: str, plan: Plan, now: datetime | None = None,
                store: Store | None = None, plan_id: str | None = None,
                trust: RecordTrust | None = None) -> list[dict[str, Any]]:
    """Each stage's row. With the plan's ``store`` the states are the store's stage
    records (what gates execution, I10) -- with ``trust``, only those a runner signed;
    without a store, this machine's journal."""
    now = now or datetime.now(UTC)
    hold = plan.hold
    layout = PlanBundle.layout(plan_dir)
    rows: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    pub = Published(store, plan_id, trust) if store is not None and plan_id else None
    for s in plan.stages:
        stage = s.stage
        st = (published_state(pub, stage) if pub is not None
              else stage_state(plan_dir, stage)).to_json()
        st["source"] = "store" if pub is not None else "local journal"
        st["verified"] = pub is not None and pub.verifying
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
        if (st.get("halt") or {}).get("by") == "watchdog":
            why = str(st["halt"].get("reason", "")).removeprefix("watchdog: ")[:200]
            return f"halted by the watchdog ({why}): make a new plan"
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
