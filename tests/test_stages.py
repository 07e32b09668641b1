"""I10 phased rollout: stage order, hold, skip ratio, health gate; policy file.

Holds are measured by the store's clock from the store's stage records (I10, I18), so
the flows here use a 3 s hold and wait for it (no injected clock, no fixed sleep).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup.core.stages import PrevStage, stage_gate
from cleanup.errors import InvariantViolation
from cleanup.executor import ExecuteOptions, execute
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.scenario import wait_until
from tests.test_execute_local import Flow, ok

T0 = datetime(2026, 5, 14, 21, 30, tzinfo=UTC)


@given(stage=st.integers(0, 3),
       state=st.sampled_from(["not-started", "running", "halted", "complete"]),
       finished=st.one_of(st.none(), st.integers(-10**6, 10**6)),
       now=st.integers(-10**6, 3 * 10**6), hold=st.integers(0, 10**6),
       planned=st.integers(0, 1000), skipped=st.integers(0, 1000),
       max_skip=st.floats(0, 1))
def test_i10_gate_property(stage: int, state: str, finished: int | None, now: int, hold: int,
                           planned: int, skipped: int, max_skip: float) -> None:
    """For any previous-stage facts and clock, a stage may start iff I10 holds."""
    skipped = min(skipped, planned)
    fin = None if finished is None else T0 + timedelta(seconds=finished)
    prev = PrevStage(stage - 1, state, fin, planned, skipped) if stage > 0 else None
    c = stage_gate(stage, prev, hold=timedelta(seconds=hold), max_skip_fraction=max_skip,
                   now=T0 + timedelta(seconds=now))
    expected = stage == 0 or (
        state == "complete" and fin is not None
        and (skipped / planned if planned else 0.0) <= max_skip
        and T0 + timedelta(seconds=now) >= fin + timedelta(seconds=hold))
    assert c.ok == expected
    assert c.invariant == "I10 phased"


HOLD = timedelta(seconds=3)


def _opts(f: Flow, stage: int, **kw: object) -> ExecuteOptions:
    return ExecuteOptions(plan_dir=str(f.plan), stage=stage, executor="alice",
                          key=str(f.d.key("alice")), trust_root=f.trust_root,
                          **kw)  # type: ignore[arg-type]


@pytest.fixture
def stage0_done(tmp_path: Path) -> tuple[Flow, datetime]:
    f = Flow(tmp_path / "demo")
    f.witness(0)
    ok(f.execute(0))
    finished = datetime.now(UTC)
    return f, finished


@pytest.fixture
def short_hold(tmp_path: Path) -> Flow:
    """Stage 0 executed on a plan with a 3 s hold."""
    f = Flow(tmp_path / "demo", "--hold", "3s", "--override-minimums")
    f.witness(0)
    ok(f.execute(0))
    return f


def _after_hold(f: Flow) -> None:
    st = json.loads(ok(run_cli(["status", str(f.plan), "--json"], env=f.env)).out)
    ends = datetime.fromisoformat(st["stages"][0]["hold_ends_at"])
    wait_until(lambda: datetime.now(UTC) > ends + timedelta(milliseconds=100),
               what="the hold to end")


def test_stage1_waits_for_the_hold_then_runs(short_hold: Flow) -> None:
    f = short_hold
    with pytest.raises(InvariantViolation, match="I10 phased.*hold of 3s ends at"):
        execute(_opts(f, 1))
    _after_hold(f)
    f.witness(1)
    res = execute(_opts(f, 1))
    assert res.moved == len(f.manifest(1))
    gate = [json.loads(line) for line in (f.plan / "journal" / "stage-1.jsonl").read_text()
            .splitlines() if '"gate"' in line]
    assert gate[-1]["passed"] is True
    assert gate[-1]["results"][0]["facts"]["probed"] > 0
    st = json.loads(ok(run_cli(["status", str(f.plan), "--json"])).out)
    assert st["stages"][1]["gate"]["passed"] is True


def test_failed_read_probe_blocks_the_next_stage(short_hold: Flow) -> None:
    f = short_hold
    _after_hold(f)
    f.witness(1)
    # A referenced file disappeared (e.g. removed by mistake): the probe must notice.
    victim = sorted(p for p in (f.d.store / "internal-analytics").rglob("part-0005.parquet"))[0]
    victim.unlink()
    with pytest.raises(InvariantViolation, match="I10 phased: read probe: 1 of"):
        execute(_opts(f, 1))
    assert len(f.manifest(1)) > 0
    for k in f.manifest(1):
        assert (f.d.store / k).exists(), "nothing of stage 1 may be touched"


def test_failing_health_check_blocks_the_next_stage(short_hold: Flow) -> None:
    f = short_hold
    _after_hold(f)
    f.witness(1)
    with pytest.raises(InvariantViolation, match="health check 'false' failed"):
        execute(_opts(f, 1, health_checks=("false",)))
    f.witness(1)  # each run consumes its witness
    with pytest.raises(InvariantViolation, match="timed out"):
        execute(_opts(f, 1, health_checks=("sleep 5",), health_timeout=0.5))
    f.witness(1)
    res = execute(_opts(f, 1, health_checks=("true",)))
    assert res.moved == len(f.manifest(1))


def test_stages_cannot_be_skipped(short_hold: Flow) -> None:
    f = short_hold
    _after_hold(f)
    with pytest.raises(InvariantViolation, match="stage 1 is not-started"):
        execute(_opts(f, 2))


def test_cli_refusal_names_i10_and_when_the_hold_ends(stage0_done: tuple[Flow, datetime]) -> None:
    f, _finished = stage0_done
    r = f.execute(1, "--health-check", "true")
    assert_one_line_error(r, 3, "I10 phased", "hold of 24h ends at")
    st = ok(run_cli(["status", str(f.plan)]))
    assert "next: wait: stage 0's hold ends at" in st.out


def test_policy_file(tmp_path: Path) -> None:
    from tests.test_plan_cli import Case

    case = Case(tmp_path, _key(tmp_path))
    cfg = tmp_path / "cleanup.toml"
    cfg.write_text("[policy]\nmax_delete_fraction = 0.06\nmin_hold = \"48h\"\n")
    r = case.plan("--config", str(cfg), "--json")
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["policy"]["max_delete_fraction"] == 0.06
    assert plan["policy"]["min_hold"] == "2d"
    assert plan["hold"] == "2d"
    cfg.write_text("[policy]\nmax_delete_fraction = 0.04\n")
    case.assert_refused(case.plan("--config", str(cfg), out="p2"), "I5 blast-radius",
                        "above max_delete_fraction 4.00%", out="p2")
    cfg.write_text("[policy]\nmin_hold = \"1h\"\n")
    case.assert_refused(case.plan("--config", str(cfg), out="p3"), "I10 phased",
                        "min_hold 1h < floor 24h", out="p3")
    r = case.plan("--config", str(cfg), "--override-minimums", out="p4")
    assert r.code == 0, r.err
    assert any("min_hold" in o for o in json.loads(
        (tmp_path / "p4" / "plan.json").read_text())["overrides"])
    for bad, needle in (("[policy]\nmax_delete = 1\n", "unknown policy value"),
                        ("[policy]\nmax_delete_fraction = 2\n", "between 0 and 1"),
                        ("[policy]\nmin_hold = \"soon\"\n", "invalid duration"),
                        ("[polcy]\n", "unknown table"), ("not toml [", "not valid TOML")):
        cfg.write_text(bad)
        assert_one_line_error(case.plan("--config", str(cfg), out="p5"), 2, needle)


def _key(tmp: Path) -> Path:
    from tests.conftest import make_key

    return make_key(tmp, "alice")
