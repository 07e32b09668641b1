"""Issue 12's ten attacks by one insider (alice: her own key, write access to her plan
directory and to the store's ``_cleanup/plans/``), each performed concretely on a local
store and on moto_server, and refused with the documented exit code naming the
invariant, with nothing removed. Then two properties: no edit of the local plan
directory changes what execution removes, and no truncation, reordering or removal of
the audit log goes unnoticed once stage records refer to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.timeutil import format_time
from tests.attackkit import (
    FRESH,
    REFERENCED,
    STAGE0,
    STAGE1,
    STORE_KINDS,
    Victim,
    body,
)
from tests.conftest import Run, assert_one_line_error, make_key
from tests.conftest import run_cli as run_process
from tests.scenario import allowed_signers_text, ok, runner_record_trust

Make = Callable[..., Victim]


@pytest.fixture(params=STORE_KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path, keys_dir: Path) -> Make:
    """Victims on the parametrized kind of store (moto_server started only for "moto")."""
    kind = request.param
    server = request.getfixturevalue("moto_server") if kind == "moto" else None
    made: list[int] = []

    def build(**kw: object) -> Victim:
        made.append(1)
        return Victim(kind, tmp_path / f"v{len(made)}", keys_dir, server,
                      **kw)  # type: ignore[arg-type]

    return build


def untouched(v: Victim, before: dict[str, bytes], quarantine: dict[str, bytes] | None = None,
              ) -> None:
    """Nothing was removed: every live object byte-identical (and the quarantine too)."""
    assert v.data() == before
    if quarantine is not None:
        assert v.quarantined() == quarantine


def refused(r: Run, code: int, *needles: str) -> None:
    assert_one_line_error(r, code, *needles)


# ---------------------------------------------------------------------- 1. her own "bob"

def test_a1_second_key_named_bob(make: Make, keys_dir: Path, tmp_path: Path) -> None:
    from cleanup.presence import sign_challenge
    from cleanup.published import Published
    from cleanup.signoff import approve, publish

    v = make()
    ok(v.make_plan())
    alice, alt = v.signer_key("alice"), make_key(keys_dir, "alice-second")
    forged = tmp_path / "alice_signers"
    forged.write_text(allowed_signers_text({"alice": alice, "bob": alt}))
    with v.environ():  # "bob" approves and is published in the store, with alice's 2nd key
        approve(str(v.plan_dir), "bob", str(alt))
        publish(str(v.plan_dir))
    assert [k for k in v.keys(v.pub("signatures", "approvals") + "/")
            if k.rsplit("/", 1)[1].startswith("bob")]
    v.snapshot_live(v.ref(k) for k in REFERENCED)
    refused(v.challenge(0), 4, "I7 two-person")  # the runner publishes no challenge
    store = v.open_store()
    with v.environ():  # so she publishes one herself, and witnesses it as "bob"
        Published(store, v.plan_id).open_challenge("execute", 0, {
            "executor": "alice", "audit_head": "0:" + "0" * 64,
            "created_at": format_time(datetime.now(UTC))})
        sign_challenge(store, v.plan_id, 0, "execute", "bob", str(alt))
    before = v.data()
    # (a) her allowed_signers cannot authorize anything
    refused(v.execute(0, "--allowed-signers", str(forged)), 4, "I17")
    # (b) against the store's trust root, "bob"'s approval is not bob's
    refused(v.execute(0), 4, "I7 two-person")
    # (c) the store's trust root cannot be made again
    refused(v.cli(["trust", "init", v.store_url, "--from", str(forged), "--people-run"]), 2,
            "version 1 exists")
    # (d) a root of her own, made elsewhere, pinned by her
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = ok(v.cli(["trust", "init", str(other), "--from", str(forged), "--people-run",
                  "--json"]))
    mine = json.loads(r.out)["digest"]
    for name, key in (("alice", alice), ("bob", alt)):
        ok(v.cli(["trust", "sign", str(other), "--version", "1", "--signer", name,
                  "--key", str(key)]))
    refused(v.execute(0, "--trust-root", mine), 4, "I17 trust-root")
    untouched(v, before, {})


# ---------------------------------------------------------------------- 2. journal hold

def test_a2_backdated_journal_does_not_lift_the_hold(make: Make) -> None:
    v = make()
    ok(v.make_plan())
    v.stage0()
    before = v.data()
    v.backdate_journal(0, timedelta(days=2))
    v.witness(1)
    refused(v.execute(1), 3, "I10 phased", "hold of 24h ends at")
    # A forged one-line journal in a copy of the plan directory: the same.
    (v.plan_dir / "journal").mkdir(exist_ok=True)
    v.journal(0).write_text(json.dumps({
        "event": "stage-complete", "moved": 2, "skipped": {},
        "time": format_time(datetime.now(UTC) - timedelta(days=2))}) + "\n")
    refused(v.execute(1), 3, "I10 phased", "hold of 24h ends at")
    untouched(v, before)
    assert all(k in v.data() for k in STAGE1)


# ---------------------------------------------------------------------- 3. audit log

def test_a3_truncated_rewritten_or_removed_audit_log(make: Make) -> None:
    from cleanup import audit

    v = make()
    ok(v.make_plan())
    v.stage0()
    before, quarantine = v.data(), v.quarantined()
    saved = v.objects("_cleanup/audit/")
    head = v.get("_cleanup/audit-head.json")
    assert head is not None
    assert len(saved) >= 5
    ok(v.audit_verify())

    def restore() -> None:
        for k in v.keys("_cleanup/audit/"):
            v.delete(k)
        for k, data in saved.items():
            v.put(k, data)
        assert head is not None
        v.put("_cleanup/audit-head.json", head)
        ok(v.audit_verify())

    def detected() -> None:
        refused(v.audit_verify(), 3, "I14 audit")
        refused(v.execute(1), 3, "I14 audit")
        untouched(v, before, quarantine)

    # (a) the last entries deleted
    for k in sorted(saved)[-2:]:
        v.delete(k)
    detected()
    restore()
    # (b) rewritten as a shorter valid chain, head object and all
    for k in saved:
        v.delete(k)
    v.delete("_cleanup/audit-head.json")
    store = v.open_store()
    with v.environ():
        for event in ("plan", "approval", "witness"):
            audit.append(store, event, plan_id=v.plan_id, principal="alice")
    assert len(v.keys("_cleanup/audit/")) == 3
    detected()
    restore()
    # (c) the whole log and its head removed
    for k in saved:
        v.delete(k)
    v.delete("_cleanup/audit-head.json")
    detected()


def test_a3_tail_deleted_and_head_object_rewritten(make: Make) -> None:
    """The tail after the last consumed witness (witness-consumed, stage-start,
    stage-end) deleted, the head object rewritten to the new newest entry: the stage
    records' audit heads must still expose it (I14)."""
    v = make()
    ok(v.make_plan())
    v.stage0()
    before, quarantine = v.data(), v.quarantined()
    finished = json.loads(v.get(v.pub("stages", "0", "finished.json")) or b"{}")
    seq = int(str(finished["audit_head"]).split(":")[0])
    entries = v.keys("_cleanup/audit/")
    consumed = [json.loads(v.get(k) or b"{}")["audit_head"]
                for k in v.keys(v.pub("challenges") + "/") if k.endswith(".consumed")]
    keep = max(int(h.split(":")[0]) for h in consumed)
    assert keep < seq == len(entries)
    for k in entries[keep:]:
        v.delete(k)
    last = v.get(entries[keep - 1]) or b""
    v.put("_cleanup/audit-head.json", json.dumps(
        {"hash": hashlib.sha256(last).hexdigest(), "seq": keep}, sort_keys=True,
        separators=(",", ":")).encode())
    refused(v.audit_verify(), 3, "I14 audit")
    refused(v.execute(1), 3, "I14 audit")
    untouched(v, before, quarantine)


