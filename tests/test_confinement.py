"""I19 confinement: every store path goes through one join that refuses ``..``, absolute
paths, NUL and the reserved prefix; a plan never holds such a key, and a manifest that
does (hand-made or swapped in and re-signed) is refused before anything is touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup.core.paths import parse_store, unsafe_key_reason
from cleanup.errors import InvariantViolation
from cleanup.stores.base import ObjectInfo, quarantine_key
from cleanup.stores.local import LocalStore
from tests.conftest import assert_one_line_error
from tests.test_execute_guards import _reseal
from tests.test_execute_local import Flow, _tree_digest
from tests.test_plan_cli import OLD, Case

PLAN = "ab" * 32


@pytest.fixture
def case(tmp_path: Path, alice_key: Path) -> Case:
    return Case(tmp_path, alice_key)


def test_plan_refuses_a_key_that_climbs_out(case: Case) -> None:
    evil = "../../../acme/orders/part-0010.parquet"
    case.write(objects=[*case.objects, (evil, 10, OLD)])
    case.assert_refused(case.plan(), "I19 confinement", "not safe store paths")


@pytest.mark.parametrize("key", ["../live.bin", "t/../../live.bin", "/abs", "a/./b", "a\x00b",
                                 "_cleanup/lock", "a//b", ""])
def test_local_store_refuses_unsafe_paths_and_touches_nothing(tmp_path: Path, key: str) -> None:
    root = tmp_path / "store"
    (root / "t").mkdir(parents=True)
    live = tmp_path / "live.bin"
    live.write_bytes(b"live")
    (root / "t" / "k").write_bytes(b"k")
    store = LocalStore(parse_store(str(root)))
    before = _tree_digest(tmp_path)
    with pytest.raises(InvariantViolation, match="I19 confinement"):
        store.purge(PLAN, [key])
    with pytest.raises(InvariantViolation, match="I19 confinement"):
        store.restore(PLAN, key)
    with pytest.raises(InvariantViolation, match="I19 confinement"):
        store.quarantine(PLAN, [ObjectInfo(key, 4, OLD, "e")])
    assert _tree_digest(tmp_path) == before
    assert live.read_bytes() == b"live"


@given(st.text(alphabet="ab./\x00_", max_size=12))
def test_quarantine_key_never_leaves_the_quarantine(key: str) -> None:
    """For any key: either it is refused, or its quarantine path, resolved, stays under
    _cleanup/quarantine/<plan id>/."""
    import posixpath

    if unsafe_key_reason(key, kind="s3") is not None:
        with pytest.raises(InvariantViolation):
            quarantine_key(PLAN, key)
        return
    q = quarantine_key(PLAN, key)
    assert posixpath.normpath(q).startswith(f"_cleanup/quarantine/{PLAN}/")


def test_resealed_manifest_with_a_climbing_key_is_refused_by_execute_and_purge(
        tmp_path: Path) -> None:
    """A manifest row '../../<live key>' signed into a plan (as a careless or hostile
    tool could): execute refuses before anything is touched."""
    flow = Flow(tmp_path / "demo")
    live = next(p for p in sorted(flow.d.store.rglob("*.parquet"))
                if p.relative_to(flow.d.store).as_posix() not in flow.manifest(0)
                and not p.relative_to(flow.d.store).as_posix().startswith("_cleanup/"))
    rel = live.relative_to(flow.d.store).as_posix()
    climbing = "../../../" + rel  # from _cleanup/quarantine/<id>/ back to the live file
    _reseal(flow, "SELECT * REPLACE (CASE WHEN key = (SELECT min(key) FROM {m} WHERE "
                  "stage = 0) THEN ? ELSE key END AS key) FROM {m}", [climbing])
    before = _tree_digest(flow.d.store)
    r = flow.execute()
    assert_one_line_error(r, 3, "I19 confinement")
    assert _tree_digest(flow.d.store) == before
    assert hashlib.sha256(live.read_bytes()).hexdigest() == before[rel]


@settings(deadline=None)
@given(keys=st.lists(st.text(alphabet="ab./\x00_c", max_size=10), min_size=1, max_size=20),
       kind=st.sampled_from(["local", "s3"]))
def test_unsafe_key_sql_agrees_with_python(keys: list[str], kind: str) -> None:
    """The plan-time SQL check (engine) and the store join (Python) refuse the same keys."""
    import duckdb
    import pyarrow as pa

    from cleanup.core.paths import unsafe_key_sql

    con = duckdb.connect()
    con.register("k", pa.table({"i": list(range(len(keys))), "key": keys}))
    got = [r[0] for r in con.execute(
        f"SELECT {unsafe_key_sql('key', kind)} FROM k ORDER BY i").fetchall()]
    assert got == [unsafe_key_reason(k, kind=kind) is not None for k in keys]


def test_a_nested_stores_bookkeeping_is_never_a_candidate(case: Case) -> None:
    """A layer inside this store is a cleanup store of its own: its ``_cleanup/`` folder
    (quarantine -- the only copy of what it removed --, audit log, trust root) is
    referenced by no table, yet never a candidate of the outer store's plan."""
    import json

    import pyarrow.parquet as pq

    nested = [("acme/t/_cleanup/quarantine/p/part-1.parquet", 10, OLD),
              ("acme/t/_cleanup/audit/000000000001.json", 11, OLD)]
    case.write(objects=[*case.objects, *nested])
    r = case.plan("--internal", "internal", "--json")
    assert r.code == 0, r.err
    keys = pq.read_table(case.tmp / "plan" / "manifest.parquet").column("key").to_pylist()
    assert sorted(keys) == sorted(case.unreferenced)
    plan = json.loads((case.tmp / "plan" / "plan.json").read_text())
    assert plan["manifest"]["objects"] == len(case.unreferenced)
