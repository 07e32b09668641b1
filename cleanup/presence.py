"""Presence (I8, I18): a witness signs the challenge that a running action publishes.

When ``execute`` or ``purge`` starts, the runner publishes a challenge in the store
(``_cleanup/plans/<id>/challenges/ACTION.STAGE.NONCE.json``: nonce, plan id, stage,
action, the audit head it saw, the runner). A second principal, present, signs exactly
that challenge with ``cleanup witness`` (namespace ``cleanup-witness``); the signature is
published beside it. The runner accepts the witness only if it is by another principal
with the witness role, recorded by the store within ``witness_ttl`` and within
``max_clock_skew`` of its signed time, and then consumes the challenge with a
conditional create and one audit entry: a witness is never good for another action,
stage or run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup.core import signoff as so
from cleanup.core.canonical import canonical_json
from cleanup.core.names import I8
from cleanup.core.timeutil import format_duration, format_time
from cleanup.errors import SignoffError, UsageError
from cleanup.published import Published, Record
from cleanup.signing import NS_WITNESS, load_signature, sign_bytes

if TYPE_CHECKING:
    from cleanup.model import Plan
    from cleanup.stores.base import Store
    from cleanup.trust import VerifiedRoot


@dataclass(frozen=True)
class Witnessed:
    """A valid witness of an open challenge, ready to be consumed."""

    challenge: str
    witness: str
    signature: so.Signature


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def open_challenges(pub: Published, action: str, stage: int, now: datetime,
                    ttl: timedelta, used: Collection[str] = ()) -> list[tuple[str, Record]]:
    """Unconsumed challenges of (action, stage) recorded within ``ttl``, newest first. A
    challenge is consumed if its ``.consumed`` record exists or an audit entry says so
    (``used``): removing the record does not make a witness good again."""
    out = []
    for name in reversed(pub.challenges(action, stage)):
        rec = pub.get("challenges", f"{name}.json")
        if rec is None or name in used or pub.consumed(name) is not None:
            continue
        if now - rec.recorded_at <= ttl:
            out.append((name, rec))
    return out


def _check_witness(pub: Published, name: str, challenge: Record, signer: str,
                   allowed: str, plan: Plan, trust: VerifiedRoot, *, executor: str,
                   now: datetime) -> so.Signature:
    """Verify one published witness signature of challenge ``name``."""
    doc_rec = pub.get("challenges", f"{name}.witness.{signer}.json")
    sig_rec = pub.get("challenges", f"{name}.witness.{signer}.sig")
    with tempfile.TemporaryDirectory(prefix="cleanup-witness-") as d:
        doc_path, sig_path = os.path.join(d, "w.json"), os.path.join(d, "w.sig")
        for path, rec in ((doc_path, doc_rec), (sig_path, sig_rec)):
            if rec is not None:
                with open(path, "wb") as fh:
                    fh.write(rec.data)
        raw = load_signature(doc_path, sig_path, allowed, "witness", NS_WITNESS,
                             expect_signer=signer,
                             recorded_at=doc_rec.recorded_at if doc_rec else None)
    doc = doc_rec.doc() if doc_rec else {}
    cdoc = challenge.doc()
    if raw.crypto == so.VALID and (doc.get("challenge_sha256") != _sha(challenge.data)
                                   or doc.get("nonce") != cdoc.get("nonce")
                                   or doc.get("action") != cdoc.get("action")):
        raw = replace(raw, crypto="malformed",
                      detail="signs another challenge (nonce, action or digest differ)")
    policy = plan.policy
    return so.classify(raw, plan_id=pub.plan_id, author=plan.author, author_fingerprint=None,
                       now=now, ttl=policy.witness_ttl, max_skew=policy.max_clock_skew,
                       stage=cdoc.get("stage") if isinstance(cdoc.get("stage"), int) else None,
                       executor=executor, store_time=True,
                       plan_created=plan.created_at.time,
                       has_role=trust.has_role(signer, "witness"))


def find_witness(pub: Published, action: str, stage: int, plan: Plan, trust: VerifiedRoot,
                 allowed: str, *, executor: str, now: datetime,
                 used: Collection[str] = ()) -> tuple[Witnessed | None, list[so.Signature]]:
    """The newest open challenge's valid witness, if any, and every signature looked at."""
    seen: list[so.Signature] = []
    for name, rec in open_challenges(pub, action, stage, now, plan.policy.witness_ttl, used):
        prefix = f"{name}.witness."
        signers = sorted({n[len(prefix):-len(".json")] for n in pub.names("challenges")
                          if n.startswith(prefix) and n.endswith(".json")})
        for signer in signers:
            sig = _check_witness(pub, name, rec, signer, allowed, plan, trust,
                                 executor=executor, now=now)
            seen.append(sig)
            if sig.state == so.VALID:
                return Witnessed(name, signer, sig), seen
    return None, seen


