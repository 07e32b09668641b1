"""Tenant extraction and stage assignment (pure).

Stage 0 holds the internal tenants. Later stages widen by cumulative
percentages of a deterministic tenant hash, so a tenant is never split across
stages and the same tenant lands in the same stage on every machine and every
run (md5 of the UTF-8 tenant name, not Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cleanup.core.invariants import Check
from cleanup.core.names import I10
from cleanup.core.timeutil import format_duration, format_time
from cleanup.errors import UsageError

DEFAULT_TENANT_PATTERN = r"^(?P<tenant>[^/]+)/"
HASH_BUCKETS = 10_000


def parse_stages(text: str) -> list[float]:
    """``"10%,100%"`` -> ``[10.0, 100.0]``: strictly increasing, ending at 100%."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part.endswith("%"):
            raise UsageError(f"stage {part!r} is not a percentage", hint="e.g. --stages 10%,100%")
        try:
            val = float(part[:-1])
        except ValueError:
            raise UsageError(f"stage {part!r} is not a percentage") from None
        if not 0 < val <= 100:
            raise UsageError(f"stage {part!r} must be above 0% and at most 100%")
        if out and val <= out[-1]:
            raise UsageError(f"stages must widen: {part} after {out[-1]:g}%")
        out.append(val)
    if not out or out[-1] != 100:
        raise UsageError("the last stage must be 100%", hint="e.g. --stages 10%,100%")
    return out


def compile_tenant_pattern(pattern: str) -> int:
    """Validate ``pattern``; return the index of its ``tenant`` group."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"invalid --tenant-pattern {pattern!r}: {exc}") from None
    if "tenant" not in rx.groupindex:
        raise UsageError(
            f"--tenant-pattern {pattern!r} has no named group 'tenant'",
            hint=r"e.g. '^(?P<tenant>[^/]+)/' takes the first path segment",
        )
    return rx.groupindex["tenant"]


def extract_tenant(key: str, pattern: str) -> str:
    """The tenant of ``key``; ``""`` when the pattern does not match (last stage)."""
    m = re.search(pattern, key)
    return (m.group("tenant") or "") if m else ""


def tenant_bucket(tenant: str) -> int:
    """A stable bucket in ``[0, HASH_BUCKETS)`` for ``tenant``."""
    digest = hashlib.md5(tenant.encode("utf-8"), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % HASH_BUCKETS


def assign_stage(tenant: str, internal: frozenset[str], stages: list[float]) -> int:
    """Stage 0 for internal tenants; else the first stage whose percentage covers its bucket."""
    if tenant in internal:
        return 0
    bucket = tenant_bucket(tenant)
    for i, pct in enumerate(stages, start=1):
        if bucket < pct * HASH_BUCKETS / 100:
            return i
    return len(stages)  # unreachable: the last stage is 100%


# --- the stage gate (I10), pure --------------------------------------------------------



@dataclass(frozen=True)
class PrevStage:
    """What the journal says about stage k-1."""

    stage: int
    state: str  # not-started | running | halted | complete
    finished_at: datetime | None
    planned: int
    skipped: int


def stage_gate(stage: int, prev: PrevStage | None, *, hold: timedelta,
               max_skip_fraction: float, now: datetime) -> Check:
    """I10 without the health gate: stage k runs only after stage k-1 completed with no
    reconciliation flag, an expected skip ratio, and its hold elapsed. Stage 0 is free."""
    if stage == 0 or prev is None:
        return Check(I10, True, "stage 0 needs no previous stage")
    facts: dict[str, object] = {"previous": prev.stage, "previous_state": prev.state,
                                "hold": format_duration(hold)}
    if prev.state == "halted":
        return Check(I10, False, f"stage {prev.stage} was halted by reconciliation; every later "
                                 "stage is blocked", facts, hint="make a new plan")
    if prev.state != "complete" or prev.finished_at is None:
        return Check(I10, False, f"stage {prev.stage} is {prev.state}; stage {stage} starts only "
                                 f"after it completed", facts, hint=f"run stage {prev.stage} first")
    frac = prev.skipped / prev.planned if prev.planned else 0.0
    facts["skip_fraction"] = frac
    if frac > max_skip_fraction:
        return Check(I10, False, f"stage {prev.stage} skipped {prev.skipped} of {prev.planned} "
                                 f"objects ({frac:.2%}), above max_skip_fraction "
                                 f"{max_skip_fraction:.2%}", facts,
                     hint="find out why objects changed under the plan; then make a new plan")
    ends = prev.finished_at + hold
    facts["hold_ends_at"] = format_time(ends)
    if now < ends:
        return Check(I10, False, f"stage {prev.stage} finished at {format_time(prev.finished_at)}"
                                 f"; its hold of {format_duration(hold)} ends at "
                                 f"{format_time(ends)}", facts, hint="wait for the hold to end")
    return Check(I10, True, f"stage {prev.stage} complete, hold ended {format_time(ends)}", facts)
