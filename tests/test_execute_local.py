"""`cleanup execute`, `status`, `restore`, `purge` on a local store: the guarded flow,
its refusals, and crash-safety (SIGKILL at random journal steps, then resume)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.demo import DemoPaths, build
from cleanup.errors import SignoffError
from tests import faultcli
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.scenario import Scenario, wait_until
from tests.scenario import ok as ok  # re-exported: test_execute_guards, test_stages


def _tree_digest(root: Path) -> dict[str, str]:
    """key -> sha256 of every file under root except _cleanup/."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("_cleanup/"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Flow(Scenario):
    """A demo store planned, approved by bob and ready to execute as alice."""

    def __init__(self, root: Path, *extra_plan: str) -> None:
        d: DemoPaths = build(root)
        super().__init__(root, str(d.store), signers={n: d.key(n) for n in ("alice", "bob")},
                         allowed_signers=d.allowed_signers)
        self.d = d
        self.root = root
        self.plan = self.plan_dir
        self.reconcile_args = ["--reconcile-with", str(d.metadata), "--reconcile-query",
                               "SELECT path FROM data_files"]
        self.list_store("--trust-mtime")
        self.snapshot_query(d.metadata, "SELECT path FROM data_files")
        ok(self.create_plan("--internal", "internal-analytics", *extra_plan))
        ok(self.approve("bob"))
        self.before = _tree_digest(self.d.store)
        self.plan_json = self.read_plan()
        self.plan_id = self.current_plan_id()

    def witness(self, stage: int = 0, signer: str = "bob",  # type: ignore[override]
                plan: Path | None = None) -> None:
        ok(super().witness(stage, signer, plan))

    def reference(self, key: str) -> None:
        con = duckdb.connect(str(self.d.metadata))
        con.execute("INSERT INTO data_files VALUES (?, 'x')", [f"file://{self.d.store}/{key}"])
        con.close()


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    return Flow(tmp_path / "demo")


def test_execute_stage0_moves_exactly_the_manifest(flow: Flow) -> None:
    flow.witness()
    res = json.loads(ok(flow.execute()).out)
    keys = flow.manifest(0)
    assert res["removed"] == len(keys) > 0
    after = _tree_digest(flow.d.store)
    assert set(flow.before) - set(after) == set(keys)
    for k in keys:
        q = flow.d.store / "_cleanup" / "quarantine" / flow.plan_id / k
        assert hashlib.sha256(q.read_bytes()).hexdigest() == flow.before[k]
    st = json.loads(ok(run_cli(["status", str(flow.plan), "--json"])).out)
    assert st["stages"][0]["state"] == "complete"
    assert st["stages"][0]["moved"] == len(keys)
    # Running the completed stage again is a no-op that reports the same counts.
    again = json.loads(ok(flow.execute()).out)
    assert again["already_complete"] is True
    assert again["removed"] == len(keys)
    assert _tree_digest(flow.d.store) == after
    ok(run_cli(["audit", "verify", str(flow.d.store)]))


def test_restore_round_trips_bytes_and_never_overwrites(flow: Flow) -> None:
    flow.witness()
    ok(flow.execute())
    keys = flow.manifest(0)
    (flow.d.store / keys[0]).write_bytes(b"new object written since")
    counts = json.loads(ok(run_cli(["restore", str(flow.plan), "--stage", "0", "--json"])).out)
    assert counts == {"restored": len(keys) - 1, "exists": 1}
    after = _tree_digest(flow.d.store)
    for k in keys[1:]:
        assert after[k] == flow.before[k]
    assert (flow.d.store / keys[0]).read_bytes() == b"new object written since"
    st = json.loads(ok(run_cli(["status", str(flow.plan), "--json"])).out)
    assert st["stages"][0]["restored"] == len(keys) - 1


