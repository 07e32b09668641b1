"""The in-stage watchdog (issue 16 part 4): health checks and a canary of referenced
objects during a stage; a failed check halts the stage before its next batch, restores
what it had quarantined (``--on-failure restore``, the default) or leaves it
(``--on-failure halt``), audits, records and notifies the halt.

Faults are injected from the library's progress callback (called after each batch that
ran, before the watchdog looks): a flag file a ``--health-check`` command tests for, or
a referenced object deleted or rewritten under the canary's feet.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup import notify
from cleanup.errors import UsageError
from cleanup.executor import ExecuteOptions, ExecuteResult, execute
from cleanup.watchdog import WatchdogHalt
from tests.conftest import assert_one_line_error
from tests.inproc import _environment, run_cli
from tests.scenario import ok
from tests.servers import S3Server
from tests.test_execute_local import Flow, _tree_digest
from tests.test_s3 import S3Flow


def _opts(f: Flow, **kw: Any) -> ExecuteOptions:
    return ExecuteOptions(plan_dir=str(f.plan), stage=0, executor="alice",
                          key=str(f.signer_key("alice")), trust_root=f.trust_root, **kw)


def _run(f: Flow, fault_after: int | None, fault: Callable[[], None],
         **kw: Any) -> ExecuteResult | WatchdogHalt:
    """Execute stage 0 (witnessed first); ``fault()`` runs after batch ``fault_after``."""
    f.witness(0)
    calls = 0

    def progress(_moved: int, _bytes: int) -> None:
        nonlocal calls
        if calls == fault_after:
            fault()
        calls += 1

    try:
        return execute(_opts(f, progress=progress, **kw))
    except WatchdogHalt as exc:
        return exc


def _audit(store: Path) -> list[dict[str, Any]]:
    paths = sorted((store / "_cleanup" / "audit").glob("*.json"))
    return [json.loads(p.read_text()) for p in paths]


def _batch_records(f: Flow) -> list[dict[str, Any]]:
    d = f.d.store / "_cleanup" / "plans" / f.plan_id / "stages" / "0" / "batches"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def _journal(f: Flow, event: str) -> list[dict[str, Any]]:
    path = f.plan / "journal" / "stage-0.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]


def _referenced_near_stage0(f: Flow) -> list[str]:
    """Referenced (live) objects in the directories stage 0 removes from."""
    dirs = {k.rsplit("/", 1)[0] for k in f.manifest(0)}
    con = duckdb.connect(str(f.d.metadata))
    paths = [str(r[0]) for r in con.execute("SELECT path FROM data_files").fetchall()]
    con.close()
    prefix = f"file://{f.d.store}/"
    keys = [p[len(prefix):] for p in paths if p.startswith(prefix)]
    return sorted(k for k in keys if k.rsplit("/", 1)[0] in dirs and (f.d.store / k).is_file())


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    return Flow(tmp_path / "demo")


def test_failing_health_check_halts_within_one_batch_and_restores(
        flow: Flow, tmp_path: Path) -> None:
    f = flow
    keys = f.manifest(0)
    assert len(keys) >= 4
    flag = tmp_path / "unhealthy"
    notify.configure(stdout=True)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            res = _run(f, 1, flag.touch, batch_size=1, watch_every_batches=1,
                       health_checks=(f"test ! -e {flag}",))
    finally:
        notify.configure()
    assert isinstance(res, WatchdogHalt), res
    assert res.exit_code == 3
    assert res.invariant == "I10 phased"
    assert "health check" in res.message
    assert "after batch 1" in res.message
    assert res.restored == {"restored": 2}
    # Batches 0 and 1 ran; the check after batch 1 saw the fault; batch 2 was at most
    # reconciled and re-checked (the pipeline prepares the next batch), never touched.
    assert [r["batch"] for r in _batch_records(f)] == [0, 1]
    assert [r["batch"] for r in _journal(f, "batch-done")] == [0, 1]
    assert [r["batch"] for r in _journal(f, "batch-start")] in ([0, 1], [0, 1, 2])
    # Everything the stage removed is back, byte for byte; quarantine is empty.
    assert _tree_digest(f.d.store) == f.before
    assert not [p for p in (f.d.store / "_cleanup" / "quarantine").rglob("*") if p.is_file()]
    # Audited (halt, then restore) and recorded in the store; notified.
    entries = _audit(f.d.store)
    halt = [e for e in entries if e["event"] == "halt"]
    assert len(halt) == 1
    assert halt[0]["details"]["by"] == "watchdog"
    assert halt[0]["details"]["batch"] == 1
    assert halt[0]["details"]["on_failure"] == "restore"
    restore = [e for e in entries if e["event"] == "restore"]
    assert restore[-1]["details"]["counts"] == {"restored": 2}
    assert restore[-1]["seq"] > halt[0]["seq"]
    rec = f.d.store / "_cleanup" / "plans" / f.plan_id / "stages" / "0" / "halted.json"
    assert json.loads(rec.read_text())["by"] == "watchdog"
    sent = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    assert [e["event"] for e in sent] == ["halted", "restored"]
    assert sent[0]["stage"] == 0
    assert sent[1]["counts"] == {"restored": 2}
    # Status shows the halt; the stage stays halted: execution refuses it (exit 3).
    st0 = f.status()["stages"][0]
    assert st0["state"] == "halted"
    assert st0["restored"] == 2
    assert st0["halt"]["by"] == "watchdog"
    assert "watchdog" in st0["next"]
    text = ok(run_cli(["status", str(f.plan)], env=f.env)).out
    assert "halted" in text
    assert "health check" in text
    assert_one_line_error(f.execute(), 3, "halted by the watchdog")
    ok(run_cli(["audit", "verify", str(f.d.store)], env=f.env))


def test_on_failure_halt_leaves_quarantine_as_it_is(flow: Flow) -> None:
    """Through the CLI: a health check that fails once 3 objects are in quarantine."""
    f = flow
    keys = f.manifest(0)
    qdir = f.d.store / "_cleanup" / "quarantine" / f.plan_id
    check = f"sh -c 'test $(find {qdir} -type f 2>/dev/null | wc -l) -lt 3'"
    f.witness(0)
    r = f.execute(0, "--batch-size", "1", "--watch-every-batches", "1", "--on-failure", "halt",
                  "--health-check", check)
    assert_one_line_error(r, 3, "I10 phased: watchdog: health check", "after batch 2",
                          "left as they are", "cleanup restore")
    quarantined = sorted(p.relative_to(qdir).as_posix() for p in qdir.rglob("*") if p.is_file())
    assert len(quarantined) == 3
    assert set(quarantined) <= set(keys)
    after = _tree_digest(f.d.store)
    assert set(f.before) - set(after) == set(quarantined)
    assert {k: v for k, v in f.before.items() if k not in quarantined} == after
    assert not [e for e in _audit(f.d.store) if e["event"] == "restore"]
    st0 = f.status()["stages"][0]
    assert st0["state"] == "halted"
    assert st0["restored"] == 0
    assert st0["halt"]["on_failure"] == "halt"
    # The way back is the ordinary restore.
    counts = json.loads(ok(f.restore("--stage", "0", "--json")).out)
    assert counts == {"restored": 3}
    assert _tree_digest(f.d.store) == f.before


def test_canary_fails_when_a_referenced_object_changes(flow: Flow) -> None:
    """A referenced object rewritten mid-stage (the moto test below deletes one)."""
    f = flow
    near = _referenced_near_stage0(f)
    assert near, "the demo has referenced objects next to stage 0's candidates"
    victim = f.d.store / near[0]
    size = victim.stat().st_size

    def fault() -> None:
        victim.write_bytes(b"y" * (size + 7))

    res = _run(f, 2, fault, batch_size=1, watch_every_batches=2, canary_sample=1000)
    assert isinstance(res, WatchdogHalt), res
    assert "canary: 1 of" in res.message, res.message
    assert "changed size" in res.message, res.message
    assert near[0] in res.message
    # Checks after batches 1 (passed) and 3 (failed: the fault came after batch 2).
    checks = _journal(f, "watchdog-check")
    assert [(c["batch"], c["passed"]) for c in checks] == [(1, True), (3, False)]
    assert checks[0]["results"][0]["facts"]["read"] > 0
    assert _journal(f, "watchdog-start")[0]["canary"] == checks[0]["results"][0]["facts"]["canary"]
    assert len(_batch_records(f)) == 4
    expected = {k: v for k, v in f.before.items() if k != near[0]}
    assert {k: v for k, v in _tree_digest(f.d.store).items() if k != near[0]} == expected


@pytest.mark.parametrize(("args", "needle"), [
    (["--watch-every-batches", "0"], "--watch-every-batches"),
    (["--watch-every-seconds", "0"], "--watch-every-seconds"),
    (["--on-failure", "ignore"], "--on-failure"),
    (["--canary-sample", "-1"], "--canary-sample"),
    (["--watch-every-seconds", "nan"], "watch_every_seconds"),
])
def test_bad_watch_settings_are_one_line_usage_errors(tmp_path: Path, args: list[str],
                                                      needle: str) -> None:
    """Refused before anything is read (the plan directory need not even exist)."""
    r = run_cli(["execute", str(tmp_path / "plan"), "--stage", "0", "--executor", "alice",
                 "--key", str(tmp_path / "key"), *args])
    assert_one_line_error(r, 2, needle)


@pytest.mark.parametrize(("field", "value"), [
    ("watch_every_batches", 0), ("watch_every_seconds", -1.0), ("on_failure", "retry"),
    ("canary_sample", -5), ("watch_every_batches", True),
])
def test_library_refuses_bad_watch_settings(field: str, value: Any) -> None:
    with pytest.raises(UsageError, match=field):
        ExecuteOptions(plan_dir="p", stage=0, executor="e", key="k", **{field: value})


@pytest.fixture
def world(tmp_path: Path) -> tuple[Flow, Path]:
    """A demo with its trust root and a pristine copy of it to reset to per example."""
    f = Flow(tmp_path / "demo")
    backup = tmp_path / "pristine"
    shutil.copytree(f.root, backup, symlinks=True)
    return f, backup


def _reset(f: Flow, backup: Path) -> None:
    """The pristine world again, planned afresh: a copied file is a new object (the local
    store's etag has its inode and ctime), so the copy is listed and planned again."""
    shutil.rmtree(f.root)
    shutil.copytree(backup, f.root, symlinks=True)
    shutil.rmtree(f.plan)
    f.list_store("--trust-mtime")
    f.snapshot_query(f.d.metadata, "SELECT path FROM data_files")
    ok(f.create_plan("--internal", "internal-analytics"))
    ok(f.approve("bob"))
    f.plan_id = f.current_plan_id()
    f.before = _tree_digest(f.d.store)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch_size=st.sampled_from([1, 2, 4]), every=st.integers(1, 4),
       seconds=st.sampled_from([1e-6, 3600.0]), fault=st.one_of(st.none(), st.integers(0, 5)),
       on_failure=st.sampled_from(["restore", "halt"]))
