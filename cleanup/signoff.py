"""``approve``, ``verify`` and ``witness``: sign-off bound to the exact plan (I6-I8).

Signatures are made and checked by ``ssh-keygen -Y`` (always with ``-n``); we
only read its verdict. ``-O verify-time=`` makes OpenSSH check the key's
``valid-after``/``valid-before`` window at the signed time (from the signed
JSON), and our own code checks the approval's age against the policy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cleanup.bundle import PlanBundle, sig_path
from cleanup.core import signoff as so
from cleanup.core.canonical import canonical_json, sha256_file
from cleanup.core.invariants import Check
from cleanup.core.names import I6
from cleanup.errors import InvariantViolation, SignoffError, UsageError
from cleanup.model import Plan
from cleanup.model import Signature as SignatureDoc
from cleanup.signing import NS_PLAN, load_signature, read_doc, sign_file

if TYPE_CHECKING:
    from cleanup.stores.base import Store
    from cleanup.trust import VerifiedRoot

_NAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(f"principal name {name!r} must be 1-64 of A-Z a-z 0-9 . _ @ + -")
    return name


def _check_allowed(path: str) -> str:
    if not os.path.isfile(path):
        raise UsageError(f"allowed signers file {path} does not exist",
                         hint="one line per principal: NAME namespaces=\"cleanup-plan,"
                              "cleanup-witness\" ssh-ed25519 AAAA... (see ssh-keygen(1), "
                              "ALLOWED SIGNERS)")
    return path


def open_for_integrity(plan_dir: str) -> PlanBundle:
    """Open ``plan_dir``; a plan.json that no longer reads as a plan is refused (I6)."""
    layout = PlanBundle.layout(plan_dir)
    try:
        return PlanBundle.open(plan_dir)
    except UsageError as exc:
        if not os.path.isfile(layout.plan_json):
            raise
        raise InvariantViolation(I6, f"plan.json cannot be read as a plan ({exc.message})",
                                 hint="a changed plan needs a new plan and new sign-off") from None


def integrity(bundle: PlanBundle) -> Check:
    """I6: plan id = sha256(plan.json) is the id the author signed; the manifest and
    present inputs match their digests."""
    plan_id = bundle.plan_id
    problems = []
    signed = read_doc(bundle.author_json).get("plan_id")
    if signed is not None and signed != plan_id:
        problems.append(f"plan.json changed since the author signed it (signed plan "
                        f"{str(signed)[:16]}..., plan.json now hashes to {plan_id[:16]}...)")
    manifest_state = bundle.manifest_state
    if manifest_state == "missing":
        problems.append("manifest.parquet is missing")
    elif manifest_state == "changed":
        problems.append("manifest.parquet does not match the sha256 in plan.json")
    inputs_state = {}
    for name, (path, sha) in sorted(bundle.plan.inputs.files().items()):
        if path and os.path.isfile(path):
            same = sha256_file(path) == sha
            inputs_state[name] = "matches" if same else "changed"
            if not same:
                problems.append(f"input {name} {path} changed since planning")
        else:
            inputs_state[name] = "not present here (not checked)"
    facts = {"plan_id": plan_id, "manifest": manifest_state, "inputs": inputs_state}
    if problems:
        return Check(I6, False, "; ".join(problems), facts,
                     hint="a changed plan needs a new plan and new sign-off")
    return Check(I6, True, f"plan {plan_id} intact", facts)


def check_integrity(plan_dir: str) -> tuple[Plan, str, Check]:
    """I6 for ``plan_dir``: (plan, plan id, check)."""
    with open_for_integrity(plan_dir) as bundle:
        return bundle.plan, bundle.plan_id, integrity(bundle)


@dataclass(frozen=True)
class VerifyReport:
    plan_id: str
    plan: Plan
    integrity: Check
    author: so.Signature | None
    approvals: list[so.Signature]
    two_person: Check
    bundle: PlanBundle | None = None  # the bundle checked: later reads use its manifest

    @property
    def ok(self) -> bool:
        return self.integrity.ok and self.two_person.ok

    def to_json(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "ok": self.ok, "integrity": self.integrity.to_json(),
                "author": self.author.to_json() if self.author else None,
                "approvals": [a.to_json() for a in self.approvals],
                "two_person": self.two_person.to_json()}


def verify_plan(plan_dir: str, allowed: str, now: datetime | None = None) -> VerifyReport:
    """Check I6 and I7 for ``plan_dir`` against ``allowed`` (an allowed_signers file)."""
    _check_allowed(allowed)
    return verify_bundle(open_for_integrity(plan_dir), allowed, now)


def verify_bundle(bundle: PlanBundle, allowed: str, now: datetime | None = None,
                  trust: VerifiedRoot | None = None) -> VerifyReport:
    """:func:`verify_plan` of an opened bundle. With ``trust`` (a bundle read from the
    store, ``allowed`` written from the verified root): roles come from the root,
    approvals count from the store's record time (I18), and the plan's policy may not be
    looser than the root's floors (I17)."""
    _check_allowed(allowed)
    now = now or datetime.now(UTC)
    plan, plan_id = bundle.plan, bundle.plan_id
    check = integrity(bundle)
    policy = plan.policy
    author_name = plan.author
    author = None
    created = plan.created_at.time if trust is not None else None
    if os.path.exists(bundle.author_json):
        raw = load_signature(bundle.author_json, bundle.author_sig, allowed, "author", NS_PLAN,
                             expect_signer=author_name)
        author = so.classify(raw, plan_id=plan_id, author=author_name, author_fingerprint=None,
                             now=now, ttl=policy.approval_ttl, max_skew=policy.max_clock_skew,
                             has_role=trust is None or trust.has_role(author_name, "author"))
    author_fpr = author.fingerprint if author and author.state == so.VALID else None
    approvals = []
    for name, doc_path in bundle.approvals():
        recorded = bundle.record_times.get(doc_path) if trust is not None else None
        raw = load_signature(doc_path, sig_path(doc_path), allowed, "approver", NS_PLAN,
                             expect_signer=name, recorded_at=recorded)
        approvals.append(so.classify(
            raw, plan_id=plan_id, author=author_name, author_fingerprint=author_fpr, now=now,
            ttl=policy.approval_ttl, max_skew=policy.max_clock_skew,
            store_time=trust is not None, plan_created=created,
            has_role=trust is None or trust.has_role(name, "approver")))
    need = max(1, policy.min_approvals)
    if trust is not None:
        need = max(need, trust.root.floors.min_approvals)
    i7 = so.two_person(author, approvals, need)
    if trust is not None and i7.ok:
        i7 = _within_floors(plan, trust) or i7
    return VerifyReport(plan_id, plan, check, author, approvals, i7, bundle)


