"""Properties of the two checks a retirement adds, over generated worlds:

- I13 residency (:func:`cleanup.retire.check_regions`): a plan with copies is accepted
  only where the copies sit in a region declared for the copies' store *and* for the
  source (a retirement must declare both): it never deletes the last copy in an allowed
  region. And a placement inside every declared region is never refused.
- I11 per batch (:func:`cleanup.retire.recheck_copies`): right before a batch is
  removed, the stage halts (exit 5) if and only if some object of the batch no longer
  has a verified copy, the journal names exactly those objects, and an object that
  itself changed at the source (left to the executor's own re-check) does not halt.

The CLI refusals of both are in tests/test_retire.py and tests/test_retire_s3.py.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.errors import InvariantViolation, ReconciliationHalt
from cleanup.journal import Journal
from cleanup.model import CopiesInfo
from cleanup.retire import CopyCheck, KeyMap, Verifier, check_regions, recheck_copies
from cleanup.stores.base import ObjectInfo
from tests.test_retire_property import FakeListedStore, FakeStore

REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"]
SRC, DST = "s3://old/", "s3://new/"
declared = st.none() | st.frozensets(st.sampled_from(REGIONS), min_size=1).map(
    lambda s: tuple(sorted(s)))


@settings(max_examples=500, deadline=None)
@given(mode=st.sampled_from(["retire", "backup"]), source_region=st.sampled_from(REGIONS),
       target_region=st.sampled_from(REGIONS), src_ok=declared, tgt_ok=declared)
def test_residency_accepts_only_copies_in_allowed_regions(
        mode: str, source_region: str, target_region: str,
        src_ok: tuple[str, ...] | None, tgt_ok: tuple[str, ...] | None) -> None:
    allowed = {u: r for u, r in ((SRC, src_ok), (DST, tgt_ok)) if r is not None}
    refusal: InvariantViolation | None = None
    try:
        check_regions(mode, SRC, source_region, DST, target_region, allowed)
    except InvariantViolation as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.invariant.startswith("I13")
        # never refused when every declared region admits the placement
        assert not ((mode == "backup" or (src_ok and tgt_ok))
                    and (src_ok is None or {source_region, target_region} <= set(src_ok))
                    and (tgt_ok is None or target_region in tgt_ok)), refusal
        return
    if mode == "retire":
        assert src_ok is not None
        assert tgt_ok is not None
    if src_ok is not None:
        assert source_region in src_ok
        assert target_region in src_ok  # the data stays where it may live
    if tgt_ok is not None:
        assert target_region in tgt_ok


STATES = ["same", "rewritten", "missing", "truncated", "source-changed"]


def _copies() -> CopiesInfo:
    return CopiesInfo("retire", DST, "eu-central-1", (), False, False, {}, 0, 0, 0, 0, {}, 0,
                      0, {}, ())


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=st.lists(st.sampled_from(STATES), min_size=1, max_size=12),
       listed=st.booleans(), policy_listed=st.booleans(), content=st.booleans())
def test_batch_recheck_halts_iff_a_copy_is_no_longer_verified(
        tmp_path: Path, states: list[str], listed: bool, policy_listed: bool,
        content: bool) -> None:
    planned: list[ObjectInfo] = []
    src: dict[str, tuple[bytes, frozenset[str]]] = {}
    dst: dict[str, tuple[bytes, frozenset[str]]] = {}
    algos = frozenset({"sha256", "md5"})
    for i, state in enumerate(states):
        key, data = f"t/{i}.bin", f"object {i}".encode()
        planned.append(ObjectInfo(key, len(data), datetime(2026, 1, 1, tzinfo=UTC),
                                  hashlib.md5(data).hexdigest()))  # noqa: S324
        # the source as execution finds it, and the copy as it is now
        src[key] = ((b"X" + data[1:]) if state == "source-changed" else data, algos)
        copy = {"same": data, "source-changed": data, "rewritten": b"?" + data[1:],
                "missing": None, "truncated": data[:-1]}[state]
        if copy is not None:
            dst[key] = (copy, algos)
    kind = FakeListedStore if listed else FakeStore
    verifier = Verifier(cast(Any, kind("s3://old/", src)), cast(Any, kind(DST, dst)),
                        KeyMap(), verify_content=content, workers=1, listed=policy_listed)
    journal = Journal(str(tmp_path / f"j-{len(list(tmp_path.iterdir()))}.jsonl"))
    bad = {o.key for o, s in zip(planned, states, strict=True)
           if s in ("rewritten", "missing", "truncated")}
    halted: ReconciliationHalt | None = None
    try:
        recheck_copies(CopyCheck(_copies(), verifier), planned, 3, journal)
    except ReconciliationHalt as exc:
        halted = exc
    if halted is not None:
        assert bad, halted
        assert str(halted).startswith("I11")
        halt = [r for r in journal.records() if r["event"] == "halt"]
        assert {k for k, _reason in halt[-1]["copies"]} == bad
        return
    assert not bad

    assert [r["event"] for r in journal.records()] == ["batch-copies-verified"]


def test_recheck_without_copies_writes_nothing(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.jsonl"))
    recheck_copies(None, [ObjectInfo("k", 1, datetime(2026, 1, 1, tzinfo=UTC), None)], 0,
                   journal)
    assert list(journal.records()) == []
