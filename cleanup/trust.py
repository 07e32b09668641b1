"""The trust root in the store (I17): ``cleanup trust init|propose|sign|show|verify``.

``_cleanup/trust/root.N.json`` holds the principals, the threshold and the policy
floors (:mod:`cleanup.core.trust`); ``_cleanup/trust/root.N.sig.NAME`` are detached
SSHSIG signatures (namespace ``cleanup-trust``) over its bytes. Every version and every
signature is created with a conditional create, so at most one version N exists and no
signature is replaced. The chain is anchored by version 1's sha256, pinned in the
runner's configuration (``--trust-root``, ``CLEANUP_TRUST_ROOT`` or ``trust_root`` in
cleanup.toml): whoever can write the store still cannot make a different version 1,
and cannot make version N+1 without the threshold of version N.

Every signature check of the sign-off (author, approvals, witnesses, executor) uses an
allowed_signers file written from the verified chain into a private directory, never
a file named on the command line.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.core.names import I17
from cleanup.core.paths import RESERVED_PREFIX
from cleanup.core.timeutil import format_time, parse_time
from cleanup.core.trust import (
    ROLES,
    Floors,
    Principal,
    RootDoc,
    allowed_signers_text,
    digest,
    parse_pin,
    parse_root,
)
from cleanup.errors import SignoffError, UsageError
from cleanup.signing import NS_TRUST, sign_file, ssh_verify

if TYPE_CHECKING:
    from cleanup.stores.base import Store

TRUST_PREFIX = RESERVED_PREFIX + "trust/"
PIN_ENV = "CLEANUP_TRUST_ROOT"
MAX_VERSIONS = 10_000
_KEYTYPE = re.compile(r"^(ssh-|ecdsa-|sk-)")


def root_key(version: int) -> str:
    return f"{TRUST_PREFIX}root.{version}.json"


def sig_key(version: int, signer: str) -> str:
    return f"{TRUST_PREFIX}root.{version}.sig.{signer}"


@dataclass(frozen=True)
class VerifiedRoot:
    """The newest version of the chain whose signatures hold, and what pinned it."""

    pin: str
    version: int
    digest: str
    root: RootDoc
    pending: int | None = None  # a proposed version not (yet) signed by its thresholds
    pending_missing: tuple[str, ...] = ()
    history: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"pin": self.pin, "version": self.version, "digest": self.digest,
                "threshold": self.root.threshold, "floors": self.root.floors.to_json(),
                "principals": {n: p.to_json() for n, p in sorted(self.root.principals.items())},
                "pending": self.pending, "pending_missing": list(self.pending_missing),
                "history": list(self.history)}

    def has_role(self, name: str, role: str) -> bool:
        p = self.root.principals.get(name)
        return p is not None and role in p.roles

    @contextmanager
    def allowed_signers(self) -> Iterator[str]:
        """A private allowed_signers file of this root's principals (removed afterwards)."""
        with tempfile.TemporaryDirectory(prefix="cleanup-trust-") as d:
            path = os.path.join(d, "allowed_signers")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(allowed_signers_text(self.root))
            yield path


# ---------------------------------------------------------------------- the pin

def resolve_pin(explicit: str | None, config: str | None = None) -> str:
    """The pinned digest of version 1: ``--trust-root``, else ``CLEANUP_TRUST_ROOT``, else
    ``trust_root`` in cleanup.toml (``config`` or ./cleanup.toml). None of them: refused."""
    if explicit:
        return parse_pin(explicit)
    env = os.environ.get(PIN_ENV, "").strip()
    if env:
        return parse_pin(env)
    from cleanup.core.policy import read_config

    path = config or ("cleanup.toml" if os.path.isfile("cleanup.toml") else None)
    if path is not None:
        pin = read_config(path).get("trust_root")
        if isinstance(pin, str) and pin.strip():
            return parse_pin(pin)
    raise SignoffError(f"{I17}: no trust root is pinned",
                       hint="the runner's reviewed configuration names it: trust_root = "
                            "\"sha256:...\" in cleanup.toml, CLEANUP_TRUST_ROOT, or "
                            "--trust-root (`cleanup trust show STORE` prints it)")


# ---------------------------------------------------------------------- reading the chain

def signers_of(store: Store, version: int) -> list[str]:
    prefix = f"{TRUST_PREFIX}root.{version}.sig."
    return sorted(k[len(prefix):] for k in store.list_keys(prefix)
                  if not os.path.basename(k).startswith("."))