def _within_floors(plan: Plan, trust: VerifiedRoot) -> Check | None:
    """I17: the plan was made under this chain, and no value is looser than its floors."""
    from cleanup.core.names import I17
    from cleanup.core.trust import loosened

    if plan.trust is None or plan.trust.digest not in trust.history:
        return Check(I17, False, "the plan names no trust root of this chain "
                                 f"({plan.trust.digest if plan.trust else 'none recorded'})",
                     {}, hint="make the plan with the pinned trust root (--trust-root or "
                              "trust_root in cleanup.toml)")
    p = plan.policy
    problems = loosened(trust.root.floors, p, buffer=plan.buffer, hold=plan.hold)
    if problems:
        return Check(I17, False, "the plan is looser than the trust root's floors: "
                                 + "; ".join(problems), {},
                     hint="re-plan within the floors, or the principals raise them in a new "
                          "trust root version")
    return None


def require_verified(plan_dir: str, allowed: str, now: datetime | None = None) -> VerifyReport:
    """Raise unless I6 and I7 hold: I6 exits 3, I7 exits 4."""
    return require_report(verify_plan(plan_dir, allowed, now))


def require_report(rep: VerifyReport) -> VerifyReport:
    """Raise unless the report's I6 and I7 (and I17) hold: I6 exits 3, the others 4."""
    if not rep.integrity.ok:
        rep.integrity.raise_if_failed()
    if not rep.two_person.ok:
        name = rep.two_person.invariant
        raise SignoffError(f"{name}: {rep.two_person.detail}", hint=rep.two_person.hint)
    return rep


def _write_signed(doc: dict[str, Any], doc_path: str, key: str, namespace: str) -> None:
    """Write ``doc`` and its signature atomically: both appear, or neither."""
    os.makedirs(os.path.dirname(doc_path), exist_ok=True)
    tmp = doc_path + f".tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(canonical_json(doc))
    try:
        sig = sign_file(tmp, key, namespace)
        os.replace(sig, sig_path(doc_path))
        os.replace(tmp, doc_path)
    finally:
        for p in (tmp, tmp + ".sig"):
            if os.path.exists(p):
                os.unlink(p)


