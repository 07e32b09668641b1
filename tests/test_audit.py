"""I14 audit: the hash chain detects any edit, removal or reordering."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup import audit
from cleanup.core.canonical import canonical_json
from cleanup.core.paths import parse_store
from cleanup.errors import InvariantViolation
from cleanup.stores.local import LocalStore
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.servers import S3Server


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
    """Property: any edit, removal or swap is caught, and exactly how is fixed: an earlier
    entry by the next one's prev hash or the seq gap; the newest entry, which no later
    entry hashes, by the head object (I14: advanced by compare-and-swap on every append),
    which names an entry that is gone or has other bytes."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"
    s = _store(root)
    for i in range(n):
        audit.append(s, f"event-{i}", details={"i": i})
    before = audit.verify(s)
    assert before.ok
    files = sorted((root / "_cleanup" / "audit").iterdir())
    heads = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
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
    newest = i == n - 1
    if kind == "swap":
        assert not after.ok
        assert any("holds seq" in p for p in after.problems), after.problems
    elif kind == "remove" and newest:
        assert not after.ok
        assert after.entries == n - 1
        assert after.problems == [f"the head object names entry {n}, which is not in the log "
                                  "(truncated or removed)"]
    elif kind == "remove":
        assert not after.ok
        assert f"entry {i + 1} is missing (next present: {i + 2})" in after.problems
    elif newest:  # edit, edit-canonical of the newest entry: only the head object knows
        assert not after.ok
        assert after.entries == n
        assert any(f"the head object names entry {n}, which has other bytes" in p
                   for p in after.problems), after.problems
    else:  # an earlier entry edited: the next one's prev no longer matches
        assert not after.ok
        assert any(p.startswith(f"_cleanup/audit/{i + 2:012d}.json: prev hash") for p in
                   after.problems), after.problems
    assert before.head == heads[-1]


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


@pytest.mark.parametrize("content", [b"", b'{"seq": 2, "prev": "tru', b"not json at all\n",
                                     b'{"seq":2}\n', b'{"seq":7}'])
def test_append_refuses_to_chain_onto_an_unreadable_entry(tmp_path: Path,
                                                          content: bytes) -> None:
    """An empty, torn, non-JSON, non-canonical or misnumbered newest entry is not hashed
    into the chain: the append is refused (I14) and nothing is written."""
    s = _store(tmp_path / "store")
    audit.append(s, "plan-created")
    bad = tmp_path / "store" / "_cleanup" / "audit" / "000000000002.json"
    bad.write_bytes(content)
    with pytest.raises(InvariantViolation, match="I14 audit.*000000000002.json"):
        audit.append(s, "approval")
    assert s.list_keys("_cleanup/audit/") == ["_cleanup/audit/000000000001.json",
                                              "_cleanup/audit/000000000002.json"]


def test_72_concurrent_witness_runs_leave_a_valid_chain(tmp_path: Path, alice_key: Path,
                                                        bob_key: Path) -> None:
    """72 `cleanup witness` processes at once, as 72 users would: every one is audited,
    the chain verifies, and its sequence numbers are contiguous."""
    from cleanup.published import Published
    from tests.test_signoff import Signoff

    so = Signoff(tmp_path, alice_key)
    store = _store(so.store)
    # The runner's start published a challenge (I8); 72 people witness it at once.
    Published(store, so.current_plan_id()).open_challenge("execute", 0, {"executor": "alice"})
    first = audit.verify(store).entries
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    procs = [subprocess.Popen([sys.executable, "-m", "cleanup", "witness", str(so.plan_dir),
                               "--stage", "0", "--signer", f"w{i}", "--key", str(bob_key)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(72)]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for fh in (p.stdout, p.stderr):
            if fh:
                fh.close()
    assert [code for code, _err in results] == [0] * 72, results
    assert not [err for _code, err in results if err.strip()]  # no "not written" warning
    r = run_cli(["audit", "verify", str(so.store), "--json"])
    assert r.code == 0, (r.out, r.err)
    assert json.loads(r.out)["entries"] == first + 72
    entries = [json.loads(store.get_bytes(k) or b"{}") for k in store.list_keys("_cleanup/audit/")]
    assert [e["seq"] for e in entries] == list(range(1, first + 73))
    assert sorted(e["principal"] for e in entries if e["event"] == "witness") == sorted(
        f"w{i}" for i in range(72))


@pytest.mark.s3
def test_concurrent_appends_on_s3_keep_the_chain(moto_server: S3Server,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """S3: entries are created with If-None-Match: *, so racing writers never share one."""
    from cleanup.stores import open_store

    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    bucket = moto_server.bucket()
    store = open_store(f"s3://{bucket}/p/", endpoint_url=moto_server.endpoint_url,
                       region=moto_server.region)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(3):
                audit.append(store, f"event-{i}-{j}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    rep = audit.verify(store)
    assert rep.ok, rep.problems
    assert rep.entries == 36