def require_witness(pub: Published, action: str, stage: int, plan: Plan, trust: VerifiedRoot,
                    allowed: str, *, executor: str, audit_head: str, now: datetime,
                    wait: float = 0.0, clock: Any = None,
                    used: Collection[str] = ()) -> Witnessed:
    """I8: a valid witness of a challenge of this action and stage; publish a challenge
    (once) and wait up to ``wait`` seconds for it, else refuse (exit 4)."""
    deadline = time.monotonic() + wait
    published: str | None = None
    while True:
        found, seen = find_witness(pub, action, stage, plan, trust, allowed,
                                   executor=executor, now=now, used=used)
        if found is not None:
            return found
        if published is None:
            # Reuse this runner's open challenge while nobody has signed it; once a
            # signature is there (and did not count), a fresh challenge is published.
            signed = {n.split(".witness.")[0] for n in pub.names("challenges")
                      if ".witness." in n}
            mine = [n for n, rec in open_challenges(pub, action, stage, now,
                                                    plan.policy.witness_ttl, used)
                    if rec.doc().get("executor") == executor and n not in signed]
            published = mine[0] if mine else pub.open_challenge(action, stage, {
                "executor": executor, "audit_head": audit_head, "created_at": format_time(now)})
        if time.monotonic() >= deadline:
            why = "; ".join(f"{s.signer}: {s.state} ({s.detail})" for s in seen)
            raise SignoffError(
                f"{I8}: no valid witness yet for {action} of stage {stage} (challenge "
                f"{published} is open for {format_duration(plan.policy.witness_ttl)})"
                + (f"; {why}" if why else ""),
                hint=f"a second principal, present now, runs `cleanup witness PLAN_DIR "
                     f"--stage {stage}" + (f" --action {action}" if action != "execute" else "")
                     + " --signer NAME --key KEY`; then run this command again (or pass "
                       "--wait 10m)")
        time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))
        if clock is not None:
            now = clock()


def consume(pub: Published, found: Witnessed, *, executor: str, audit_head: str,
            now: datetime) -> None:
    """Mark the challenge used (conditional create): a second consumer is refused."""
    doc = {"type": "cleanup-challenge-consumed", "challenge": found.challenge,
           "witness": found.witness, "executor": executor, "audit_head": audit_head,
           "time": format_time(now)}
    if not pub.store.put_if_absent(pub.key("challenges", f"{found.challenge}.consumed"),
                                   canonical_json(doc)):
        raise SignoffError(f"{I8}: challenge {found.challenge} was consumed already; a "
                           "witness counts for one action only",
                           hint="run the command again: it publishes a new challenge")


def sign_challenge(store: Store, plan_id: str, stage: int, action: str, signer: str,
                   key: str, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """``cleanup witness``: sign the newest open challenge of (action, stage) and publish
    the signature beside it. Returns (challenge name, the signed document)."""
    pub = Published(store, plan_id)
    now = now or datetime.now(UTC)
    mine = {n.split(".witness.")[0] for n in pub.names("challenges")
            if n.endswith(f".witness.{signer}.json")}
    names = [n for n in reversed(pub.challenges(action, stage))
             if pub.consumed(n) is None and n not in mine]
    if not names:
        raise SignoffError(f"{I8}: no open {action} challenge for stage {stage} of plan "
                           f"{plan_id[:16]}...",
                           hint="the runner publishes one when it starts the "
                                f"{action}; witness while it waits")
    name = names[0]
    rec = pub.get("challenges", f"{name}.json")
    if rec is None:
        raise UsageError(f"challenge {name} vanished")
    cdoc = rec.doc()
    doc = {"type": "cleanup-witness", "role": "witness", "plan_id": plan_id, "stage": stage,
           "action": action, "nonce": cdoc.get("nonce"), "challenge_sha256": _sha(rec.data),
           "audit_head": cdoc.get("audit_head"), "executor": cdoc.get("executor"),
           "signer": signer, "signed_at": format_time(now)}
    data = canonical_json(doc)
    sig = sign_bytes(data, key, NS_WITNESS)
    pub.create(("challenges", f"{name}.witness.{signer}.sig"), sig)
    pub.create(("challenges", f"{name}.witness.{signer}.json"), data)
    return name, doc
