"""``approve``, ``verify`` and ``witness``: sign-off bound to the exact plan (I6-I8).

Signatures are made and checked by ``ssh-keygen -Y`` (always with ``-n``); we
only read its verdict. ``-O verify-time=`` makes OpenSSH check the key's
``valid-after``/``valid-before`` window at the signed time (from the signed
JSON), and our own code checks the approval's age against the policy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cleanup.bundle import PlanBundle, sig_path
from cleanup.core import signoff as so
from cleanup.core.canonical import canonical_json, sha256_file
from cleanup.core.invariants import Check
from cleanup.core.names import I6, I7
from cleanup.core.timeutil import parse_time
from cleanup.errors import InvariantViolation, SignoffError, UsageError
from cleanup.model import Plan
from cleanup.model import Signature as SignatureDoc
from cleanup.model import Witness as WitnessDoc
from cleanup.signing import NS_PLAN, NS_WITNESS, sign_file, ssh_keygen

_NAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_FPR_RE = re.compile(r"key (SHA256:\S+)")


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
    signed = _read_doc(bundle.author_json).get("plan_id")
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


def _ssh_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def ssh_verify(doc_path: str, sig_path: str, allowed: str, principal: str, namespace: str,
               at: datetime | None) -> tuple[str, str | None, str]:
    """Ask ssh-keygen; return (state, key fingerprint, detail)."""
    args = [ssh_keygen(), "-Y", "verify", "-f", allowed, "-I", principal, "-n", namespace,
            "-s", sig_path]
    if at is not None:
        args += ["-O", f"verify-time={_ssh_time(at)}"]
    with open(doc_path, "rb") as fh:
        p = subprocess.run(args, stdin=fh, capture_output=True, text=True, timeout=60,
                           check=False)
    text = (p.stdout + p.stderr).strip()
    probe = text.replace(allowed, "")  # its path is in the messages: do not match on it
    fpr = _FPR_RE.search(p.stdout)
    if p.returncode == 0:
        return so.VALID, fpr.group(1) if fpr else None, "ok"
    last = [ln for ln in p.stderr.splitlines() if ln.strip() and "Could not verify" not in ln]
    detail = last[-1].strip() if last else text
    if "namespace" in probe:
        state = "wrong-namespace"
    elif "has expired" in probe:
        state = "key-expired"
    elif "not yet valid" in probe:
        state = "key-not-yet-valid"
    elif "incorrect signature" in probe:
        state = "bad-signature"
    elif "parse signature" in probe or "sshsig_armor" in probe:
        state = "malformed"
    else:
        # No principal in allowed_signers matched the key. OpenSSH 9.x says only
        # "Could not verify signature." here (older ones: "No principal matched").
        owners = _find_principals(sig_path, allowed)
        if owners:
            state, detail = "signer-mismatch", (f"the key belongs to {', '.join(owners)}, "
                                                f"not {principal}")
        else:
            state, detail = "unknown-key", (f"the signing key is not listed for {principal} "
                                            f"in {allowed}")
    return state, None, detail


def _find_principals(sig_path: str, allowed: str) -> list[str]:
    p = subprocess.run([ssh_keygen(), "-Y", "find-principals", "-s", sig_path, "-f", allowed],
                       capture_output=True, text=True, timeout=60, check=False,
                       stdin=subprocess.DEVNULL)
    return [ln.strip() for ln in p.stdout.splitlines() if ln.strip()] if p.returncode == 0 else []


def _read_doc(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _parse_time_or_none(v: Any) -> datetime | None:
    try:
        return parse_time(str(v)) if v else None
    except UsageError:
        return None


def load_signature(doc_path: str, sig_path: str, allowed: str, role: str, namespace: str,
                   expect_signer: str | None = None) -> so.Signature:
    """Read a signed JSON and ask ssh-keygen about its signature."""
    doc = _read_doc(doc_path)
    signer = str(doc.get("signer", ""))
    signed_at = _parse_time_or_none(doc.get("signed_at") or doc.get("time"))
    stage = doc.get("stage") if isinstance(doc.get("stage"), int) else None
    base = so.Signature(path=doc_path, role=role, signer=signer,
                        plan_id=str(doc.get("plan_id", "")), signed_at=signed_at,
                        crypto="malformed", comment=str(doc.get("comment", "")), stage=stage)
    if not doc or not signer or doc.get("role") != role:
        return replace(base, crypto="malformed",
                          detail=f"{os.path.basename(doc_path)} is not a {role} document")
    if expect_signer is not None and signer != expect_signer:
        return replace(base, crypto="malformed",
                          detail=f"file is named for {expect_signer} but signed by {signer}")
    if not os.path.isfile(sig_path):
        return replace(base, crypto="malformed", detail=f"{sig_path} is missing")
    state, fpr, detail = ssh_verify(doc_path, sig_path, allowed, signer, namespace, signed_at)
    return replace(base, crypto=state, fingerprint=fpr, detail=detail)


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


def verify_bundle(bundle: PlanBundle, allowed: str, now: datetime | None = None) -> VerifyReport:
    """:func:`verify_plan` of an opened bundle."""
    _check_allowed(allowed)
    now = now or datetime.now(UTC)
    plan, plan_id = bundle.plan, bundle.plan_id
    check = integrity(bundle)
    policy = plan.policy
    author_name = plan.author
    author = None
    if os.path.exists(bundle.author_json):
        raw = load_signature(bundle.author_json, bundle.author_sig, allowed, "author", NS_PLAN,
                             expect_signer=author_name)
        author = so.classify(raw, plan_id=plan_id, author=author_name, author_fingerprint=None,
                             now=now, ttl=policy.approval_ttl, max_skew=policy.max_clock_skew)
    author_fpr = author.fingerprint if author and author.state == so.VALID else None
    approvals = []
    for name, doc_path in bundle.approvals():
        raw = load_signature(doc_path, sig_path(doc_path), allowed, "approver", NS_PLAN,
                             expect_signer=name)
        approvals.append(so.classify(raw, plan_id=plan_id, author=author_name,
                                     author_fingerprint=author_fpr, now=now,
                                     ttl=policy.approval_ttl, max_skew=policy.max_clock_skew))
    i7 = so.two_person(author, approvals, policy.min_approvals)
    return VerifyReport(plan_id, plan, check, author, approvals, i7, bundle)


def require_verified(plan_dir: str, allowed: str, now: datetime | None = None) -> VerifyReport:
    """Raise unless I6 and I7 hold: I6 exits 3, I7 exits 4."""
    rep = verify_plan(plan_dir, allowed, now)
    if not rep.integrity.ok:
        rep.integrity.raise_if_failed()
    if not rep.two_person.ok:
        raise SignoffError(f"{I7}: {rep.two_person.detail}", hint=rep.two_person.hint)
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
                     details: dict[str, Any], endpoint_url: str | None = None) -> str | None:
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
    return audit.try_append(store, event, plan_id=plan_id, principal=principal, details=details)


def approve(plan_dir: str, signer: str, key: str, comment: str = "",
            now: datetime | None = None) -> tuple[str, str]:
    """Sign the plan as an approver; return (plan_id, path of the approval JSON)."""
    _check_name(signer)
    plan, plan_id, integrity = check_integrity(plan_dir)
    integrity.raise_if_failed()
    if signer == plan.author:
        raise SignoffError(f"{signer} is the plan's author: self-approval does not count",
                           hint="a second engineer must approve")
    now = now or datetime.now(UTC)
    doc = SignatureDoc(plan_id, signer, now, "approver", comment).to_json()
    path = PlanBundle.layout(plan_dir).approval_json(signer)
    _write_signed(doc, path, key, NS_PLAN)
    return plan_id, path


def witness(plan_dir: str, stage: int, signer: str, key: str,
            now: datetime | None = None) -> tuple[str, str]:
    """Sign {plan id, stage, signer, time} in namespace cleanup-witness (I8)."""
    _check_name(signer)
    plan, plan_id, integrity = check_integrity(plan_dir)
    integrity.raise_if_failed()
    stages = [s.stage for s in plan.stages]
    if stage not in stages:
        raise UsageError(f"plan has no stage {stage} (stages: {stages})")
    now = now or datetime.now(UTC)
    doc = WitnessDoc(plan_id, stage, signer, now).to_json()
    path = PlanBundle.layout(plan_dir).witness_json(stage, signer)
    _write_signed(doc, path, key, NS_WITNESS)
    return plan_id, path


def check_presence(plan_dir: str, stage: int, executor: str, allowed: str,
                   now: datetime | None = None) -> tuple[Check, list[so.Signature]]:
    """I8 for the executor: a valid witness of ``stage`` by another principal, fresh enough."""
    _check_allowed(allowed)
    now = now or datetime.now(UTC)
    with PlanBundle.open(plan_dir) as bundle:
        plan, plan_id = bundle.plan, bundle.plan_id
    policy = plan.policy
    found = []
    for name, doc_path in bundle.witnesses(stage):
        raw = load_signature(doc_path, sig_path(doc_path), allowed, "witness",
                             NS_WITNESS, expect_signer=name)
        found.append(so.classify(raw, plan_id=plan_id, author=plan.author,
                                 author_fingerprint=None, now=now, ttl=policy.witness_ttl,
                                 max_skew=policy.max_clock_skew, stage=stage,
                                 executor=executor))
    return so.presence(found, stage), found
