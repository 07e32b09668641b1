"""Execution guards on a local store: atomic conditional writes, the scratch directory
under the lock (I12), rewrites the re-check must catch (I9, I2), file-system errors on
one key (I11), and manifests with a NULL size."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cleanup import executor
from cleanup.core.canonical import canonical_json, sha256_file
from cleanup.core.paths import parse_store
from cleanup.errors import UsageError
from cleanup.executor import ExecuteOptions, PurgeOptions, execute, purge
from cleanup.lock import Lock
from cleanup.stores.base import ObjectInfo
from cleanup.stores.local import LocalStore
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.scenario import Scenario
from tests.test_execute_local import Flow, _tree_digest, ok


def _opts(f: Flow, **kw: Any) -> ExecuteOptions:
    return ExecuteOptions(plan_dir=str(f.plan), stage=0, executor="alice",
                          key=str(f.d.key("alice")), trust_root=f.trust_root, **kw)


def _store(f: Flow) -> LocalStore:
    return LocalStore(parse_store(str(f.d.store)))


def _quarantined(f: Flow, key: str) -> Path:
    return f.d.store / "_cleanup" / "quarantine" / f.plan_id / key


def _reseal(f: Flow, sql: str, params: Sequence[object] = (), *,
            now: datetime | None = None) -> None:
    """Replace the manifest by ``sql`` (``{m}`` is the old one), then seal and sign the plan
    again as author and approver, and witness stage 0: a plan as an older planner, which
    did not refuse such rows, would have made and had signed."""
    from cleanup.signing import NS_PLAN, sign_file
    from cleanup.signoff import approve, publish

    now = now or datetime.now(UTC)
    m, tmp = f.plan / "manifest.parquet", f.plan / "manifest.new.parquet"
    query = sql.format(m=f"read_parquet('{m}')")
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM ({query}) ORDER BY stage, key) TO '{tmp}' "
                "(FORMAT parquet)", list(params))
    con.close()
    os.replace(tmp, m)
    plan = json.loads((f.plan / "plan.json").read_text())
    plan["manifest"]["sha256"] = sha256_file(str(m))
    raw = canonical_json(plan)
    (f.plan / "plan.json").write_bytes(raw)
    f.plan_id = hashlib.sha256(raw).hexdigest()
    author = f.plan / "signatures" / "author.json"
    doc = json.loads(author.read_text())
    doc.update(plan_id=f.plan_id, signed_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    author.write_bytes(canonical_json(doc))
    os.replace(sign_file(str(author), str(f.d.key("alice")), NS_PLAN),
               f.plan / "signatures" / "author.sig")
    shutil.rmtree(f.plan / "signatures" / "approvals", ignore_errors=True)
    approve(str(f.plan), "bob", str(f.d.key("bob")), now=now)
    publish(str(f.plan))
    # Witness as it happens; a plan refused before presence gets no challenge, and then the
    # witness has nothing to sign: the test asserts the refusal itself.
    Scenario.witness(f)


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    f = Flow(tmp_path / "demo")
    f.witness()
    return f


# ------------------------------------------------------------- 1. atomic put_if_absent


def test_put_if_absent_never_shows_a_partial_object(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """At every write the store makes, a reader sees the key absent or complete."""
    root = tmp_path / "store"
    root.mkdir()
    store = LocalStore(parse_store(str(root)))
    key, data = "_cleanup/audit/000000000001.json", b"x" * 100_000
    seen: list[bytes | None] = []
    real_write = os.write

    def spying_write(fd: int, buf: Any) -> int:
        seen.append(store.get_bytes(key))
        return real_write(fd, buf)

    monkeypatch.setattr(os, "write", spying_write)
    assert store.put_if_absent(key, data)
    assert not store.put_if_absent(key, b"second")
    monkeypatch.undo()
    assert seen
    assert all(s is None or s == data for s in seen), [len(s or b"") for s in seen]
    assert store.get_bytes(key) == data
    assert [p.name for p in (root / "_cleanup" / "audit").iterdir()] == [
        "000000000001.json"]  # no temp file left behind


# ------------------------------------------------------------- 3. scratch under the lock


def _scratch_of_a_running_execution(f: Flow) -> Path:
    live = f.plan / "journal" / ".scratch" / "reconcile-running" / "live.parquet"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"the running execution's reconcile copy")
    return live


def test_second_execute_gets_6_and_leaves_the_running_ones_scratch(flow: Flow) -> None:
    # The first execution of this plan holds the store lock (a live process on this host)
    # and has its reconcile copy in the journal scratch.
    lock, _ = Lock.acquire(_store(flow), executor="alice", plan_id=flow.plan_id)
    live = _scratch_of_a_running_execution(flow)
    try:
        assert_one_line_error(flow.execute(), 6, "locked by alice")
        assert live.read_bytes() == b"the running execution's reconcile copy"
        assert _tree_digest(flow.d.store) == flow.before
    finally:
        lock.release()
    # Once the first one is gone, a run clears the scratch it left and completes.
    res = json.loads(ok(flow.execute()).out)
    assert res["removed"] == len(flow.manifest(0)) > 0
    assert not live.exists()


def test_dry_run_keeps_others_scratch_and_leaves_none_of_its_own(flow: Flow) -> None:
    live = _scratch_of_a_running_execution(flow)
    res = json.loads(ok(flow.execute(0, "--dry-run")).out)
    assert res["removed"] == len(flow.manifest(0))
    assert live.read_bytes() == b"the running execution's reconcile copy"
    assert sorted(p.name for p in (flow.plan / "journal").iterdir()
                  if p.name.startswith(".scratch")) == [".scratch"]


# ------------------------------------------------------------- 4. rewrites and the cutoff


def test_same_size_rewrite_with_mtime_set_back_is_skipped(flow: Flow) -> None:
    keys = flow.manifest(0)
    p = flow.d.store / keys[0]
    st = p.stat()
    old = p.read_bytes()
    new = bytes(b ^ 0xFF for b in old)  # same size, other content, same inode
    with open(p, "r+b") as fh:
        fh.write(new)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime set back
    assert (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino)
    res = json.loads(ok(flow.execute()).out)
    assert res["skipped"] == {"changed": 1}
    assert res["removed"] == len(keys) - 1
    assert p.read_bytes() == new
    assert not _quarantined(flow, keys[0]).exists()


class _FreshTimes:
    """The plan's store, except that ``fresh`` keys now report a last_modified of now
    while their size and etag are what the inventory listed (e.g. the same bytes
    uploaded again to S3: same etag, new time)."""

    def __init__(self, inner: Any, fresh: set[str]) -> None:
        self.inner, self.fresh = inner, fresh

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        now = datetime.now(UTC)
        return {k: dataclasses.replace(o, last_modified=now) if k in self.fresh else o
                for k, o in self.inner.current(keys).items()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_unchanged_etag_but_modified_after_the_cutoff_is_skipped(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = flow.manifest(0)
    real_open = executor.open_plan_store
    monkeypatch.setattr(executor, "open_plan_store",
                        lambda *a: _FreshTimes(real_open(*a), {keys[1]}))
    res = execute(_opts(flow))
    assert res.skipped == {"changed": 1}
    assert res.moved == len(keys) - 1
    assert (flow.d.store / keys[1]).exists()
    assert not _quarantined(flow, keys[1]).exists()


# ------------------------------------------------------------- 5. one key the file system refuses


def _deep_key(store: Path, prefix: str, total: int = 4060) -> str:
    """A key whose path in ``store`` is ``total`` bytes, every component <= 255 bytes."""
    room = total - len(str(store)) - 1 - len(prefix) - len("part-deep.parquet")
    parts = []
    while room > 0:
        n = min(250, room - 1)
        if n < 1:
            break
        parts.append("d" * n)
        room -= n + 1
    key = prefix + "/".join(parts) + "/part-deep.parquet"
    assert len(str(store / key).encode()) <= 4060
    return key


def test_quarantine_path_too_long_is_an_error_outcome_not_a_crash(flow: Flow) -> None:
    """A plan (made before planning refused such keys) holds a key whose quarantine path
    exceeds PATH_MAX: that key is an error outcome, every other key moves, and the
    journal, status and restore all agree with the store."""
    f = flow
    deep = _deep_key(f.d.store, "internal-analytics/events/")
    p = f.d.store / deep
    p.parent.mkdir(parents=True)
    p.write_bytes(b"deep orphan")
    old = datetime.now(UTC).timestamp() - 30 * 86400
    os.utime(p, (old, old))
    info = LocalStore(parse_store(str(f.d.store)), trust_mtime=True).current([deep])[deep]
    _reseal(f, "SELECT * FROM {m} UNION ALL SELECT * REPLACE (?::VARCHAR AS key, "
               "?::BIGINT AS size, ?::TIMESTAMPTZ AS last_modified, ?::VARCHAR AS etag) "
               "FROM {m} WHERE key = ?",
            [deep, info.size, info.last_modified, info.etag, f.manifest(0)[0]])
    f.before = _tree_digest(f.d.store)
    keys = f.manifest(0)
    assert deep in keys
    assert len(str(_quarantined(f, deep)).encode()) > 4096  # beyond PATH_MAX

    res = json.loads(ok(f.execute()).out)
    assert res["removed"] == len(keys) - 1
    assert res["skipped"] == {"error": 1}
    assert p.read_bytes() == b"deep orphan"  # left where it was
    # The journal says what the store did: every other key moved, the deep one did not.
    done = [json.loads(line) for line in
            (f.plan / "journal" / "stage-0.jsonl").read_text().splitlines()
            if '"batch-done"' in line]
    assert sum(d["moved"] for d in done) == len(keys) - 1
    errors = {k: e for d in done for k, e in d["errors"].items()}
    assert errors == {deep: "error: File name too long"}
    for k in keys:
        if k != deep:
            assert _quarantined(f, k).exists()
    st = json.loads(ok(run_cli(["status", str(f.plan), "--json"])).out)["stages"][0]
    assert (st["state"], st["moved"], st["skipped"]) == ("complete", len(keys) - 1,
                                                          {"error": 1})
    counts = json.loads(ok(run_cli(["restore", str(f.plan), "--stage", "0", "--json"])).out)
    # Restore touches only what the store's stage records show removed (I11): the deep
    # key was never moved, so it is not even looked at.
    assert counts == {"restored": len(keys) - 1}
    assert _tree_digest(f.d.store) == f.before
    ok(run_cli(["audit", "verify", str(f.d.store)]))


def test_delete_reports_a_key_the_file_system_refuses(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """quarantine = none: an OSError on one key is that key's outcome, the rest go on."""
    root = tmp_path / "store"
    root.mkdir()
    for k in ("a", "b", "c"):
        (root / k).write_bytes(k.encode())
    store = LocalStore(parse_store(str(root)))
    infos = store.current(["a", "b", "c"])
    real_unlink = os.unlink

    def refusing_unlink(path: Any, *a: Any, **kw: Any) -> None:
        if str(path).endswith("/b"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", refusing_unlink)
    out = store.delete([infos["a"], infos["b"], infos["c"]])
    monkeypatch.undo()
    assert out == {"a": None, "b": "error: Input/output error", "c": None}
    assert sorted(p.name for p in root.iterdir()) == ["b"]


def test_exception_mid_batch_then_resume_agrees_with_the_store(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = flow.manifest(0)
    real_rename = os.rename
    calls = {"n": 0}

    def failing_rename(src: Any, dst: Any) -> None:
        if "/_cleanup/quarantine/" in str(dst):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("crash in the middle of a batch")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(RuntimeError):
        execute(_opts(flow, batch_size=len(keys)))
    monkeypatch.undo()
    assert sum(_quarantined(flow, k).exists() for k in keys) == 2
    flow.witness()  # the crashed run consumed its witness; the resume is witnessed again
    res = json.loads(ok(flow.execute(0, "--batch-size", str(len(keys)))).out)
    assert res["removed"] == len(keys)
    st = json.loads(ok(run_cli(["status", str(flow.plan), "--json"])).out)["stages"][0]
    assert (st["state"], st["moved"]) == ("complete", len(keys))
    for k in keys:
        assert hashlib.sha256(_quarantined(flow, k).read_bytes()).hexdigest() == flow.before[k]


# ------------------------------------------------------------- 6. NULL size in the manifest


_NULL_SIZE = "SELECT * REPLACE (CASE WHEN key = ? THEN NULL ELSE size END AS size) FROM {m}"


def test_restore_refuses_a_manifest_row_without_size(flow: Flow) -> None:
    ok(flow.execute())
    keys = flow.manifest(0)
    _reseal(flow, _NULL_SIZE, [keys[0]])
    after = _tree_digest(flow.d.store)
    r = run_cli(["restore", str(flow.plan), "--stage", "0"])
    assert_one_line_error(r, 2, "NULL", keys[0])
    assert _tree_digest(flow.d.store) == after  # nothing restored half-way


def test_purge_refuses_a_manifest_row_without_size(flow: Flow) -> None:
    ok(flow.execute())
    _reseal(flow, _NULL_SIZE, [flow.manifest(0)[0]])
    before = _tree_digest(flow.d.store / "_cleanup")
    with pytest.raises(UsageError, match="NULL"):
        purge(PurgeOptions(str(flow.plan), 0, "alice", str(flow.d.key("alice")),
                           trust_root=flow.trust_root))
    assert _tree_digest(flow.d.store / "_cleanup") == before
