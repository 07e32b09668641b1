"""cleanup.model.Plan: the only reader and writer of plan.json's layout.

A plan made by the planner survives to_json/from_json unchanged in both directions
(so plan.json's bytes, and with them the plan id, are what the model writes), and
a malformed plan.json is refused with a one-line error, never a KeyError/TypeError.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.bundle import PlanBundle
from cleanup.core.canonical import canonical_json
from cleanup.errors import InvariantViolation, UsageError
from cleanup.model import Plan, Stage, Stamp
from cleanup.planner import PlanOptions, make_plan
from cleanup.signoff import check_integrity
from tests.conftest import assert_one_line_error, run_cli
from tests.factories import sample_plan, write_inventory_file, write_snapshot_file

NOW = datetime(2026, 5, 20, 12, 0, 0, 123456, tzinfo=UTC)
OLD = NOW - timedelta(days=9)


def _make(tmp: Path, key: Path, *, internal: tuple[str, ...] = ("t0",),
          refs_ok: bool = True) -> tuple[Path, Plan]:
    store = tmp / "store"
    store.mkdir()
    objects = [(f"t{i % 3}/d/part-{i:02d}.parquet", 100 + i, OLD + timedelta(seconds=i))
               for i in range(30)]
    inv, snap = tmp / "inv.parquet", tmp / "snap.parquet"
    write_inventory_file(inv, str(store), objects, listed_at=NOW - timedelta(hours=1))
    write_snapshot_file(snap, [k for k, _s, _t in objects[2:]] if refs_ok else [],
                        taken_at=NOW - timedelta(hours=2))
    res = make_plan(PlanOptions(store=str(store), inventory=str(inv), snapshot=str(snap),
                                out=str(tmp / "plan"), author="alice", key=str(key),
                                internal=internal, now=NOW))
    return tmp / "plan", res.plan


def test_planned_plan_round_trips_byte_for_byte(tmp_path: Path, alice_key: Path) -> None:
    plan_dir, plan = _make(tmp_path, alice_key)
    raw = (plan_dir / "plan.json").read_bytes()
    data = json.loads(raw)
    assert plan.to_bytes() == raw
    assert canonical_json(plan.to_json()) == raw
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_json(data).to_json() == data
    assert plan.plan_id == hashlib.sha256(raw).hexdigest()
    with PlanBundle.open(str(plan_dir)) as bundle:
        assert bundle.plan == plan
        assert bundle.plan_id == plan.plan_id
        assert bundle.manifest_intact
        rows = [o.key for b in bundle.iter_stage(0, 3) for o in b]
        assert rows == sorted(rows)
        assert len(rows) == plan.stages[0].objects


def test_sample_plan_round_trips() -> None:
    p = sample_plan()
    assert Plan.from_json(p.to_json()) == p
    assert Plan.from_json(json.loads(p.to_bytes())).to_bytes() == p.to_bytes()


_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC))
_text = st.text(max_size=12)
_count = st.integers(0, 10**15)


@settings(max_examples=60, deadline=None)
@given(created=_times, cutoff=_times, clock=_text, author=_text, rows=st.none() | _count,
       stages=st.lists(st.tuples(_text, _count, _count, _count), max_size=4),
       overrides=st.lists(_text, max_size=3), hold=st.integers(0, 10**9),
       newest=st.none() | _times, examples=st.lists(st.tuples(_text, _text), max_size=3))
def test_round_trip_property(created: datetime, cutoff: datetime, clock: str, author: str,
                             rows: int | None, stages: list[tuple[str, int, int, int]],
                             overrides: list[str], hold: int, newest: datetime | None,
                             examples: list[tuple[str, str]]) -> None:
    p = sample_plan()
    p = replace(
        p, created_at=Stamp(created, clock), cutoff=Stamp(cutoff, "derived"), author=author,
        inputs=replace(p.inputs, snapshot=replace(p.inputs.snapshot, rows=rows)),
        stages=tuple(Stage(i, s, o, b, t) for i, (s, o, b, t) in enumerate(stages)),
        overrides=tuple(overrides), hold=timedelta(microseconds=hold),
        manifest=replace(p.manifest, newest_last_modified=newest),
        references=replace(p.references, near_miss_examples=tuple(examples)))
    assert Plan.from_json(p.to_json()) == p
    data = json.loads(p.to_bytes())
    assert Plan.from_json(data).to_json() == data


def _drop(d: dict[str, Any], path: tuple[str, ...]) -> None:
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


PATHS = [("format",), ("store",), ("inputs", "snapshot", "taken_at", "time"), ("cutoff",),
         ("policy", "min_buffer"), ("stages",), ("references", "encoding"),
         ("manifest", "sha256"), ("clocks",), ("invariants",), ("hold",)]


@pytest.mark.parametrize("path", PATHS, ids=[".".join(p) for p in PATHS])
@pytest.mark.parametrize("how", ["missing", "null", "number", "list", "object"])
def test_malformed_plan_is_a_one_line_usage_error(path: tuple[str, ...], how: str) -> None:
    data = sample_plan().to_json()
    if how == "missing":
        _drop(data, path)
    else:
        _set(data, path, {"null": None, "number": 7, "list": [1], "object": {"x": 1}}[how])
    with pytest.raises(UsageError) as exc:
        Plan.from_json(data)
    assert "\n" not in exc.value.message
    assert exc.value.message.startswith("plan.json")


@pytest.mark.parametrize("bad", [[], "plan", None, {"format": "cleanup-plan/0"}])
def test_not_a_plan(bad: Any) -> None:
    with pytest.raises(UsageError, match="plan.json"):
        Plan.from_json(bad)


def test_unknown_key_and_bad_values_are_refused() -> None:
    for path, value in [(("extra",), 1), (("inputs", "snapshot", "extra"), 1),
                        (("cutoff", "time"), "yesterday"), (("buffer",), "24 hours"),
                        (("policy", "min_approvals"), -1), (("stages",), [{"stage": 0}]),
                        (("unsafe_store_without_conditional_writes",), 0),
                        (("references", "near_miss_examples"), [["a"]]),
                        (("inputs", "inventory", "rows"), True)]:
        data = sample_plan().to_json()
        _set(data, path, value)
        with pytest.raises(UsageError, match=r"^plan\.json"):
            Plan.from_json(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                          lambda c: st.lists(c, max_size=3)
                          | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6),
       where=st.sampled_from(PATHS))
def test_any_json_in_any_place_is_refused_or_read(value: Any, where: tuple[str, ...]) -> None:
    data = sample_plan().to_json()
    _set(data, where, value)
    message = ""
    try:
        Plan.from_json(data)
    except UsageError as exc:
        message = exc.message
    assert "\n" not in message


def test_malformed_plan_json_on_disk_is_i6(tmp_path: Path) -> None:
    d = tmp_path / "plan"
    d.mkdir()
    data = sample_plan().to_json()
    del data["inputs"]["snapshot"]["taken_at"]
    (d / "plan.json").write_bytes(canonical_json(data))
    with pytest.raises(UsageError, match="taken_at is missing"):
        PlanBundle.open(str(d))
    with pytest.raises(InvariantViolation, match="I6 plan-integrity"):
        check_integrity(str(d))
    r = run_cli(["verify", str(d), "--allowed-signers", str(d / "plan.json")])
    assert_one_line_error(r, 3, "I6 plan-integrity", "plan.json", "taken_at is missing")


def test_bundle_uses_its_verified_copy(tmp_path: Path, alice_key: Path) -> None:
    """The manifest checked at first use is the one read afterwards, even if the file
    in the plan directory is replaced in between."""
    plan_dir, plan = _make(tmp_path, alice_key)
    with PlanBundle.open(str(plan_dir)) as bundle:
        assert bundle.manifest_intact
        (plan_dir / "manifest.parquet").write_bytes(b"replaced")
        keys = [o.key for b in bundle.iter_stage(0, 100) for o in b]
        assert len(keys) == plan.stages[0].objects
    with PlanBundle.open(str(plan_dir)) as bundle:
        assert bundle.manifest_state == "changed"
        with pytest.raises(InvariantViolation, match="I6 plan-integrity"):
            bundle.check_manifest()


@given(us=st.integers(-10**12, 10**12))
def test_clock_skews_of_either_sign_round_trip(us: int) -> None:
    """A store clock behind the local one is a negative skew: plan.json must hold it."""
    p = replace(sample_plan(), clocks={"store": timedelta(microseconds=us)})
    assert Plan.from_json(json.loads(canonical_json(p.to_json()))) == p