# ---------------------------------------------------------------------- 4. revoked key

def test_a4_revoked_key_backdates_approval_and_witness(make: Make, tmp_path: Path) -> None:
    from cleanup.presence import sign_challenge
    from cleanup.signoff import approve, publish

    v = make(signers=("alice", "bob", "carol"))
    ok(v.make_plan())
    created = datetime.fromisoformat(v.read_plan()["created_at"]["time"])
    # Rotation: version 2 revokes carol as of ten minutes ago (alice and bob sign it).
    now = datetime.now(UTC)
    revoked = (now - timedelta(minutes=10)).strftime("%Y%m%d%H%M%SZ")  # UTC
    keys = {n: v.signer_key(n) for n in ("alice", "bob", "carol")}
    v2 = tmp_path / "signers.v2"
    v2.write_text("".join(
        f"{n} {'valid-before=' + chr(34) + revoked + chr(34) + ' ' if n == 'carol' else ''}"
        f"{Path(str(k) + '.pub').read_text().strip()}\n" for n, k in keys.items()))
    ok(v.cli(["trust", "propose", v.store_url, "--trust-root", str(v.trust_root), "--from",
              str(v2), "--people-run"]))
    for n in ("alice", "bob"):
        ok(v.cli(["trust", "sign", v.store_url, "--version", "2", "--signer", n,
                  "--key", str(keys[n])]))
    shown = json.loads(ok(v.cli(["trust", "verify", v.store_url, "--json"])).out)
    assert shown["version"] == 2
    before = v.data()
    # carol approves, claiming twenty minutes ago (before her revocation and the plan)
    with v.environ():
        approve(str(v.plan_dir), "carol", str(keys["carol"]), now=now - timedelta(minutes=20))
        publish(str(v.plan_dir))
    v.snapshot_live(v.ref(k) for k in REFERENCED)
    r = v.execute(0)
    refused(r, 4, "I7 two-person", "carol")
    assert any(s in r.err for s in ("key-expired", "clock-disagrees", "predates-plan")), r.err
    # bob approves honestly; carol witnesses, claiming the past
    ok(v.approve("bob"))
    assert v.challenge(0).code == 4
    with v.environ():
        sign_challenge(v.open_store(), v.plan_id, 0, "execute", "carol", str(keys["carol"]),
                       now=now - timedelta(minutes=20))
    r = v.execute(0)
    refused(r, 4, "I8 presence", "carol")
    assert any(s in r.err for s in ("key-expired", "clock-disagrees", "predates-plan")), r.err
    untouched(v, before, {})
    # An approval dated before the plan was made (by a principal in good standing).
    ok(v.make_plan("--max-delete-fraction", "0.6", out="plan2"))
    v.plan_dir = v.tmp / "plan2"
    with v.environ():
        approve(str(v.plan_dir), "bob", str(keys["bob"]),
                now=created - timedelta(hours=1))
        publish(str(v.plan_dir))
    r = v.execute(0)
    refused(r, 4, "I7 two-person", "bob")
    assert any(s in r.err for s in ("clock-disagrees", "predates-plan")), r.err
    untouched(v, before)


