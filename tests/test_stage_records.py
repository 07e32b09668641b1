"""I10: a stage's state is read only from records a runner of the trust root signed for
this plan, this stage and this event (or batch). Anyone else with a write grant under
``_cleanup/plans/`` -- or a valid record copied from another plan or stage -- moves no
stage on, lifts no halt and adds no keys that purge would remove."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.canonical import canonical_json
from cleanup.errors import InvariantViolation
from cleanup.published import Published, RecordTrust, stage_doc, stage_state
from cleanup.stores import open_store
from tests.conftest import make_key

PLAN = "b" * 64
OTHER_PLAN = "c" * 64
EVENTS = ("started", "finished", "halted")
FORGERIES = ("unsigned", "non-runner", "other-plan", "other-stage", "tampered",
             "wrong-event", "garbage")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecordTrust, RecordTrust]:
    """The runner's signing view, and a principal of the same root without the runner
    role (an approver) who signs with its own key."""
    d = tmp_path_factory.mktemp("record-keys")
    runner, bob = make_key(d, "runner"), make_key(d, "bob")
    allowed = d / "allowed_signers"
    allowed.write_text("".join(
        f'{n} namespaces="cleanup-record" {Path(str(k) + ".pub").read_text().strip()}\n'
        for n, k in (("runner", runner), ("bob", bob))))
    is_runner = lambda n: n == "runner"  # noqa: E731
    return (RecordTrust(str(allowed), is_runner, "runner", str(runner)),
            RecordTrust(str(allowed), is_runner, "bob", str(bob)))


def _doc(plan: str, stage: int, what: str) -> dict[str, Any]:
    if what.startswith("batch"):
        b = int(what[5:])
        return {"type": "cleanup-batch-record", "plan_id": plan, "stage": stage, "batch": b,
                "digest": "0" * 32, "mode": "copy", "moved": 10 + b, "moved_bytes": 100,
                "skipped": {}, "removed": {f"t/k{b}": f"_cleanup/quarantine/{plan}/t/k{b}"}}
    return stage_doc(plan, stage, what, executor="runner", audit_head="h",
                     now=datetime.now(UTC))


def _parts(stage: int, what: str) -> tuple[str, ...]:
    if what.startswith("batch"):
        return ("stages", str(stage), "batches", f"{int(what[5:]):08d}.json")
    return ("stages", str(stage), f"{what}.json")


def _forge(kind: str, stage: int, what: str, runner: Published, bob: Published) -> bytes:
    """The bytes an insider puts under a record's name."""
    doc = _doc(PLAN, stage, what)
    if kind == "unsigned":
        return canonical_json(doc)
    if kind == "non-runner":
        return canonical_json(bob.signed(doc))
    if kind == "other-plan":  # a genuine record of another plan, copied over
        return canonical_json(runner.signed(_doc(OTHER_PLAN, stage, what)))
    if kind == "other-stage":
        return canonical_json(runner.signed(_doc(PLAN, stage + 1, what)))
    if kind == "tampered":
        signed = runner.signed(doc)
        signed["moved" if what.startswith("batch") else "executor"] = 999
        return canonical_json(signed)
    if kind == "wrong-event":
        if what.startswith("batch"):
            return canonical_json(runner.signed({**doc, "batch": doc["batch"] + 1}))
        other = next(e for e in EVENTS if e != what)
        return canonical_json(runner.signed(_doc(PLAN, stage, other)))
    return b"{not json"


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_only_runner_signed_records_count(tmp_path_factory: pytest.TempPathFactory,
                                          keys: tuple[RecordTrust, RecordTrust],
                                          data: st.DataObject) -> None:
    store = open_store(str(tmp_path_factory.mktemp("records")))
    runner = Published(store, PLAN, keys[0])
    bob = Published(store, PLAN, keys[1])
    names = [*EVENTS, "batch0", "batch1", "batch2"]
    genuine = data.draw(st.sets(st.sampled_from(names)), label="genuine")
    forged = {n: data.draw(st.sampled_from(FORGERIES), label=f"forged {n}")
              for n in data.draw(st.sets(st.sampled_from(names)), label="forged names")
              if n not in genuine}
    for n in sorted(genuine):
        if n.startswith("batch"):
            assert runner.write_batch_record(0, int(n[5:]), _doc(PLAN, 0, n))
        else:
            assert runner.write_stage_record(0, n, _doc(PLAN, 0, n))
    for n, kind in sorted(forged.items()):
        assert store.put_if_absent(runner.key(*_parts(0, n)), _forge(kind, 0, n, runner, bob))

    # A fresh verifying view (nothing remembered from writing).
    st_ = stage_state(Published(store, PLAN, RecordTrust(keys[0].allowed, keys[0].is_runner)), 0)
    expected = ("halted" if "halted" in genuine else "complete" if "finished" in genuine
                else "running" if "started" in genuine else "not-started")
    assert st_.state == expected, (genuine, forged)
    batches = sorted(int(n[5:]) for n in genuine if n.startswith("batch"))
    assert sorted(st_.done_batches) == batches
    assert st_.moved == sum(10 + b for b in batches)
    assert set(Published(store, PLAN, RecordTrust(keys[0].allowed, keys[0].is_runner))
               .quarantined(0)) == {f"t/k{b}" for b in batches}
    # Writing a record whose name an insider took is refused (I10), never accepted.
    for n in forged:
        with pytest.raises(InvariantViolation, match="I10"):
            runner.write_signed(_parts(0, n), _doc(PLAN, 0, n), stage=0,
                                **({"batch": int(n[5:])} if n.startswith("batch")
                                   else {"event": n}))


def test_a_record_survives_a_rewrite_of_its_json(tmp_path: Path,
                                                 keys: tuple[RecordTrust, RecordTrust]) -> None:
    """The signature covers the canonical bytes of the fields, not their layout: the
    record reads back from the store whatever JSON library wrote it, and a written
    record is found again by the runner (a resumed run does not refuse its own)."""
    store = open_store(str(tmp_path))
    runner = Published(store, PLAN, keys[0])
    doc = _doc(PLAN, 0, "finished")
    assert runner.write_stage_record(0, "finished", doc)
    assert runner.write_stage_record(0, "finished", doc) is False
    path = tmp_path / runner.key(*_parts(0, "finished"))
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    fresh = Published(store, PLAN, RecordTrust(keys[0].allowed, keys[0].is_runner))
    assert stage_state(fresh, 0).state == "complete"
    # Without a trust root (status with no pin) the records are read as they are.
    assert Published(store, PLAN).verifying is False
