"""Store wrappers and capabilities: a DryRunStore never mutates and reports what the real
store then does; a FaultStore injects exactly the configured faults; capabilities are found
through wrappers; a fault injected mid-batch leaves a journal that agrees with the store and
the resumed run counts exactly."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup import executor
from cleanup.core.paths import parse_store
from cleanup.errors import StoreError
from cleanup.executor import execute
from cleanup.journal import journal_path, read_records, stage_state
from cleanup.stores.base import (
    ConditionalStore,
    ListingSource,
    ObjectInfo,
    Store,
    StoreWrapper,
    VersionedStore,
    capability,
)
from cleanup.stores.local import LocalStore
from cleanup.stores.wrappers import DryRunStore, FaultStore, InjectedFault
from tests.test_execute_guards import _opts, _quarantined
from tests.test_execute_local import Flow, _tree_digest

PLAN = "ab" * 32  # a plan id is a sha256 hex digest
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
KEYS = ("a", "b", "d/c", "d/e")


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes] | None]:
    """Every entry under root, reserved prefix included: directories as None, files as
    (inode, mtime_ns, ctime_ns, content). Equal trees mean nothing was written, moved,
    linked or removed."""
    out: dict[str, tuple[int, int, int, bytes] | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            out[rel] = None
        else:
            s = p.lstat()
            out[rel] = (s.st_ino, s.st_mtime_ns, s.st_ctime_ns, p.read_bytes())
    return out


def _objs(store: Store, keys: Sequence[str], stale: bool) -> list[ObjectInfo]:
    """What an executor would pass: the current state of existing keys (with a wrong
    etag when ``stale``), a made-up row for absent ones."""
    cur = store.current(list(keys))
    out = []
    for k in dict.fromkeys(keys):
        c = cur.get(k)
        if c is None:
            out.append(ObjectInfo(k, 1, _EPOCH, "nope"))
        else:
            out.append(ObjectInfo(k, c.size, c.last_modified, "stale" if stale else c.etag))
    return out


_key = st.sampled_from(KEYS)
_keys = st.lists(_key, min_size=0, max_size=4)
_op = st.one_of(
    st.tuples(st.just("put"), _key, st.binary(max_size=8)),
    st.tuples(st.just("put_if_absent"), _key, st.binary(max_size=8)),
    st.tuples(st.just("delete_key"), _key),
    st.tuples(st.just("quarantine"), _keys, st.booleans()),
    st.tuples(st.just("delete"), _keys, st.booleans()),
    st.tuples(st.just("restore"), _key),
    st.tuples(st.just("purge"), _keys),
    st.tuples(st.just("reads"), _keys),
)


def _call(store: Store, real: Store, op: tuple[Any, ...]) -> object:
    name = op[0]
    if name in ("put", "put_if_absent"):
        return getattr(store, name)(op[1], op[2])
    if name == "delete_key":
        store.delete_key(op[1])
        return None
    if name == "quarantine":
        return store.quarantine(PLAN, _objs(real, op[1], op[2]))
    if name == "delete":
        return store.delete(_objs(real, op[1], op[2]))
    if name == "restore":
        return store.restore(PLAN, op[1])
    if name == "purge":
        return store.purge(PLAN, list(dict.fromkeys(op[1])))
    return (sorted(o.key for o in store.iter_objects()), store.current(list(op[1])),
            [store.get_bytes(k) for k in op[1]], store.list_keys(""), store.region())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.sets(_key), ops=st.lists(_op, max_size=12))
def test_dry_run_store_never_mutates_and_reports_what_the_store_then_does(
        initial: set[str], ops: list[tuple[Any, ...]]) -> None:
    """Each call goes first through a DryRunStore (the tree must be byte-identical after
    it), then to the real LocalStore, which must report the same outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for k in initial:
            (root / k).parent.mkdir(parents=True, exist_ok=True)
            (root / k).write_bytes(k.encode())
        real = LocalStore(parse_store(str(root)))
        dry = DryRunStore(real)
        for op in ops:
            before = _tree(root)
            said = _call(dry, real, op)
            assert _tree(root) == before, op
            did = _call(real, real, op)
            assert said == did, op
        with pytest.raises(StoreError, match="dry run"):
            dry.probe_clock()


