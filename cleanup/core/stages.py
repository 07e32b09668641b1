"""Tenant extraction and stage assignment (pure).

Stage 0 holds the internal tenants. Later stages widen by cumulative
percentages of a deterministic tenant hash, so a tenant is never split across
stages and the same tenant lands in the same stage on every machine and every
run (md5 of the UTF-8 tenant name, not Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib
import re

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