def _valid_signers(store: Store, version: int, data: bytes, among: RootDoc,
                   at: datetime) -> set[str]:
    """Principals of ``among`` whose signature over ``data`` (root ``version``) holds."""
    names = [n for n in signers_of(store, version) if n in among.principals]
    if not names:
        return set()
    ok: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="cleanup-trust-") as d:
        allowed = os.path.join(d, "allowed_signers")
        with open(allowed, "w", encoding="utf-8") as fh:
            fh.write(allowed_signers_text(among))
        doc = os.path.join(d, "root.json")
        with open(doc, "wb") as fh:
            fh.write(data)
        for name in names:
            sig = store.get_bytes(sig_key(version, name))
            if not sig:
                continue
            sp = os.path.join(d, f"sig.{len(ok)}.{os.getpid()}")
            with open(sp, "wb") as fh:
                fh.write(sig)
            state, _fpr, _detail = ssh_verify(doc, sp, allowed, name, NS_TRUST, at)
            if state == "valid":
                ok.add(name)
    return ok


def _first(store: Store, pin: str, now: datetime) -> tuple[RootDoc, bytes]:
    data = store.get_bytes(root_key(1))
    if data is None:
        raise SignoffError(f"{I17}: the store has no trust root (no {root_key(1)})",
                           hint="principals create it: `cleanup trust init STORE --from "
                                "allowed_signers`, then each runs `cleanup trust sign`")
    if digest(data) != pin:
        raise SignoffError(f"{I17}: trust root version 1 in the store hashes to "
                           f"{digest(data)}, the pinned one is {pin}",
                           hint="the store's trust root is not the one this runner trusts")
    root = parse_root(data, 1)
    missing = sorted(set(root.principals) - _valid_signers(store, 1, data, root, now))
    if missing:
        raise SignoffError(f"{I17}: trust root version 1 is not signed by all its "
                           f"principals (missing: {', '.join(missing)})",
                           hint="each principal runs `cleanup trust sign STORE --version 1`")
    return root, data


def verify_chain(store: Store, pin: str, now: datetime | None = None) -> VerifiedRoot:
    """Walk the chain from the pinned version 1 to the newest version its thresholds
    hold for (I17). A proposed version still short of signatures is reported as pending
    and changes nothing."""
    now = now or datetime.now(UTC)
    pin = parse_pin(pin)
    root, data = _first(store, pin, now)
    history = [digest(data)]
    pending: int | None = None
    missing_names: tuple[str, ...] = ()
    for version in range(2, MAX_VERSIONS):
        nxt = store.get_bytes(root_key(version))
        if nxt is None:
            break
        cand = parse_root(nxt, version)
        if cand.previous != digest(data):
            raise SignoffError(f"{I17}: trust root version {version} does not name version "
                               f"{version - 1}'s digest", hint="the chain is broken")
        by_old = _valid_signers(store, version, nxt, root, now)
        by_new = _valid_signers(store, version, nxt, cand, now)
        if len(by_old) < root.threshold or len(by_new) < cand.threshold:
            pending = version
            missing_names = tuple(sorted((set(root.principals) - by_old)
                                         | (set(cand.principals) - by_new)))
            break
        root, data = cand, nxt
        history.append(digest(data))
    return VerifiedRoot(pin, root.version, digest(data), root, pending, missing_names,
                        tuple(history))


def current(store: Store, pin: str | None, config: str | None = None,
            now: datetime | None = None) -> VerifiedRoot:
    """:func:`verify_chain` with the pin resolved from option, environment or config."""
    return verify_chain(store, resolve_pin(pin, config), now)


# ---------------------------------------------------------------------- writing the chain