def test_reconciliation_halt_leaves_batch_untouched(flow: Flow) -> None:
    flow.witness()
    keys = flow.manifest(0)
    flow.reference(keys[-1])  # a writer committed a reference to a planned key
    r = flow.execute()
    assert_one_line_error(r, 5, "I9 reconcile", keys[-1])
    assert _tree_digest(flow.d.store) == flow.before
    # The stage stays halted, even once the reference is gone again.
    st = json.loads(ok(run_cli(["status", str(flow.plan), "--json"])).out)
    assert st["stages"][0]["state"] == "halted"
    assert_one_line_error(flow.execute(), 3, "halted")


def test_rewritten_object_is_skipped(flow: Flow) -> None:
    flow.witness()
    keys = flow.manifest(0)
    (flow.d.store / keys[0]).write_bytes(b"rewritten after the inventory")
    res = json.loads(ok(flow.execute()).out)
    assert res["skipped"] == {"changed": 1}
    assert res["removed"] == len(keys) - 1
    assert (flow.d.store / keys[0]).read_bytes() == b"rewritten after the inventory"


def test_dry_run_removes_nothing(flow: Flow) -> None:
    res = json.loads(ok(flow.execute(0, "--dry-run")).out)  # no witness needed to look
    assert res["dry_run"] is True
    assert res["removed"] == len(flow.manifest(0))
    assert _tree_digest(flow.d.store) == flow.before


def test_execute_needs_sign_off_and_presence(tmp_path: Path) -> None:
    f = Flow(tmp_path / "demo")
    assert_one_line_error(f.execute(), 4, "I8 presence", "cleanup witness")
    f.witness(signer="alice")  # the executor cannot witness itself
    assert_one_line_error(f.execute(), 4, "I8 presence", "is-executor")
    # The local copy of the approvals is a cache: removing it changes nothing...
    shutil.rmtree(f.plan / "signatures" / "approvals")
    # ...what counts is what the store recorded (I10, I18).
    shutil.rmtree(f.d.store / "_cleanup" / "plans" / f.plan_id / "signatures" / "approvals")
    assert_one_line_error(f.execute(), 4, "I7 two-person")
    assert _tree_digest(f.d.store) == f.before


def test_stage_order_and_hold(flow: Flow) -> None:
    # Refused before any challenge is published: nobody is asked to witness it.
    assert_one_line_error(flow.execute(1), 3, "I10 phased", "stage 0 is not-started")
    assert not (flow.d.store / "_cleanup" / "plans" / flow.plan_id / "challenges").exists()
    flow.witness(0)
    ok(flow.execute(0))
    assert_one_line_error(flow.execute(1), 3, "I10 phased", "hold of 24h ends at")


def test_reconcile_source_must_be_newer_than_the_plan(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    f = Flow(root, "--reconcile-with", str(root / "snap.parquet"))
    f.witness()
    assert_one_line_error(f.execute(), 3, "I9 reconcile", "not after the plan's snapshot")


def test_reconcile_source_is_the_plans(flow: Flow) -> None:
    """I19: the runner cannot pick another reconciliation source than the signed one."""
    flow.witness()
    r = flow.execute(0, "--reconcile-with", str(flow.root / "snap.parquet"))
    assert_one_line_error(r, 3, "I19 confinement", "not the plan's signed reconciliation")
    assert _tree_digest(flow.d.store) == flow.before


def test_region_mismatch_is_refused(flow: Flow) -> None:
    flow.witness()
    assert_one_line_error(flow.execute(0, "--region", "eu-west-1"), 3, "I13 residency")


def test_second_execution_is_locked_out(flow: Flow) -> None:
    flow.witness()
    lock = flow.d.store / "_cleanup" / "lock"
    holder = {"executor": "carol", "plan_id": "x", "host": "h", "pid": 1, "token": "t",
              "acquired_at": "2026-01-01T00:00:00Z",
              "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).strftime(
                  "%Y-%m-%dT%H:%M:%SZ")}
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(holder))
    assert_one_line_error(flow.execute(), 6, "locked by carol")
    assert_one_line_error(flow.execute(0, "--break-lock"), 6, "locked by carol")  # live lease
    holder["expires_at"] = "2026-01-01T00:10:00Z"
    lock.write_text(json.dumps(holder))
    assert_one_line_error(flow.execute(), 6, "expired lock", "--break-lock")
    ok(flow.execute(0, "--break-lock"))
    assert not lock.exists()
    events = [json.loads(p.read_text())["event"]
              for p in sorted((flow.d.store / "_cleanup" / "audit").iterdir())]
    assert "lock-broken" in events