def test_dry_run_store_records_what_it_would_do(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    real = LocalStore(parse_store(str(tmp_path)))
    dry = DryRunStore(real)
    objs = list(real.current(["a"]).values())
    assert dry.quarantine(PLAN, objs) == {"a": None}
    assert dry.delete(objs) == {"a": None}
    dry.put("_cleanup/x", b"1")
    assert dry.actions == [("quarantine", PLAN, "a"), ("delete", "a"), ("put", "_cleanup/x")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# ------------------------------------------------------------------------ capabilities


class _Versioned:
    """A LocalStore with a fake versioning capability that records its mutations."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner, self.ref = inner, inner.ref
        self.mutations: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def versioning_status(self) -> str:
        return "Enabled"

    def marker_for(self, key: str, etag: str | None) -> str | None:
        return None

    def delete_to_markers(self, objs: Sequence[ObjectInfo]
                          ) -> tuple[dict[str, str | None], dict[str, str]]:
        self.mutations.append("delete_to_markers")
        return {o.key: None for o in objs}, {o.key: "m" for o in objs}

    def remove_marker(self, key: str, marker: str) -> str:
        self.mutations.append("remove_marker")
        return "restored"

    def purge_versions(self, key: str, marker: str) -> int:
        self.mutations.append("purge_versions")
        return 1


def test_capabilities_are_found_through_wrappers(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    local = LocalStore(parse_store(str(tmp_path)))
    assert capability(local, VersionedStore) is None
    assert capability(local, ConditionalStore) is local
    assert isinstance(DryRunStore(local), StoreWrapper)
    assert capability(DryRunStore(local), VersionedStore) is None
    assert capability(FaultStore(DryRunStore(local)), ConditionalStore) is local

    versioned = _Versioned(local)
    assert capability(versioned, VersionedStore) is versioned
    # Through a dry run: the reads answer, the mutations are reported, never done.
    view = capability(DryRunStore(versioned), VersionedStore)
    assert view is not None
    assert view is not versioned
    assert view.versioning_status() == "Enabled"
    objs = list(local.current(["a"]).values())
    assert view.delete_to_markers(objs) == ({"a": None}, {})
    assert view.remove_marker("a", "m") == "exists"
    assert view.purge_versions("a", "m") == 0
    assert versioned.mutations == []
    # Through a fault store: calls are counted and reach the store.
    fault = FaultStore(versioned, fail_calls={"remove_marker": {1}})
    fview = capability(fault, VersionedStore)
    assert fview is not None
    with pytest.raises(InjectedFault):
        fview.remove_marker("a", "m")
    assert fview.remove_marker("a", "m") == "restored"
    assert fault.calls["remove_marker"] == 2
    assert versioned.mutations == ["remove_marker"]


def test_listing_sources_share_one_interface(tmp_path: Path) -> None:
    from cleanup.inventory import LiveListing
    from cleanup.stores.s3_inventory import InventoryReport, S3InventorySource

    (tmp_path / "a").write_bytes(b"xyz")
    live: ListingSource = LiveListing(LocalStore(parse_store(str(tmp_path))))
    assert live.meta().source == "listing"
    assert live.meta().listed_at_clock == "local"
    assert [b.num_rows for b in live.iter_batches()] == [1]
    report = InventoryReport("m.json", "bkt", _EPOCH, "CSV", [])
    s3: ListingSource = S3InventorySource(report, parse_store("s3://bkt/p/"))
    m = s3.meta()
    assert (m.store, m.listed_at, m.source) == ("s3://bkt/p/", _EPOCH, "s3-inventory:m.json")


# ------------------------------------------------------------------------ fault store


def _local(tmp_path: Path, *keys: str) -> LocalStore:
    for k in keys:
        (tmp_path / k).write_bytes(k.encode())
    return LocalStore(parse_store(str(tmp_path)))


def test_fault_store_raises_on_the_configured_calls(tmp_path: Path) -> None:
    local = _local(tmp_path, "a", "b", "c")
    fault = FaultStore(local, fail_calls={"quarantine": {2}})
    infos = local.current(["a", "b", "c"])
    assert fault.quarantine(PLAN, [infos["a"]]) == {"a": None}
    with pytest.raises(InjectedFault, match="quarantine call 2"):
        fault.quarantine(PLAN, [infos["b"]])
    assert (tmp_path / "b").exists()  # raised before reaching the store
    assert fault.quarantine(PLAN, [infos["c"]]) == {"c": None}
    assert fault.calls["quarantine"] == 3


def test_fault_store_per_key_outcomes_and_a_crash_mid_batch(tmp_path: Path) -> None:
    local = _local(tmp_path, "a", "b", "c", "d")
    infos = local.current(["a", "b", "c", "d"])
    fault = FaultStore(local, key_faults={"b": "error: injected", "d": RuntimeError("crash")})
    with pytest.raises(RuntimeError, match="crash"):
        fault.quarantine(PLAN, [infos[k] for k in "abcd"])
    # a and c were moved before the crash, b reported-and-kept is still there, d untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_cleanup", "b", "d"]
    fault.key_faults.pop("d")
    assert fault.delete([infos["b"], infos["d"]]) == {"b": "error: injected", "d": None}
    assert (tmp_path / "b").exists()
    assert not (tmp_path / "d").exists()
    assert FaultStore(local, key_faults={"a": "error: nope"}).restore(PLAN, "a") == "error: nope"


# ------------------------------------------------------------------------ executor


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    f = Flow(tmp_path / "demo")
    f.witness()
    return f


def _with_store(monkeypatch: pytest.MonkeyPatch, wrap: Any) -> list[Any]:
    """Make the executor open the plan's store wrapped by ``wrap``; the wrappers made."""
    made: list[Any] = []
    real_open = executor.open_plan_store

    def opened(*a: Any) -> Any:
        made.append(wrap(real_open(*a)))
        return made[-1]

    monkeypatch.setattr(executor, "open_plan_store", opened)
    return made


def test_fault_mid_batch_leaves_a_journal_that_agrees_and_resumes_exactly(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = flow.manifest(0)
    assert len(keys) >= 4
    sizes = {k: (flow.d.store / k).stat().st_size for k in keys}
    # Batches of 2: batch 0 completes, batch 1 moves keys[2] and crashes at keys[3].
    _with_store(monkeypatch, lambda s: FaultStore(
        s, key_faults={keys[3]: InjectedFault("injected crash mid-batch")}))
    with pytest.raises(InjectedFault):
        execute(_opts(flow, batch_size=2))
    monkeypatch.undo()

    state = stage_state(str(flow.plan), 0)
    assert state.state != "complete"
    assert sorted(state.done_batches) == [0]
    done = state.done_batches[0]
    assert (done["moved"], done["moved_bytes"]) == (2, sizes[keys[0]] + sizes[keys[1]])
    # The journal agrees with the store: a done batch is wholly quarantined; in the
    # interrupted one every key is in exactly one place.
    for k in keys[:2]:
        assert _quarantined(flow, k).exists()
        assert not (flow.d.store / k).exists()
    for k in keys[2:]:
        assert _quarantined(flow, k).exists() != (flow.d.store / k).exists()
    assert _quarantined(flow, keys[2]).exists()
    assert (flow.d.store / keys[3]).exists()

    flow.witness()  # the crashed run consumed its witness; the resume is witnessed again
    res = execute(_opts(flow, batch_size=2))
    assert (res.moved, res.moved_bytes, res.skipped) == (len(keys), sum(sizes.values()), {})
    assert res.resumed_batches == 1
    assert res.batches == (len(keys) + 1) // 2
    state = stage_state(str(flow.plan), 0)
    assert (state.state, state.moved, state.moved_bytes) == ("complete", res.moved,
                                                             res.moved_bytes)
    redone = [r for r in read_records(journal_path(str(flow.plan), 0))
              if r.get("event") == "batch-checked" and r.get("batch") == 1]
    assert redone[-1]["already"] == 1  # keys[2], moved before the crash, counted once
    for k in keys:
        assert hashlib.sha256(_quarantined(flow, k).read_bytes()).hexdigest() == flow.before[k]
    assert _tree_digest(flow.d.store) == {k: v for k, v in flow.before.items()
                                          if k not in keys}


def test_dry_run_calls_no_mutating_store_method(flow: Flow,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    mutating = ("quarantine", "delete", "restore", "purge", "put", "put_if_absent",
                "delete_key", "probe_clock")
    made = _with_store(monkeypatch, lambda s: FaultStore(
        s, fail_calls={m: range(1, 1000) for m in mutating}))
    res = execute(_opts(flow, dry_run=True))
    assert res.dry_run
    assert res.moved == len(flow.manifest(0))
    assert made
    assert not any(made[0].calls[m] for m in mutating)
    assert made[0].calls["current"] > 0
    assert _tree_digest(flow.d.store) == flow.before
    assert not (flow.d.store / "_cleanup" / "quarantine").exists()