def parse_allowed_signers(path: str, runners: tuple[str, ...] = (),
                          roles: tuple[str, ...] = ROLES) -> dict[str, Principal]:
    """Principals from an OpenSSH allowed_signers file (``trust init --from`` only)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read allowed signers file {path}: {exc}") from None
    out: dict[str, Principal] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            toks = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{n}: {exc}") from None
        names, rest = toks[0], toks[1:]
        opts = rest.pop(0) if rest and not _KEYTYPE.match(rest[0]) else ""
        if len(rest) < 2 or "*" in names or "?" in names:
            raise UsageError(f"{path}:{n}: expected NAME [OPTIONS] KEYTYPE BASE64 "
                             "(no wildcard principals)")
        key = f"{rest[0]} {rest[1]}"
        after = before = None
        for opt in (o for o in opts.split(",") if "=" in o):
            k, v = opt.split("=", 1)
            if k.lower() in ("valid-after", "valid-before"):
                t = parse_time(_ssh_to_iso(v.strip('"')))
                after, before = (t, before) if k.lower() == "valid-after" else (after, t)
        for name in names.split(","):
            r = ("runner",) if name in runners else roles
            prev = out.get(name)
            keys = (*(prev.keys if prev else ()), key)
            out[name] = Principal(name, keys, r, after, before)
    if not out:
        raise UsageError(f"{path} names no principals")
    return out


def _ssh_to_iso(v: str) -> str:
    """OpenSSH's YYYYMMDD[HHMM[SS]][Z] -> ISO 8601 (UTC)."""
    v = v.rstrip("Zz")
    v = (v + "000000")[:14]
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}T{v[8:10]}:{v[10:12]}:{v[12:14]}Z"


def _create(store: Store, version: int, root: RootDoc) -> tuple[str, bytes]:
    data = root.to_bytes()
    if not store.put_if_absent(root_key(version), data):
        have = store.get_bytes(root_key(version))
        if have != data:
            raise UsageError(f"trust root version {version} exists already in the store",
                             hint="versions are never replaced: propose the next version")
    return digest(data), data


def init_root(store: Store, principals: dict[str, Principal], *, threshold: int,
              floors: Floors, now: datetime | None = None) -> tuple[str, RootDoc]:
    """Create version 1 (conditional create); every principal then signs it."""
    if not 1 <= threshold <= len(principals):
        raise UsageError(f"--threshold must be 1..{len(principals)}")
    root = RootDoc(1, None, threshold, principals, floors,
                   format_time(now or datetime.now(UTC)))
    parse_root(root.to_bytes(), 1)  # the same rules any reader applies
    d, _data = _create(store, 1, root)
    return d, root


def propose(store: Store, pin: str, *, principals: dict[str, Principal] | None = None,
            threshold: int | None = None, floors: Floors | None = None,
            now: datetime | None = None) -> tuple[int, str, RootDoc]:
    """Create version N+1 from the verified version N with the given changes."""
    cur = verify_chain(store, pin, now)
    if cur.pending is not None:
        raise UsageError(f"version {cur.pending} is proposed and still short of signatures "
                         f"(missing: {', '.join(cur.pending_missing)})",
                         hint="sign it, or it blocks further versions")
    new_principals = principals or cur.root.principals
    root = RootDoc(cur.version + 1, cur.digest, threshold or min(
        cur.root.threshold, len(new_principals)), new_principals, floors or cur.root.floors,
        format_time(now or datetime.now(UTC)))
    parse_root(root.to_bytes(), root.version)
    d, _data = _create(store, root.version, root)
    return root.version, d, root


def sign(store: Store, version: int, signer: str, key: str) -> str:
    """Sign root ``version`` as ``signer``; the signature must verify against a key that
    version ``version`` or (for N > 1) version N-1 lists for ``signer`` before it is
    stored (a principal being removed or revoked signs with the key N-1 lists)."""
    data = store.get_bytes(root_key(version))
    if data is None:
        raise UsageError(f"the store has no trust root version {version}")
    candidates = [parse_root(data, version)]
    if version > 1:
        prev = store.get_bytes(root_key(version - 1))
        if prev is not None:
            candidates.append(parse_root(prev, version - 1))
    among = [r for r in candidates if signer in r.principals]
    if not among:
        raise UsageError(f"{signer} is not a principal of trust root version {version}"
                         + (f" or {version - 1}" if version > 1 else ""))
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="cleanup-trust-") as d:
        doc = os.path.join(d, "root.json")
        with open(doc, "wb") as fh:
            fh.write(data)
        sig = sign_file(doc, key, NS_TRUST)
        details = []
        for n, root in enumerate(among):
            allowed = os.path.join(d, f"allowed_signers.{n}")
            with open(allowed, "w", encoding="utf-8") as fh:
                fh.write(allowed_signers_text(root))
            state, _f, detail = ssh_verify(doc, sig, allowed, signer, NS_TRUST, now)
            if state == "valid":
                break
            details.append(detail)
        else:
            raise SignoffError(f"{I17}: that key does not verify as {signer}'s "
                               f"({'; '.join(details)})")
        with open(sig, "rb") as fh:
            body = fh.read()
    if not store.put_if_absent(sig_key(version, signer), body):
        raise UsageError(f"{signer} has signed trust root version {version} already")
    return sig_key(version, signer)
