"""Two-person sign-off (I7) and presence (I8), as pure decisions.

OpenSSH (``ssh-keygen -Y verify``) decides whether a signature is
cryptographically valid for a principal in allowed_signers; this module
decides what the signature is worth: is it over this plan, by whom, how old,
and do the valid ones add up to I7 or I8. SSHSIG carries no time of its own,
so every age here comes from the ``signed_at``/``time`` inside the signed JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cleanup.core.invariants import Check
from cleanup.core.names import I7, I8, I18
from cleanup.core.timeutil import format_duration, format_time

VALID = "valid"
# States a signature can be in, besides "valid". The first group comes from ssh-keygen.
CRYPTO_STATES = ("bad-signature", "unknown-key", "wrong-namespace", "key-expired",
                 "key-not-yet-valid", "signer-mismatch", "malformed")
STATES = (VALID, *CRYPTO_STATES, "plan-changed", "self-approval", "expired", "from-the-future",
          "wrong-stage", "is-executor", "not-recorded", "clock-disagrees", "predates-plan",
          "no-role")


@dataclass(frozen=True)
class Signature:
    """One signature file and what is known about it.

    ``crypto`` is ``"valid"`` when ssh-keygen verified it for ``signer`` in the
    namespace, else one of :data:`CRYPTO_STATES`. ``state`` is the final verdict
    (:func:`classify` fills it in).
    """

    path: str
    role: str  # author | approver | witness
    signer: str
    plan_id: str
    signed_at: datetime | None
    crypto: str
    fingerprint: str | None = None
    comment: str = ""
    stage: int | None = None
    detail: str = ""
    state: str = ""
    #: when the store recorded it (server Last-Modified); None when read from a local file
    recorded_at: datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "role": self.role, "signer": self.signer,
                "plan_id": self.plan_id, "stage": self.stage,
                "signed_at": format_time(self.signed_at) if self.signed_at else None,
                "fingerprint": self.fingerprint, "comment": self.comment,
                "recorded_at": format_time(self.recorded_at) if self.recorded_at else None,
                "state": self.state, "detail": self.detail}


def classify(sig: Signature, *, plan_id: str, author: str, author_fingerprint: str | None,
             now: datetime, ttl: timedelta, max_skew: timedelta,
             stage: int | None = None, executor: str | None = None,
             store_time: bool = False, plan_created: datetime | None = None,
             has_role: bool = True) -> Signature:
    """The final state of ``sig``: the first reason it does not count, or ``valid``.

    With ``store_time`` (I18) the signature counts from the store's record time, which
    must agree with its signed time within ``max_skew``; and neither may predate the
    plan's creation (``plan_created``).
    """

    def out(state: str, detail: str) -> Signature:
        return replace(sig, state=state, detail=detail)

    if sig.crypto != VALID:
        return out(sig.crypto, sig.detail or f"ssh-keygen: {sig.crypto}")
    if sig.plan_id != plan_id:
        return out("plan-changed", f"signed plan {sig.plan_id[:16]}..., this plan is "
                                   f"{plan_id[:16]}... (plan.json changed, or the signature "
                                   "was copied from another plan)")
    if sig.signed_at is None:
        return out("malformed", "no signed time in the signed JSON")
    if not has_role:
        return out("no-role", f"{sig.signer} has no {sig.role} role in the trust root")
    if store_time:
        if sig.recorded_at is None:
            return out("not-recorded", "not published in the store")
        if abs(sig.recorded_at - sig.signed_at) > max_skew:
            return out("clock-disagrees", f"{I18}: signed_at {format_time(sig.signed_at)} but "
                                          f"recorded by the store at "
                                          f"{format_time(sig.recorded_at)}")
    if plan_created is not None and min(sig.signed_at, sig.recorded_at or sig.signed_at) \
            < plan_created - max_skew:
        return out("predates-plan", f"{I18}: signed at {format_time(sig.signed_at)}, before "
                                    f"the plan was made ({format_time(plan_created)})")
    if sig.signed_at > now + max_skew:
        return out("from-the-future", f"signed at {format_time(sig.signed_at)}, after now "
                                      f"{format_time(now)}")
    if sig.role == "approver" and (sig.signer == author or (
            author_fingerprint is not None and sig.fingerprint == author_fingerprint)):
        return out("self-approval", f"{sig.signer} approved a plan authored by {author} "
                                    "(with the author's name or key): it does not count")
    if sig.role == "witness":
        if stage is not None and sig.stage != stage:
            return out("wrong-stage", f"witnesses stage {sig.stage}, not stage {stage}")
        if executor is not None and sig.signer == executor:
            return out("is-executor", f"{sig.signer} is the executor; the witness must be "
                                      "someone else")
    counted_from = sig.recorded_at if store_time and sig.recorded_at else sig.signed_at
    if sig.role in ("approver", "witness") and now - counted_from > ttl:
        return out("expired", f"signed {format_duration(now - counted_from)} ago, older than "
                              f"{format_duration(ttl)}")
    return out(VALID, "ok")


def two_person(author: Signature | None, approvals: Iterable[Signature],
               min_approvals: int) -> Check:
    """I7: a valid author signature and ``min_approvals`` valid approvals by other principals."""
    approvals = list(approvals)
    valid = sorted({a.signer for a in approvals if a.state == VALID})
    facts = {"author": author.state if author else "missing", "valid_approvers": valid,
             "min_approvals": min_approvals,
             "others": [f"{a.signer}: {a.state}" for a in approvals if a.state != VALID]}
    if author is None:
        return Check(I7, False, "the author signature is missing", facts)
    if author.state != VALID:
        return Check(I7, False, f"the author signature of {author.signer} is {author.state}: "
                                f"{author.detail}", facts)
    if len(valid) < min_approvals:
        why = "; ".join(f"{a.signer}: {a.state} ({a.detail})" for a in approvals
                        if a.state != VALID)
        return Check(I7, False, f"{len(valid)} valid approval(s) from principals other than the "
                                f"author {author.signer}; {min_approvals} needed"
                                + (f" ({why})" if why else ""), facts,
                     hint="a second engineer runs `cleanup approve PLAN --signer NAME --key KEY`")
    return Check(I7, True, f"author {author.signer} and {len(valid)} approver(s) "
                           f"({', '.join(valid)})", facts)


def presence(witnesses: Iterable[Signature], stage: int) -> Check:
    """I8: a valid witness of this stage by someone other than the executor."""
    ws = list(witnesses)
    valid = sorted({w.signer for w in ws if w.state == VALID})
    facts = {"stage": stage, "valid_witnesses": valid,
             "others": [f"{w.signer}: {w.state}" for w in ws if w.state != VALID]}
    if not valid:
        why = "; ".join(f"{w.signer}: {w.state} ({w.detail})" for w in ws if w.state != VALID)
        return Check(I8, False, f"no valid witness for stage {stage}" + (f" ({why})" if why
                                                                            else ""), facts,
                     hint=f"a second engineer, present now, runs `cleanup witness PLAN --stage "
                          f"{stage} --signer NAME --key KEY`")
    return Check(I8, True, f"stage {stage} witnessed by {', '.join(valid)}", facts)
