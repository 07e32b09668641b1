"""The execution journal: per plan and stage, one JSON line per step, fsynced.

A batch is redone from the start unless its ``done`` line is durable; every
step of a batch is idempotent (a key already in quarantine with the planned
size counts as moved, a missing key is never deleted twice), so ``kill -9`` at
any point followed by the same command resumes with exact counts.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from cleanup.core.timeutil import format_time
from cleanup.model import StageState


def journal_path(plan_dir: str, stage: int, dry_run: bool = False) -> str:
    from cleanup.bundle import PlanBundle

    return PlanBundle.layout(plan_dir).journal_path(stage, dry_run)


# Fault injection for the crash tests: SIGKILL this process right after the Nth
# durable journal write. Unset in normal use.
_KILL_AFTER = "CLEANUP_FAULT_KILL_AFTER_JOURNAL_WRITES"


class Journal:
    writes = 0

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        rec = {"event": event, "time": format_time(datetime.now(UTC)), **fields}
        line = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        Journal.writes += 1
        if os.environ.get(_KILL_AFTER) and Journal.writes >= int(os.environ[_KILL_AFTER]):
            os.kill(os.getpid(), signal.SIGKILL)

    def records(self) -> Iterator[dict[str, Any]]:
        return read_records(self.path)


def read_records(path: str) -> Iterator[dict[str, Any]]:
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # a torn last line from a crash: that step did not happen
            try:
                rec = json.loads(line)
            except ValueError:
                return
            if isinstance(rec, dict):
                yield rec


def stage_state(plan_dir: str, stage: int) -> StageState:
    """Fold a stage's journal into its state."""
    st = StageState(stage)
    for rec in read_records(journal_path(plan_dir, stage)):
        ev = rec.get("event")
        if ev == "stage-start":
            st.started_at = st.started_at or rec.get("time")
            st.executor = rec.get("executor")
            if st.state != "halted":
                st.state = "running"
        elif ev == "batch-done":
            b = int(rec["batch"])
            if b not in st.done_batches:
                st.done_batches[b] = rec
                st.moved += int(rec.get("moved", 0))
                st.moved_bytes += int(rec.get("moved_bytes", 0))
                for reason, n in rec.get("skipped", {}).items():
                    st.skipped[reason] = st.skipped.get(reason, 0) + int(n)
        elif ev == "restored":
            st.restored += int(rec.get("counts", {}).get("restored", 0))
        elif ev == "halt":
            st.state = "halted"
            st.halt = rec
        elif ev == "stage-complete" and st.state != "halted":
            st.state = "complete"
            st.finished_at = rec.get("time")
    st.batches_done = len(st.done_batches)
    return st
