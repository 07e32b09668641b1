"""Property tests of the pure sign-off decisions: I7 two-person and I8 presence.

Hypothesis draws signatures of every kind (crypto state, plan id, signer, key,
signed time around the TTL and clock-skew edges); :func:`classify` judges each,
and :func:`two_person` / :func:`presence` must agree with an independent model
written from SPEC.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup.core.signoff import (
    CRYPTO_STATES,
    STATES,
    VALID,
    Signature,
    classify,
    presence,
    two_person,
)

NOW = datetime(2026, 5, 14, 21, 30, tzinfo=UTC)
TTL = timedelta(days=7)
WITNESS_TTL = timedelta(minutes=60)
SKEW = timedelta(minutes=5)
US = timedelta(microseconds=1)
PLAN = "a" * 64
OTHER_PLAN = "b" * 64
AUTHOR = "alice"
NAMES = ("alice", "bob", "carol", "dave")
FINGERPRINTS = (None, "SHA256:alice-key", "SHA256:bob-key", "SHA256:carol-key")

# Weighted so that every clause of the rules decides some examples: half the
# signatures pass OpenSSH, most are over this plan, few lack a signed time, and
# signed times fall on the TTL and clock-skew edges as often as anywhere else.
crypto_states = st.one_of(st.just(VALID), st.sampled_from(CRYPTO_STATES))
plan_ids = st.sampled_from((PLAN, PLAN, PLAN, OTHER_PLAN))


@st.composite
def times(draw: st.DrawFn, span: timedelta, ttl: timedelta) -> datetime | None:
    """A signed time within ``span`` of NOW, often exactly on an edge, rarely missing."""
    if draw(st.integers(0, 19)) == 0:
        return None
    edges = st.sampled_from((timedelta(0), SKEW, SKEW + US, -ttl, -ttl - US, -ttl + US))
    return NOW + draw(st.one_of(edges, st.timedeltas(min_value=-span, max_value=span)))


@st.composite
def signatures(draw: st.DrawFn, role: str, span: timedelta, ttl: timedelta,
               signer: str | None = None) -> Signature:
    return Signature(
        path=f"{role}.json", role=role,
        signer=signer if signer is not None else draw(st.sampled_from(NAMES)),
        plan_id=draw(plan_ids), signed_at=draw(times(span, ttl)), crypto=draw(crypto_states),
        fingerprint=draw(st.sampled_from(FINGERPRINTS)),
        stage=draw(st.sampled_from((None, 0, 1, 2))) if role == "witness" else None,
        detail="from ssh-keygen" if draw(st.booleans()) else "")


# ---------------------------------------------------------------- the model


def model_author_valid(a: Signature | None) -> bool:
    return (a is not None and a.crypto == VALID and a.plan_id == PLAN
            and a.signed_at is not None and a.signed_at <= NOW + SKEW)


def model_approval_counts(a: Signature, author_fpr: str | None) -> bool:
    return (a.crypto == VALID and a.plan_id == PLAN
            and a.signer != AUTHOR and not (author_fpr is not None and a.fingerprint == author_fpr)
            and a.signed_at is not None and a.signed_at <= NOW + SKEW
            and NOW - a.signed_at <= TTL)


def model_witness_counts(w: Signature, stage: int, executor: str) -> bool:
    return (w.crypto == VALID and w.plan_id == PLAN and w.stage == stage
            and w.signer != executor
            and w.signed_at is not None and w.signed_at <= NOW + SKEW
            and NOW - w.signed_at <= WITNESS_TTL)


# ---------------------------------------------------------------- I7


def test_crypto_states_are_states() -> None:
    assert set(CRYPTO_STATES) <= set(STATES)
    assert VALID in STATES
    assert VALID not in CRYPTO_STATES


@st.composite
def authors(draw: st.DrawFn) -> Signature | None:
    """The author's signature, rarely missing."""
    if draw(st.integers(0, 9)) == 0:
        return None
    return draw(signatures("author", timedelta(days=10), TTL, AUTHOR))


@settings(max_examples=400, deadline=None)
@given(author=authors(),
       approvals=st.lists(signatures("approver", timedelta(days=10), TTL), max_size=6),
       min_approvals=st.integers(0, 3))
def test_two_person_matches_the_model(author: Signature | None, approvals: list[Signature],
                                      min_approvals: int) -> None:
    judged_author = None
    if author is not None:
        judged_author = classify(author, plan_id=PLAN, author=AUTHOR, author_fingerprint=None,
                                 now=NOW, ttl=TTL, max_skew=SKEW)
    author_fpr = author.fingerprint if author is not None else None
    judged = [classify(a, plan_id=PLAN, author=AUTHOR, author_fingerprint=author_fpr, now=NOW,
                       ttl=TTL, max_skew=SKEW) for a in approvals]

    # Each signature: valid exactly when the model says it counts; else a known state,
    # and a signature OpenSSH rejected keeps OpenSSH's verdict.
    if judged_author is not None:
        assert (judged_author.state == VALID) is model_author_valid(author)
    for raw, j in zip(approvals, judged, strict=True):
        assert (j.state == VALID) is model_approval_counts(raw, author_fpr), (raw, j.state)
        assert j.state in STATES
        if raw.crypto != VALID:
            assert j.state == raw.crypto
        assert j.detail

    counted = {a.signer for a in approvals if model_approval_counts(a, author_fpr)}
    expected = model_author_valid(author) and len(counted) >= min_approvals
    check = two_person(judged_author, judged, min_approvals)
    assert check.ok is expected, (check.detail, counted)
    assert check.invariant == "I7 two-person"
    assert check.facts["valid_approvers"] == sorted(counted)
    # Order does not matter, and any iterable will do.
    assert two_person(judged_author, iter(judged[::-1]), min_approvals).ok is expected
    if not check.ok:
        assert check.detail


@settings(max_examples=100, deadline=None)
@given(age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365)))
def test_author_signature_does_not_expire(age: timedelta) -> None:
    """The author's own signature has no TTL: an old plan waits for fresh approvals."""
    author = Signature(path="author.json", role="author", signer=AUTHOR, plan_id=PLAN,
                       signed_at=NOW - age, crypto=VALID)
    judged = classify(author, plan_id=PLAN, author=AUTHOR, author_fingerprint=None, now=NOW,
                      ttl=TTL, max_skew=SKEW)
    assert judged.state == VALID
    assert two_person(judged, [], 0).ok


# ---------------------------------------------------------------- I8


@settings(max_examples=400, deadline=None)
@given(witnesses=st.lists(signatures("witness", timedelta(hours=3), WITNESS_TTL), max_size=5),
       stage=st.sampled_from((0, 1, 2)), executor=st.sampled_from(NAMES))
def test_presence_matches_the_model(witnesses: list[Signature], stage: int,
                                    executor: str) -> None:
    judged = [classify(w, plan_id=PLAN, author=AUTHOR, author_fingerprint=None, now=NOW,
                       ttl=WITNESS_TTL, max_skew=SKEW, stage=stage, executor=executor)
              for w in witnesses]
    for raw, j in zip(witnesses, judged, strict=True):
        assert (j.state == VALID) is model_witness_counts(raw, stage, executor), (raw, j.state)
        assert j.state in STATES
    counted = sorted({w.signer for w in witnesses if model_witness_counts(w, stage, executor)})
    check = presence(judged, stage)
    assert check.ok is bool(counted), check.detail
    assert check.invariant == "I8 presence"
    assert check.facts["valid_witnesses"] == counted
    if not check.ok:
        assert check.hint is not None
        assert "cleanup witness" in check.hint
        assert f"--stage {stage}" in check.hint
