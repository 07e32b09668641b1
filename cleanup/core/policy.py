"""Policy values (SPEC.md) with their defaults and floors.

Every value used is recorded in plan.json. ``min_buffer`` and ``min_hold`` have
floors that can be lowered only with an explicit ``override_minimums``, which
is recorded in the plan and shown first to reviewers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from typing import Any

from cleanup.core.names import I1, I7, I10
from cleanup.core.timeutil import format_duration, parse_duration
from cleanup.errors import InvariantViolation, UsageError

FLOOR_MIN_BUFFER = timedelta(hours=24)
FLOOR_MIN_HOLD = timedelta(hours=24)

_DURATIONS = {
    "min_buffer", "min_hold", "approval_ttl", "witness_ttl", "max_clock_skew", "retention",
}
_FRACTIONS = {"max_missing_refs", "max_delete_fraction", "max_skip_fraction",
              "max_table_delete_fraction"}
_COUNTS = {"min_approvals", "probe_sample", "max_foreign_refs"}


@dataclass(frozen=True)
class Policy:
    min_buffer: timedelta = FLOOR_MIN_BUFFER
    min_hold: timedelta = FLOOR_MIN_HOLD
    max_missing_refs: float = 0.001
    max_foreign_refs: int = 0
    max_delete_fraction: float = 0.10
    max_skip_fraction: float = 0.01
    min_approvals: int = 1
    approval_ttl: timedelta = timedelta(days=7)
    witness_ttl: timedelta = timedelta(minutes=60)
    max_clock_skew: timedelta = timedelta(minutes=5)
    retention: timedelta = timedelta(days=7)
    probe_sample: int = 1000
    #: I5 per table root declared by a table source: candidates over the table's data
    #: files (outside ``_delta_log/``, ``metadata/`` and hidden paths), objects and bytes
    max_table_delete_fraction: float = 0.95

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out[k] = format_duration(v) if isinstance(v, timedelta) else v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls().with_values(data)

    def with_values(self, values: dict[str, Any]) -> Policy:
        """Return a copy with ``values`` applied, validated; unknown names are refused."""
        known = {f.name for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, raw in values.items():
            if name not in known:
                raise UsageError(
                    f"unknown policy value {name!r}", hint=f"known: {', '.join(sorted(known))}"
                )
            if name in _DURATIONS:
                changes[name] = raw if isinstance(raw, timedelta) else parse_duration(str(raw))
            elif name in _FRACTIONS:
                try:
                    val = float(raw)
                except (TypeError, ValueError):
                    raise UsageError(f"policy {name} must be a number, got {raw!r}") from None
                if not 0.0 <= val <= 1.0:
                    raise UsageError(f"policy {name} must be between 0 and 1, got {val}")
                changes[name] = val
            elif name in _COUNTS:
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                    raise UsageError(f"policy {name} must be a whole number >= 0, got {raw!r}")
                changes[name] = raw
        return replace(self, **changes)

    def differences(self) -> list[str]:
        """``name = value (default d)`` for every value that is not the default: a config
        value is an override too, listed for reviewers (no config loosens silently)."""
        base = Policy().to_json()
        return [f"{k} = {v} (default {base[k]})" for k, v in self.to_json().items()
                if v != base[k]]

    def check_floors(self, override_minimums: bool) -> list[str]:
        """Names of the floors this policy lowers; refuse unless overridden explicitly."""
        lowered = []
        if self.min_buffer < FLOOR_MIN_BUFFER:
            lowered.append(
                f"min_buffer {format_duration(self.min_buffer)} < floor "
                f"{format_duration(FLOOR_MIN_BUFFER)}"
            )
        if self.min_hold < FLOOR_MIN_HOLD:
            lowered.append(
                f"min_hold {format_duration(self.min_hold)} < floor "
                f"{format_duration(FLOOR_MIN_HOLD)}"
            )
        if lowered and not override_minimums:
            raise InvariantViolation(
                I1 if self.min_buffer < FLOOR_MIN_BUFFER else I10,
                "policy lowers a minimum: " + "; ".join(lowered),
                hint="pass --override-minimums to record the override in the plan for reviewers",
            )
        return lowered


CONFIG_KEYS = frozenset({"policy", "trust_root", "audit", "residency", "job"})  # job: jobs.py


def read_config(path: str) -> dict[str, Any]:
    """A cleanup.toml as a table: ``[policy]``, ``trust_root`` (the pinned digest of the
    trust root's version 1) and ``[audit]`` (``anchor``); unknown keys are refused."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"config {path}: {exc.strerror}") from None
    unknown = set(doc) - CONFIG_KEYS
    if unknown:
        raise UsageError(f"config {path}: unknown table(s) {sorted(unknown)}",
                         hint="policy values go under [policy]; also allowed: trust_root, "
                              "[audit]")
    return doc


def load_policy_file(path: str) -> tuple[Policy, dict[str, Any]]:
    """Read ``[policy]`` from a cleanup.toml; validate every value; refuse unknown keys."""
    doc = read_config(path)
    values = doc.get("policy", {})
    if not isinstance(values, dict):
        raise UsageError(f"config {path}: [policy] must be a table")
    if values.get("min_approvals") == 0:
        raise InvariantViolation(I7, f"config {path}: min_approvals = 0: at least one approval "
                                     "by another principal is always needed",
                                 hint="min_approvals >= 1; no config can waive the two-person "
                                      "rule")
    try:
        return Policy().with_values(values), values
    except UsageError as exc:
        raise UsageError(f"config {path}: {exc.message}", hint=exc.hint) from None