def test_two_concurrent_executions_one_exits_6(flow: Flow, tmp_path: Path) -> None:
    """Deterministic: the first process holds the lock mid-stage (gated after its first
    journal write) while the second runs: the second exits 6 and touches nothing; the first
    does all the work; a run after it is an idempotent no-op with the same counts."""
    flow.witness()
    gate = tmp_path / "gate"
    gate.mkdir()
    args = ["execute", str(flow.plan), "--stage", "0", "--batch-size", "1",
            "--executor", "alice", "--key", str(flow.d.key("alice")), "--json"]
    first = faultcli.spawn(args, env={**flow.env, faultcli.GATE: str(gate)})
    try:
        wait_until(lambda: (gate / "ready").exists() or first.poll() is not None,
                   timeout=120, what="the first execution to hold the lock")
        assert first.poll() is None, first.communicate()
        flow.witness()  # the first consumed its witness; the second has its own
        second = run_cli(args, env=flow.env)
        assert_one_line_error(second, 6, "locked by alice")
        assert _tree_digest(flow.d.store) == flow.before  # the first is parked before batch 0
    finally:
        (gate / "go").touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    keys = flow.manifest(0)
    assert json.loads(out)["removed"] == len(keys)
    after = _tree_digest(flow.d.store)
    assert set(flow.before) - set(after) == set(keys)
    third = json.loads(ok(run_cli(args, env=flow.env)).out)
    assert third["already_complete"] is True
    assert third["removed"] == len(keys)
    assert _tree_digest(flow.d.store) == after


def test_purge_refuses_before_retention(flow: Flow) -> None:
    flow.witness()
    ok(flow.execute())
    r = flow.challenge(0, "purge")
    assert_one_line_error(r, 3, "I11 recoverable", "retention of 7d ends at")
    assert len(list((flow.d.store / "_cleanup" / "quarantine").rglob("*.parquet"))) == len(
        flow.manifest(0))


def test_approvals_expire_for_purge_too(flow: Flow) -> None:
    from cleanup.executor import PurgeOptions, purge

    flow.witness()
    ok(flow.execute())
    later = datetime.now(UTC) + timedelta(days=8)
    # After 8 days (by the store's clock) the approval has expired: purge needs a fresh one.
    with pytest.raises(SignoffError, match="I7 two-person"):
        purge(PurgeOptions(str(flow.plan), 0, "alice", str(flow.d.key("alice")),
                           trust_root=flow.trust_root, now=later))