def audit_plan_event(plan: Plan, event: str, *, plan_id: str, principal: str,
                     details: dict[str, Any], endpoint_url: str | None = None,
                     key: str | None = None) -> str | None:
    """Append to the plan's store's audit log; return a warning if that was not possible.

    Reviewers may sign on a machine without access to the store, so a missing
    store is a warning here; the executor audits the sign-off it relies on.
    """
    from cleanup import audit
    from cleanup.errors import CleanupError
    from cleanup.stores import open_store

    try:
        store = open_store(plan.store, endpoint_url=endpoint_url,
                           region=plan.region if plan.store.startswith("s3") else None)
    except CleanupError as exc:
        return f"warning: audit entry {event!r} not written: {exc.message}"
    return audit.try_append(store, event, plan_id=plan_id, principal=principal, details=details,
                            key=key)


def _seen_head(plan: Plan, endpoint_url: str | None) -> str | None:
    """The plan's store's audit head (``SEQ:SHA256``), or None if the store cannot be read
    from here (an offline approval is published later)."""
    from cleanup import audit
    from cleanup.errors import CleanupError

    try:
        head = audit.read_head(_plan_store(plan, endpoint_url))
    except (CleanupError, OSError):
        return None
    return f"{head[0]}:{head[1]}" if head is not None and head[0] > 0 else None


def approve(plan_dir: str, signer: str, key: str, comment: str = "",
            now: datetime | None = None,
            endpoint_url: str | None = None) -> tuple[str, str]:
    """Sign the plan as an approver; return (plan_id, path of the approval JSON)."""
    _check_name(signer)
    plan, plan_id, integrity = check_integrity(plan_dir)
    integrity.raise_if_failed()
    if signer == plan.author:
        raise SignoffError(f"{signer} is the plan's author: self-approval does not count",
                           hint="a second engineer must approve")
    now = now or datetime.now(UTC)
    doc = SignatureDoc(plan_id, signer, now, "approver", comment,
                       audit_head=_seen_head(plan, endpoint_url)).to_json()
    path = PlanBundle.layout(plan_dir).approval_json(signer)
    _write_signed(doc, path, key, NS_PLAN)
    return plan_id, path


def _plan_store(plan: Plan, endpoint_url: str | None) -> Store:
    from cleanup.stores import open_store

    return open_store(plan.store, endpoint_url=endpoint_url,
                      region=plan.region if plan.store.startswith("s3") else None)


def publish(plan_dir: str, endpoint_url: str | None = None) -> tuple[str, list[str]]:
    """Publish the plan, its manifest and every signature of ``plan_dir`` to the plan's
    store (``_cleanup/plans/<plan-id>/``); return (plan id, what was new)."""
    from cleanup.published import Published

    plan, plan_id, check = check_integrity(plan_dir)
    check.raise_if_failed()
    return plan_id, Published(_plan_store(plan, endpoint_url), plan_id).publish_dir(plan_dir)


def fetch(store_url: str, plan_id: str, out: str, endpoint_url: str | None = None,
          region: str | None = None) -> str:
    """Copy a published plan into a new local directory ``out`` (a reviewer's cache):
    plan.json must hash to ``plan_id`` and the manifest match plan.json (I6)."""
    import shutil

    from cleanup.published import Published, check_plan_id
    from cleanup.stores import open_store

    check_plan_id(plan_id)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"{out} already exists and is not empty")
    store = open_store(store_url, endpoint_url=endpoint_url, region=region)
    tmp = out.rstrip("/") + f".fetch-{os.getpid()}"
    try:
        Published(store, plan_id).fetch(tmp)
        with PlanBundle.open(tmp) as bundle:
            integrity(bundle).raise_if_failed()
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def witness(plan_dir: str, stage: int, signer: str, key: str, action: str = "execute",
            endpoint_url: str | None = None,
            now: datetime | None = None) -> tuple[str, str, dict[str, Any]]:
    """I8: sign the challenge the runner published for (action, stage) in the store.
    Returns (plan id, challenge name, the signed document)."""
    from cleanup.presence import sign_challenge

    _check_name(signer)
    plan, plan_id, integrity = check_integrity(plan_dir)
    integrity.raise_if_failed()
    stages = [s.stage for s in plan.stages]
    if stage not in stages:
        raise UsageError(f"plan has no stage {stage} (stages: {stages})")
    name, doc = sign_challenge(_plan_store(plan, endpoint_url), plan_id, stage, action,
                               signer, key, now)
    return plan_id, name, doc
