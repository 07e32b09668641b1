"""I14 audit: the hash chain detects any edit, removal or reordering."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup import audit
from cleanup.core.canonical import canonical_json
from cleanup.core.paths import parse_store
from cleanup.stores.local import LocalStore
from tests.conftest import assert_one_line_error, run_cli


def _store(root: Path) -> LocalStore:
    root.mkdir(parents=True, exist_ok=True)
    return LocalStore(parse_store(str(root)))


def test_append_chains_entries(tmp_path: Path) -> None:
    s = _store(tmp_path / "store")
    a = audit.append(s, "plan-created", plan_id="p1", details={"n": 1})
    b = audit.append(s, "approval", plan_id="p1", principal="bob")
    assert (a["seq"], b["seq"]) == (1, 2)
    assert a["prev"] == audit.GENESIS
    rep = audit.verify(s)
    assert rep.ok
    assert rep.entries == 2
    r = run_cli(["audit", "verify", str(tmp_path / "store"), "--json"])
    assert r.code == 0, r.err
    assert json.loads(r.out)["head"] == rep.head


def test_concurrent_writers_never_share_a_sequence_number(tmp_path: Path) -> None:
    s = _store(tmp_path / "store")
    # Simulate a writer that took entry 1 between our listing and our create.
    assert s.put_if_absent("_cleanup/audit/000000000001.json", canonical_json(
        {"seq": 1, "prev": audit.GENESIS, "time": "t", "event": "x", "actor": "a",
         "principal": None, "plan_id": None, "details": {}}))
    e = audit.append(s, "approval")
    assert e["seq"] == 2
    assert audit.verify(s).ok


ops = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 20)),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("swap"), st.integers(0, 20), st.integers(0, 20)),
    st.tuples(st.just("edit-canonical"), st.integers(0, 20)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 8), op=ops)
def test_any_tampering_is_detected(tmp_path: Path, n: int, op: tuple[object, ...]) -> None:
    """Property: after any edit, removal or swap, verify fails or the head changes."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"
    s = _store(root)
    for i in range(n):
        audit.append(s, f"event-{i}", details={"i": i})
    before = audit.verify(s)
    assert before.ok
    files = sorted((root / "_cleanup" / "audit").iterdir())
    kind = op[0]
    i = int(op[1]) % n  # type: ignore[call-overload]
    if kind == "edit":
        files[i].write_bytes(files[i].read_bytes().replace(b"event-", b"EVENT-"))
    elif kind == "edit-canonical":
        entry = json.loads(files[i].read_bytes())
        entry["details"] = {"i": -1}
        files[i].write_bytes(canonical_json(entry))
    elif kind == "remove":
        files[i].unlink()
    else:
        j = int(op[2]) % n  # type: ignore[call-overload]
        if i == j:
            return
        a, b = files[i].read_bytes(), files[j].read_bytes()
        files[i].write_bytes(b)
        files[j].write_bytes(a)
    after = audit.verify(s)
    assert not after.ok or after.head != before.head


def test_cli_reports_broken_chain(tmp_path: Path) -> None:
    s = _store(tmp_path / "store")
    for i in range(3):
        audit.append(s, f"e{i}")
    (tmp_path / "store" / "_cleanup" / "audit" / "000000000002.json").unlink()
    r = run_cli(["audit", "verify", str(tmp_path / "store")])
    assert_one_line_error(r, 3, "I14 audit", "entry 2 is missing")


def test_plan_and_refusal_are_audited(tmp_path: Path, alice_key: Path) -> None:
    from tests.test_plan_cli import Case

    case = Case(tmp_path, alice_key)
    assert case.plan().code == 0
    case.write(refs=[])
    assert case.plan(out="p2").code == 3
    s = LocalStore(parse_store(str(case.store)))
    events = [json.loads(s.get_bytes(k) or b"{}")["event"] for k in s.list_keys("_cleanup/audit/")]
    assert events == ["plan-created", "plan-refused"]
    assert audit.verify(s).ok