def test_purge_after_retention_removes_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    cfg = tmp_path / "cleanup.toml"
    cfg.write_text('[policy]\nretention = "1s"\n')
    flow = Flow(root, "--config", str(cfg))
    flow.witness()
    ok(flow.execute())
    finished = json.loads(ok(flow.cli(["status", str(flow.plan), "--json"])).out)
    end = datetime.fromisoformat(finished["stages"][0]["finished_at"]) + timedelta(seconds=1)
    wait_until(lambda: datetime.now(UTC) > end, what="the 1s retention to pass")
    assert_one_line_error(flow.challenge(0, "purge"), 4, "I8 presence", "--action purge")
    ok(flow.cli(["witness", str(flow.plan), "--stage", "0", "--action", "purge", "--signer",
                 "bob", "--key", str(flow.d.key("bob"))]))
    r = ok(flow.cli(["purge", str(flow.plan), "--stage", "0", "--executor", "alice", "--key",
                     str(flow.d.key("alice"))]))
    assert f"purged {len(flow.manifest(0))} quarantined objects" in r.out
    assert not list((flow.d.store / "_cleanup" / "quarantine").rglob("*.parquet"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    root = tmp_path_factory.mktemp("template") / "demo"
    f = Flow(root)
    f.witness()
    return f


_JOURNAL_WRITES: dict[int, int] = {}


def _copy_of(template: Flow, work: Path) -> Flow:
    """A fresh, independent flow: the template's files copied to ``work`` and re-planned
    there (the plan binds the store path), approved and witnessed."""
    shutil.copytree(template.root, work, symlinks=True)
    f = object.__new__(Flow)
    d = DemoPaths(work, work / "store", work / "metadata.duckdb", work / "keys",
                  work / "allowed_signers")
    Scenario.__init__(f, work, str(d.store), signers=template.signers | {
        n: d.key(n) for n in ("alice", "bob")}, allowed_signers=d.allowed_signers)
    f.d, f.root, f.plan = d, work, f.plan_dir
    f.reconcile_args = ["--reconcile-with", str(d.metadata), "--reconcile-query",
                        "SELECT path FROM data_files"]
    _retarget(f, template)
    return f


def _journal_writes(template: Flow, tmp_path: Path, batch: int) -> int:
    """How many journal writes a whole, uninterrupted stage 0 makes at this batch size."""
    if batch not in _JOURNAL_WRITES:
        f = _copy_of(template, tmp_path / f"count-b{batch}-{os.urandom(4).hex()}")
        ok(f.execute(0, "--batch-size", str(batch)))
        lines = (f.plan / "journal" / "stage-0.jsonl").read_text().splitlines()
        _JOURNAL_WRITES[batch] = len(lines)
    return _JOURNAL_WRITES[batch]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(point=st.sampled_from(["journal", "quarantine-move"]), index=st.integers(0, 10**6),
       batch=st.integers(1, 4))
def test_crash_at_any_journal_step_then_resume(template: Flow, tmp_path: Path, point: str,
                                               index: int, batch: int) -> None:
    """SIGKILL after the Nth journal write, or right after the Nth object was moved into
    quarantine (before its batch is journaled), then the same command: exactly the planned
    objects end in quarantine, every other object is intact, byte for byte. N is always
    within the run, so every example really kills."""
    keys = template.manifest(0)
    if point == "journal":
        n = 1 + index % _journal_writes(template, tmp_path, batch)
        env = {"CLEANUP_FAULT_KILL_AFTER_JOURNAL_WRITES": str(n)}
    else:
        n = 1 + index % len(keys)
        env = {faultcli.KILL_AT: f"{point}:{n}"}
    f = _copy_of(template, tmp_path / f"{point}{n}-b{batch}-{os.urandom(4).hex()}")
    assert f.manifest(0) == keys
    r = f.execute(0, "--batch-size", str(batch), env=env)
    assert r.code == -9, (point, n, r.code, r.out, r.err)
    f.witness()  # a witness counts for one run: the resume is witnessed again
    res = json.loads(ok(f.execute(0, "--batch-size", str(batch))).out)
    assert res["removed"] == len(keys)
    after = _tree_digest(f.d.store)
    assert {k: v for k, v in f.before.items() if k not in keys} == after
    qroot = f.d.store / "_cleanup" / "quarantine" / f.plan_id
    for k in keys:
        assert hashlib.sha256((qroot / k).read_bytes()).hexdigest() == f.before[k]


def _retarget(f: Flow, template: Flow) -> None:
    """Re-plan in the copy (the plan binds the store path), keeping the template's content."""
    shutil.rmtree(f.plan)
    con = duckdb.connect(str(f.d.metadata))
    con.execute("UPDATE data_files SET path = replace(path, ?, ?)",
                [str(template.d.store), str(f.d.store)])
    con.close()
    f.list_store("--trust-mtime")
    f.snapshot_query(f.d.metadata, "SELECT path FROM data_files")
    ok(f.create_plan("--internal", "internal-analytics"))
    ok(f.approve("bob"))
    f.witness()
    f.plan_id = f.current_plan_id()
    f.plan_json = f.read_plan()
    f.before = _tree_digest(f.d.store)
