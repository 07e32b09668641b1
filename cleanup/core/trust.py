"""The trust root's document and its rules (I17), pure: no clock, no file, no network.

A trust root is ``_cleanup/trust/root.N.json`` in the store: canonical JSON naming the
principals (their OpenSSH public keys, roles and key validity), the signature
threshold and the policy floors. Version 1 must be signed by every principal it
names; version N+1 by ``threshold`` principals of version N and ``threshold`` of its
own, and it names version N's digest in ``previous``. The chain is anchored by the
sha256 of version 1, pinned in the runner's configuration.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cleanup.core.canonical import canonical_json
from cleanup.core.names import I17
from cleanup.core.policy import Policy
from cleanup.core.timeutil import format_duration, format_time, parse_duration, parse_time
from cleanup.errors import SignoffError, UsageError

ROLES = ("author", "approver", "witness", "runner")
NAMESPACES = ("cleanup-plan", "cleanup-witness", "cleanup-trust", "cleanup-audit",
              "cleanup-record")
DOC_TYPE = "cleanup-trust-root"
_NAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|"
                     r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) "
                     r"[A-Za-z0-9+/=]{16,}( [^\n\r\"]{0,200})?$")
_ROOT_KEYS = frozenset({"type", "version", "previous", "threshold", "created_at", "principals",
                        "floors"})
_PIN_RE = re.compile(r"^(sha256:)?([0-9a-f]{64})$")


@dataclass(frozen=True)
class Floors:
    """What no plan may loosen, whatever a config or option says. A plan may be stricter."""

    min_approvals: int = 1
    min_buffer: timedelta = timedelta(hours=24)
    min_hold: timedelta = timedelta(hours=24)
    min_retention: timedelta = timedelta(days=7)
    max_approval_ttl: timedelta = timedelta(days=7)
    max_witness_ttl: timedelta = timedelta(minutes=60)
    max_clock_skew: timedelta = timedelta(minutes=5)
    #: I5 ceilings: a plan may delete at most these fractions (of the store; of each
    #: declared table). The defaults are the policy's defaults: a looser value in one
    #: person's config or option needs a new trust root version, not just an override.
    max_delete_fraction: float = 0.10
    max_table_delete_fraction: float = 0.95

    def to_json(self) -> dict[str, Any]:
        return {"min_approvals": self.min_approvals,
                "min_buffer": format_duration(self.min_buffer),
                "min_hold": format_duration(self.min_hold),
                "min_retention": format_duration(self.min_retention),
                "max_approval_ttl": format_duration(self.max_approval_ttl),
                "max_witness_ttl": format_duration(self.max_witness_ttl),
                "max_clock_skew": format_duration(self.max_clock_skew),
                "max_delete_fraction": self.max_delete_fraction,
                "max_table_delete_fraction": self.max_table_delete_fraction}

    @classmethod
    def from_json(cls, doc: Any) -> Floors:
        if not isinstance(doc, dict):
            raise ValueError("floors must be an object")  # noqa: TRY004 (reported as I17)
        unknown = set(doc) - set(cls().to_json())
        if unknown:
            raise ValueError(f"unknown floor(s) {sorted(unknown)}")
        base = cls()
        n = doc.get("min_approvals", base.min_approvals)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError("min_approvals must be a whole number >= 1 (two-person rule)")
        vals: dict[str, Any] = {"min_approvals": n}
        for name in ("min_buffer", "min_hold", "min_retention", "max_approval_ttl",
                     "max_witness_ttl", "max_clock_skew"):
            raw = doc.get(name)
            vals[name] = getattr(base, name) if raw is None else parse_duration(str(raw))
        for name in ("max_delete_fraction", "max_table_delete_fraction"):
            raw = doc.get(name)
            vals[name] = getattr(base, name) if raw is None else _fraction(name, raw)
        return cls(**vals)


def _fraction(name: str, raw: Any) -> float:
    try:
        val = float(raw) if not isinstance(raw, bool) else float("nan")
    except (TypeError, ValueError):
        val = float("nan")
    if not 0 < val <= 1:  # NaN fails too
        raise ValueError(f"{name} must be a fraction in (0, 1], not {raw!r}")
    return val


@dataclass(frozen=True)
class Principal:
    name: str
    keys: tuple[str, ...]
    roles: tuple[str, ...]
    valid_after: datetime | None = None
    valid_before: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "roles": list(self.roles),
                "valid_after": format_time(self.valid_after) if self.valid_after else None,
                "valid_before": format_time(self.valid_before) if self.valid_before else None}


@dataclass(frozen=True)
class RootDoc:
    version: int
    previous: str | None
    threshold: int
    principals: dict[str, Principal]
    floors: Floors = field(default_factory=Floors)
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": DOC_TYPE, "version": self.version, "previous": self.previous,
                "threshold": self.threshold, "created_at": self.created_at,
                "principals": {n: p.to_json() for n, p in sorted(self.principals.items())},
                "floors": self.floors.to_json()}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def with_role(self, role: str) -> list[str]:
        return sorted(n for n, p in self.principals.items() if role in p.roles)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_pin(pin: str) -> str:
    """``sha256:<64 hex>`` (or the bare hex) -> ``sha256:<hex>``; anything else is refused."""
    m = _PIN_RE.match(pin.strip().lower())
    if not m:
        raise UsageError(f"trust root pin {pin!r} is not sha256:<64 hex digits>",
                         hint="`cleanup trust show STORE` prints version 1's digest")
    return "sha256:" + m.group(2)


def _principal(name: str, doc: Any) -> Principal:
    if not _NAME_RE.match(name):
        raise ValueError(f"principal name {name!r} must be 1-64 of A-Z a-z 0-9 . _ @ + -")
    if not isinstance(doc, dict) or set(doc) != {"keys", "roles", "valid_after", "valid_before"}:
        raise ValueError(f"principal {name}: keys, roles, valid_after, valid_before only")
    keys = doc.get("keys")
    if not isinstance(keys, list) or not keys or not all(
            isinstance(k, str) and _KEY_RE.match(k) for k in keys):
        raise ValueError(f"principal {name}: keys must be OpenSSH public key lines")
    roles = doc.get("roles")
    if not isinstance(roles, list) or not roles or not all(r in ROLES for r in roles):
        raise ValueError(f"principal {name}: roles must be some of {', '.join(ROLES)}")
    after = doc.get("valid_after")
    before = doc.get("valid_before")
    return Principal(name, tuple(keys), tuple(sorted(set(roles))),
                     parse_time(str(after)) if after else None,
                     parse_time(str(before)) if before else None)


def _parse_root(data: bytes, version: int) -> RootDoc:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("type") != DOC_TYPE:
        raise ValueError("not a cleanup trust root")
    if set(doc) != _ROOT_KEYS:
        raise ValueError(f"holds {sorted(set(doc) ^ _ROOT_KEYS)} (fields are exactly "
                         f"{', '.join(sorted(_ROOT_KEYS))})")
    if canonical_json(doc) != data:
        raise ValueError("not in canonical form")
    if doc.get("version") != version:
        raise ValueError(f"holds version {doc.get('version')!r}, its name says {version}")
    principals = doc.get("principals")
    if not isinstance(principals, dict) or not principals:
        raise ValueError("names no principals")
    parsed = {n: _principal(n, p) for n, p in principals.items()}
    threshold = doc.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not (
            1 <= threshold <= len(parsed)):
        raise ValueError(f"threshold must be 1..{len(parsed)}")
    previous = doc.get("previous")
    if (version == 1) != (previous is None):
        raise ValueError("version 1 has no previous digest; every later one has")
    if previous is not None and not _PIN_RE.match(str(previous)):
        raise ValueError("previous must be sha256:<hex>")
    return RootDoc(version, previous, threshold, parsed,
                   Floors.from_json(doc.get("floors", {})), str(doc.get("created_at", "")))


def parse_root(data: bytes, version: int) -> RootDoc:
    """Parse and validate root ``version``'s bytes; refuse anything else (I17, exit 4)."""
    try:
        return _parse_root(data, version)
    except (ValueError, UsageError) as exc:
        msg = exc.message if isinstance(exc, UsageError) else str(exc)
        raise SignoffError(f"{I17}: trust root version {version} is invalid: {msg}",
                           hint="fix it with a new signed version; never edit one") from None