# ---------------------------------------------------------------------- 5. witness reuse

def _retention_config(v: Victim, extra: str = "") -> Path:
    cfg = v.tmp / "cleanup.toml"
    cfg.write_text(f'[policy]\nretention = "1s"\n{extra}')
    return cfg


def test_a5_execute_witness_reused_for_purge(make: Make) -> None:
    v = make()
    ok(v.make_plan("--config", str(_retention_config(v)), "--hold", "2s"))
    v.stage0()
    before, quarantine = v.data(), v.quarantined()
    v.wait_store_time("stages/0/finished.json", timedelta(seconds=2))
    # bob's consumed execute witness copied onto a purge challenge's witness names
    refused(v.challenge(0, "purge"), 4, "I8 presence")
    names = v.keys(v.pub("challenges") + "/")
    wit = [k for k in names if ".witness.bob." in k and "/execute.0." in k]
    purge_ch = [k for k in names if "/purge.0." in k and k.endswith(".json")]
    assert len(wit) == 2
    assert len(purge_ch) == 1
    stem = purge_ch[0][: -len(".json")]
    for k in wit:
        v.put(f"{stem}.witness.bob.{k.rsplit('.', 1)[1]}", v.get(k) or b"")
    r = v.purge(0)
    refused(r, 4, "I8 presence", "signs another challenge")
    untouched(v, before, quarantine)
    # A run that consumed its witness (and then failed its health gate) leaves nothing
    # for the next run to reuse.
    v.witness(1)
    refused(v.execute(1, "--health-check", "false"), 3, "I10 phased", "health check")
    refused(v.execute(1), 4, "I8 presence")
    untouched(v, before, quarantine)