def test_property_no_batch_after_the_first_check_following_a_fault(
        world: tuple[Flow, Path], tmp_path: Path, batch_size: int, every: int,
        seconds: float, fault: int | None, on_failure: str) -> None:
    """For any fault batch f (or none) and watch settings: the watchdog checks after
    every batch when the time trigger is tiny, else after every ``every``-th, and after
    the last batch if that was not checked; the batches that ran are exactly those up to
    the first check at or after f; with restore every removed object is back byte for
    byte, with halt exactly the removed objects are in quarantine. Without a fault the
    stage completes."""
    f, backup = world
    _reset(f, backup)
    keys = f.manifest(0)
    nb = -(-len(keys) // batch_size)
    fb = None if fault is None else fault % nb
    flag = tmp_path / "flag"
    flag.unlink(missing_ok=True)
    res = _run(f, fb, flag.touch, batch_size=batch_size, watch_every_batches=every,
               watch_every_seconds=seconds, on_failure=on_failure, canary_sample=0,
               health_checks=(f"test ! -e {flag}",))
    flag.unlink(missing_ok=True)
    checked = sorted({b for b in range(nb) if seconds < 1 or (b + 1) % every == 0} | {nb - 1})
    last = nb - 1 if fb is None else min(b for b in checked if b >= fb)
    assert [c["batch"] for c in _journal(f, "watchdog-check")] == \
        [b for b in checked if b <= last]
    ran = [r["batch"] for r in _batch_records(f)]
    assert ran == list(range(last + 1)), (ran, fb, last)
    assert [r["batch"] for r in _journal(f, "batch-done")] == ran
    # The next batch may have been prepared (reconciled, re-checked), never touched.
    assert [r["batch"] for r in _journal(f, "batch-start")] in (ran, [*ran, last + 1])
    removed = {k for r in _batch_records(f) for k in r["removed"]}
    assert len(removed) == min(len(keys), (last + 1) * batch_size)
    after = _tree_digest(f.d.store)
    qdir = f.d.store / "_cleanup" / "quarantine" / f.plan_id
    in_quarantine = {p.relative_to(qdir).as_posix() for p in qdir.rglob("*") if p.is_file()}
    if fb is None:
        assert isinstance(res, ExecuteResult)
        assert res.moved == len(keys)
        assert in_quarantine == removed == set(keys)
    elif on_failure == "restore":
        assert isinstance(res, WatchdogHalt), res
        assert after == f.before
        assert res.restored == {"restored": len(removed)}
    else:
        assert isinstance(res, WatchdogHalt), res
        assert set(f.before) - set(after) == removed
        assert {k: v for k, v in f.before.items() if k not in removed} == after
        assert in_quarantine == removed


@pytest.mark.s3
def test_canary_halts_and_restores_on_moto(moto_server: S3Server, tmp_path: Path,
                                           keys_dir: Path) -> None:
    f = S3Flow(moto_server, tmp_path, keys_dir, "--stages", "100%", internal_orphans=3)
    ok(f.plan_result)
    f.approve_and_witness()
    before = f.listing()
    planned = {f"data/internal/t/{i}.parquet" for i in range(3)}
    victim = "data/acme/t/5.parquet"

    def progress(_moved: int, _bytes: int) -> None:
        progress.calls += 1  # type: ignore[attr-defined]
        if progress.calls == 1:  # type: ignore[attr-defined]
            f.client.delete_object(Bucket=f.bucket, Key=victim)

    progress.calls = 0  # type: ignore[attr-defined]
    opts = ExecuteOptions(plan_dir=str(f.plan_dir), stage=0, executor="alice",
                          key=str(f.alice), trust_root=f.trust_root, batch_size=1,
                          watch_every_batches=2, canary_sample=100, progress=progress)
    with _environment(f.env, None), pytest.raises(WatchdogHalt) as err:
        execute(opts)
    assert "canary: 1 of" in err.value.message
    assert "acme/t/5.parquet" in err.value.message
    assert err.value.restored == {"restored": 2}  # batches 0 and 1 ran; batch 2 never did
    after = f.listing()
    assert {k: v for k, v in after.items() if "/_cleanup/" not in k} == \
        {k: v for k, v in before.items() if "/_cleanup/" not in k and k != victim}
    assert all(after[k] == before[k] for k in planned)
    assert not [k for k in after if "/_cleanup/quarantine/" in k]
    st0 = f.status()["stages"][0]
    assert st0["state"] == "halted"
    assert st0["halt"]["by"] == "watchdog"
    assert_one_line_error(f.execute(), 3, "halted by the watchdog")
    ok(run_cli(["audit", "verify", f.store_url], env=f.env))