def _ssh_time(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%SZ")


def allowed_signers_text(root: RootDoc, *, role: str | None = None) -> str:
    """OpenSSH allowed_signers lines for the root's principals (optionally one role),
    with each key's validity window, so ``ssh-keygen -Y verify -O verify-time=`` refuses
    a signature made outside it."""
    lines = []
    for name, p in sorted(root.principals.items()):
        if role is not None and role not in p.roles:
            continue
        opts = [f'namespaces="{",".join(NAMESPACES)}"']
        if p.valid_after:
            opts.append(f'valid-after="{_ssh_time(p.valid_after)}"')
        if p.valid_before:
            opts.append(f'valid-before="{_ssh_time(p.valid_before)}"')
        lines += [f"{name} {','.join(opts)} {k}\n" for k in p.keys]
    return "".join(lines)


def loosened(floors: Floors, policy: Policy, *, buffer: timedelta,
             hold: timedelta) -> list[str]:
    """Each way a plan's values (its policy, with the buffer and hold it uses) are looser
    than the root's floors (empty: none). The planner refuses such a plan and
    verification fails it, from the same function."""
    min_approvals, retention = policy.min_approvals, policy.retention
    approval_ttl, witness_ttl = policy.approval_ttl, policy.witness_ttl
    max_clock_skew = policy.max_clock_skew
    out = []
    if min_approvals < max(1, floors.min_approvals):
        out.append(f"min_approvals {min_approvals} < floor {max(1, floors.min_approvals)}")
    for name, val, floor in (("buffer", buffer, floors.min_buffer),
                             ("hold", hold, floors.min_hold),
                             ("retention", retention, floors.min_retention)):
        if val < floor:
            out.append(f"{name} {format_duration(val)} < floor {format_duration(floor)}")
    for name, val, ceil in (("approval_ttl", approval_ttl, floors.max_approval_ttl),
                            ("witness_ttl", witness_ttl, floors.max_witness_ttl),
                            ("max_clock_skew", max_clock_skew, floors.max_clock_skew)):
        if val > ceil:
            out.append(f"{name} {format_duration(val)} > ceiling {format_duration(ceil)}")
    for name, frac, top in (
            ("max_delete_fraction", policy.max_delete_fraction, floors.max_delete_fraction),
            ("max_table_delete_fraction", policy.max_table_delete_fraction,
             floors.max_table_delete_fraction)):
        if frac > top:
            out.append(f"{name} {frac:g} > ceiling {top:g}")
    return out