def test_a5_consumed_witness_stays_consumed_without_its_marker(make: Make) -> None:
    """The insider removes the store's consumption record of a used witness: the audit
    log still holds the one entry that consumed it (I8), so it is not good again."""
    v = make()
    ok(v.make_plan("--hold", "2s"))
    v.stage0()
    before, quarantine = v.data(), v.quarantined()
    v.wait_store_time("stages/0/finished.json", timedelta(seconds=2))
    v.witness(1)
    refused(v.execute(1, "--health-check", "false"), 3, "I10 phased", "health check")
    consumed = [k for k in v.keys(v.pub("challenges") + "/")
                if "/execute.1." in k and k.endswith(".consumed")]
    assert len(consumed) == 1
    v.delete(consumed[0])
    refused(v.execute(1), 4, "I8 presence")
    untouched(v, before, quarantine)


# ---------------------------------------------------------------------- 6. manifest swap

def test_a6_local_manifest_swap_and_fifo_are_ignored(make: Make) -> None:
    v = make()
    ok(v.make_plan())
    v.ready(0)
    v.put(FRESH, b"written after the snapshot, referenced by nothing yet")
    before = v.data()
    # The local manifest now lists the fresh file, stage 1's orphans and live files.
    cols = ", ".join(f"{c}" for c in ("key", "size", "last_modified", "etag"))
    fake = v.tmp / "fake.parquet"
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT {cols} FROM read_parquet('{v.inventory}')").fetchall()
        con.execute("CREATE TABLE m (key VARCHAR, size BIGINT, last_modified TIMESTAMPTZ, "
                    "etag VARCHAR, tenant VARCHAR, stage INTEGER)")
        # every listed object as a stage-0 row, with its true size and etag: stage 1's
        # orphans (held 24h) and referenced files too
        con.executemany("INSERT INTO m VALUES (?, ?, ?, ?, 'internal', 0)", rows)
        fresh = body(FRESH)
        con.execute("INSERT INTO m VALUES (?, ?, now(), ?, 'internal', 0)",
                    [FRESH, len(fresh), hashlib.md5(fresh).hexdigest()])  # noqa: S324
        con.execute(f"COPY (SELECT * FROM m ORDER BY key) TO '{fake}' (FORMAT parquet)")
    shutil.copy(fake, v.plan_dir / "manifest.parquet")
    (v.plan_dir / "witness").mkdir(exist_ok=True)
    os.mkfifo(v.plan_dir / "witness" / "stage-0.bob.json")
    os.mkfifo(v.plan_dir / "witness" / "stage-0.bob.sig")
    try:
        r = run_process(["execute", str(v.plan_dir), "--stage", "0", "--executor", "alice",
                         "--key", str(v.signer_key("alice")), "--json"], env=v.env,
                        timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("execute hung on a FIFO in the local plan directory")
    assert json.loads(ok(r).out)["removed"] == len(STAGE0)
    after = v.data()
    assert set(before) - set(after) == set(STAGE0)
    assert all(after[k] == before[k] for k in after)
    assert after[FRESH] == before[FRESH]
    assert all(k in after for k in STAGE1)
    # The store's published manifest swapped: refused before anything is touched.
    v.put(v.pub("manifest.parquet"), fake.read_bytes())
    v.witness(1)  # (the hold refuses stage 1 anyway: I6 must come first)
    refused(v.execute(1), 3, "I6 plan-integrity")
    assert v.data() == after


# ---------------------------------------------------------------------- 7. purge retention

def test_a7_backdated_journal_does_not_end_retention(make: Make) -> None:
    v = make()
    ok(v.make_plan())
    v.stage0()
    before, quarantine = v.data(), v.quarantined()
    v.backdate_journal(0, timedelta(days=8))
    refused(v.purge(0), 3, "I11 recoverable", "retention of 7d ends at")
    untouched(v, before, quarantine)


# ---------------------------------------------------------------------- 8. halt lifted

def test_a8_halt_cannot_be_lifted_locally(make: Make) -> None:
    v = make()
    ok(v.make_plan())
    ok(v.approve("bob"))
    planned = STAGE0[-1]
    v.snapshot_live([*(v.ref(k) for k in REFERENCED), v.ref(planned)])
    ok(v.witness(0))
    before = v.data()
    keys_csv = v.tmp / "one-key.csv"
    keys_csv.write_text(f"key\n{v.ref(REFERENCED[0])}\n")
    one = v.tmp / "one-key.parquet"
    ok(v.cli(["snapshot", str(keys_csv), "-o", str(one), "--taken-at",
              format_time(datetime.now(UTC))]))
    # The runner cannot pick its own reconciliation source, halted or not.
    refused(v.execute(0, "--reconcile-with", str(one)), 3, "I19 confinement",
            "not the plan's signed reconciliation source")
    refused(v.execute(0), 5, "I9 reconcile", planned)
    journal = v.journal(0)
    journal.write_text("".join(ln + "\n" for ln in journal.read_text().splitlines()
                               if '"halt"' not in ln))
    assert '"halt"' not in journal.read_text()
    r = v.execute(0, "--reconcile-with", str(one))
    refused(r, 3)
    assert "I19 confinement" in r.err or "halted" in r.err, r.err
    refused(v.execute(0), 3, "halted")
    untouched(v, before, {})
    # A plan whose signed reconciliation source is a key list with a claimed taken_at.
    v.plan_dir = v.tmp / "plan-claimed"
    ok(v.make_plan("--reconcile-with", str(one), out="plan-claimed"))
    ok(v.approve("bob"))
    ok(v.witness(0))
    refused(v.execute(0), 3, "I9 reconcile", "claimed")
    untouched(v, before, {})


# ---------------------------------------------------------------------- 9. min_approvals

def test_a9_no_approvals_through_config_or_plan_edit(make: Make) -> None:
    v = make()
    cfg = v.tmp / "alice.toml"
    cfg.write_text("[policy]\nmin_approvals = 0\n")
    r = v.make_plan("--config", str(cfg), out="p0")
    refused(r, 3, "I7 two-person")
    assert not (v.tmp / "p0").exists()
    # A config value that differs from the default is listed for reviewers.
    cfg.write_text("[policy]\nmax_delete_fraction = 0.5\n")
    ok(v.make_plan("--config", str(cfg)))
    assert any("max_delete_fraction" in o and "0.5" in o
               for o in v.read_plan()["overrides"]), v.read_plan()["overrides"]
    # plan.json edited by hand: min_approvals 0
    before = v.data()
    v.snapshot_live(v.ref(k) for k in REFERENCED)
    original = v.plan_id
    doc = v.read_plan()
    doc["policy"]["min_approvals"] = 0
    (v.plan_dir / "plan.json").write_text(json.dumps(doc, sort_keys=True,
                                                     separators=(",", ":")))
    assert v.plan_id != original
    refused(v.cli(["publish", str(v.plan_dir)]), 3, "I6 plan-integrity")
    refused(v.execute(0), 3, "I6 plan-integrity")  # the edited plan id is not published
    untouched(v, before, {})


def test_a9_trust_root_floor_of_two_approvals(make: Make) -> None:
    v = make(floors=("--floor", "min_approvals=2"))
    refused(v.make_plan(out="p0"), 3, "I17 trust-root", "min_approvals")
    cfg = v.tmp / "team.toml"
    cfg.write_text("[policy]\nmin_approvals = 2\n")
    ok(v.make_plan("--config", str(cfg)))
    ok(v.approve("bob"))
    v.snapshot_live(v.ref(k) for k in REFERENCED)
    before = v.data()
    refused(v.execute(0), 4, "I7 two-person", "2 needed")
    untouched(v, before, {})


# ---------------------------------------------------------------------- 10. forged record

def test_a10_forged_batch_record_cannot_purge_live_files(make: Make) -> None:
    v = make()
    ok(v.make_plan("--config", str(_retention_config(v))))
    v.stage0()
    live, quarantine = v.data(), v.quarantined()
    v.wait_store_time("stages/0/finished.json", timedelta(seconds=1))
    victims = ["acme/t/3.parquet", REFERENCED[0]]
    removed = {f"../../../{victims[0]}": f"../../../{victims[0]}",
               victims[1]: f"_cleanup/quarantine/{v.plan_id}/{victims[1]}",
               f"../../../../{victims[1]}": victims[1]}
    v.put(v.pub("stages", "0", "batches", "00000007.json"), json.dumps({
        "type": "cleanup-batch-record", "plan_id": v.plan_id, "stage": 0, "batch": 7,
        "digest": "0" * 32, "mode": "copy", "moved": len(removed), "moved_bytes": 0,
        "skipped": {}, "removed": removed}, sort_keys=True).encode())
    ok(v.witness(0, action="purge"))
    r = ok(v.purge(0))
    assert f"purged {len(STAGE0)} " in r.out, r.out
    assert v.data() == live
    assert v.quarantined() == {}
    assert sorted(quarantine) == STAGE0


# ---------------------------------------------------------------------- 11. forged stage records

def test_a11_forged_stage_records_do_not_skip_a_stage(make: Make) -> None:
    """An approver with a write grant under ``_cleanup/plans/`` creates stage 0's
    started/finished/batch records before stage 0 ran, to get stage 1 (customers)
    executed without the internal canary. Only records a runner signed count (I10): stage
    1 is refused, stage 0 refuses to write over the forged names, nothing is touched."""
    v = make()
    ok(v.make_plan())
    ok(v.approve("bob"))
    before = v.data()
    common = {"plan_id": v.plan_id, "stage": 0, "executor": "alice", "audit_head": "x",
              "time": format_time(datetime.now(UTC))}
    for name, extra in (("started", {}), ("finished", {"moved": len(STAGE0),
                                                      "moved_bytes": 1, "skipped": {}})):
        v.put(v.pub("stages", "0", f"{name}.json"), json.dumps(
            {"type": "cleanup-stage-record", "event": name, **common, **extra},
            sort_keys=True).encode())
    v.put(v.pub("stages", "0", "batches", "00000000.json"), json.dumps({
        "type": "cleanup-batch-record", "plan_id": v.plan_id, "stage": 0, "batch": 0,
        "digest": "0" * 32, "mode": "copy", "moved": len(STAGE0), "moved_bytes": 1,
        "skipped": {}, "removed": {}}, sort_keys=True).encode())
    st = json.loads(ok(v.cli(["status", str(v.plan_dir), "--json"])).out)["stages"]
    assert [s["state"] for s in st] == ["not-started", "not-started"], st
    assert st[0]["verified"] is True
    v.snapshot_live(v.ref(k) for k in REFERENCED)
    refused(v.execute(1), 3, "I10", "stage 0")
    ok(v.witness(0))
    refused(v.execute(0), 3, "I10", "no runner of the trust root signed it")
    untouched(v, before, {})


# ---------------------------------------------------------------------- properties

EDITS = st.lists(st.sampled_from([
    "rm-journal", "garbage-journal", "complete-journal", "truncate-journal",
    "rm-approvals", "garbage-approval", "forged-approval", "rm-author",
    "witness-files", "manifest-garbage", "manifest-swapped", "manifest-rm",
    "plan-whitespace", "halt-line",
]), min_size=1, max_size=4)


def _edit(plan: Path, what: str, fake_manifest: bytes) -> None:
    journal = plan / "journal" / "stage-0.jsonl"
    journal.parent.mkdir(exist_ok=True)
    appr = plan / "signatures" / "approvals"
    if what == "rm-journal":
        shutil.rmtree(plan / "journal", ignore_errors=True)
    elif what == "garbage-journal":
        journal.write_text("{not json\n")
    elif what == "complete-journal":
        with journal.open("a") as fh:
            fh.write(json.dumps({"event": "stage-complete", "moved": 99,
                                 "time": "2020-01-01T00:00:00Z"}) + "\n")
    elif what == "truncate-journal":
        journal.write_text("")
    elif what == "halt-line":
        with journal.open("a") as fh:
            fh.write(json.dumps({"event": "halt", "batch": 0, "referenced": ["x"],
                                 "time": "2020-01-01T00:00:00Z"}) + "\n")
    elif what == "rm-approvals":
        shutil.rmtree(appr, ignore_errors=True)
    elif what == "garbage-approval":
        appr.mkdir(parents=True, exist_ok=True)
        (appr / "bob.json").write_text("{}")
    elif what == "forged-approval":
        appr.mkdir(parents=True, exist_ok=True)
        (appr / "mallory.json").write_text(json.dumps({"signer": "mallory"}))
        (appr / "mallory.sig").write_text("-----BEGIN SSH SIGNATURE-----\n")
    elif what == "rm-author":
        for n in ("author.json", "author.sig"):
            (plan / "signatures" / n).unlink(missing_ok=True)
    elif what == "witness-files":
        (plan / "witness").mkdir(exist_ok=True)
        (plan / "witness" / "stage-0.bob.json").write_text('{"stage": 0}')
        (plan / "witness" / "stage-0.bob.sig").write_text("sig")
    elif what == "manifest-garbage":
        (plan / "manifest.parquet").write_bytes(b"PAR1 garbage")
    elif what == "manifest-swapped":
        (plan / "manifest.parquet").write_bytes(fake_manifest)
    elif what == "manifest-rm":
        (plan / "manifest.parquet").unlink(missing_ok=True)
    elif what == "plan-whitespace":
        p = plan / "plan.json"
        p.write_bytes(p.read_bytes() + b"\n")


def test_p1_local_edits_never_change_what_execution_removes(tmp_path: Path,
                                                           keys_dir: Path) -> None:
    """Any edits under the local PLAN_DIR: execution removes exactly what an unedited
    twin removes, or refuses and removes nothing. Each example is a new store and plan."""
    made: list[int] = []

    def victim() -> Victim:
        made.append(1)
        v = Victim("local", tmp_path / f"v{len(made)}", keys_dir, trust_mtime=True)
        ok(v.make_plan())
        v.ready(0)
        v.put(FRESH, b"fresh")
        old = datetime.now(UTC).timestamp() - 3 * 86400
        os.utime(v.root / FRESH, (old, old))  # as old as the orphans: only the plan decides
        return v

    def removed(v: Victim) -> tuple[int, set[str]]:
        before = v.data()
        r = v.execute(0)
        after = v.data()
        assert all(after[k] == before[k] for k in after)
        return r.code, set(before) - set(after)

    twin = victim()
    fake = twin.tmp / "fake.parquet"
    with duckdb.connect() as con:  # every listed object, as a manifest of stage 0
        con.execute(f"COPY (SELECT key, size, last_modified, etag, 'internal' AS tenant, "
                    f"0 AS stage FROM read_parquet('{twin.inventory}') ORDER BY key) TO "
                    f"'{fake}' (FORMAT parquet)")
    fake_manifest = fake.read_bytes()
    code, expected = removed(twin)
    assert code == 0
    assert expected == set(STAGE0)

    @settings(max_examples=6, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(EDITS)
    def check(edits: list[str]) -> None:
        v = victim()
        for e in edits:
            _edit(v.plan_dir, e, fake_manifest)
        code, gone = removed(v)
        assert (code == 0 and gone == expected) or (code != 0 and not gone), (edits, code, gone)
        assert FRESH in v.data()
        shutil.rmtree(v.tmp)

    check()


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(n=st.integers(3, 9), data=st.data())
def test_p2_audit_tampering_is_detected_once_stage_records_refer_to_it(
        tmp_path_factory: pytest.TempPathFactory, n: int, data: st.DataObject) -> None:
    from cleanup import audit
    from cleanup.published import Published, referenced_heads, stage_doc
    from cleanup.stores import open_store

    root = tmp_path_factory.mktemp("audit")
    store = open_store(str(root))
    plan_id = "a" * 64
    pub = Published(store, plan_id, runner_record_trust(tmp_path_factory.mktemp("keys")))
    entries = [audit.append(store, f"e{i}", plan_id=plan_id) for i in range(n)]
    # stage records saw some heads on the way, and the newest (stage 0's end)
    seen = sorted(set(data.draw(st.lists(st.integers(0, n - 2), max_size=2))) | {n - 1})
    for s, i in enumerate(seen):
        pub.write_stage_record(s, "finished", stage_doc(
            plan_id, s, "finished", executor="runner", audit_head=audit.head_of(entries[i]),
            now=datetime.now(UTC)))
    heads = referenced_heads(pub)
    assert audit.verify(store, heads).ok
    keys = [f"_cleanup/audit/{i:012d}.json" for i in range(1, n + 1)]
    head_key = "_cleanup/audit-head.json"
    op = data.draw(st.sampled_from(["truncate", "remove", "reorder", "wipe", "rewrite"]))
    head_mode = data.draw(st.sampled_from(["keep", "delete", "follow"]))
    if op == "truncate":
        t = data.draw(st.integers(1, n - 1))
        for k in keys[n - t:]:
            (root / k).unlink()
    elif op == "remove":
        (root / keys[data.draw(st.integers(0, n - 1))]).unlink()
    elif op == "reorder":
        i = data.draw(st.integers(0, n - 2))
        j = data.draw(st.integers(i + 1, n - 1))
        a, b = (root / keys[i]).read_bytes(), (root / keys[j]).read_bytes()
        (root / keys[i]).write_bytes(b)
        (root / keys[j]).write_bytes(a)
    else:
        for k in keys:
            (root / k).unlink()
        if op == "rewrite":
            (root / head_key).unlink()
            for i in range(data.draw(st.integers(1, n - 1))):
                audit.append(store, f"honest-looking-{i}", plan_id=plan_id)
    left = sorted(p.name for p in (root / "_cleanup" / "audit").iterdir())
    if head_mode == "delete":
        (root / head_key).unlink(missing_ok=True)
    elif head_mode == "follow" and left:  # the head object rewritten to the new newest entry
        last = (root / "_cleanup" / "audit" / left[-1]).read_bytes()
        (root / head_key).write_bytes(json.dumps(
            {"seq": int(left[-1][:12]), "hash": hashlib.sha256(last).hexdigest()},
            sort_keys=True, separators=(",", ":")).encode())
    rep = audit.verify(store, referenced_heads(pub))
    assert not rep.ok, (op, head_mode, left)
