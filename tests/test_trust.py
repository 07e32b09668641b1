"""The trust root (I17), store-clock signatures (I18) and presence by challenge (I8):
the rules as properties, the chain against real OpenSSH signatures in a real store, and
each refusal through the CLI. The ten attacks of the trust issue are tests/test_attacks.py.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup import trust
from cleanup.core import signoff as so
from cleanup.core.canonical import canonical_json
from cleanup.core.paths import parse_store
from cleanup.core.trust import Floors, Principal, RootDoc, digest, loosened, parse_pin, parse_root
from cleanup.errors import SignoffError, UsageError
from cleanup.stores.local import LocalStore
from tests.conftest import Run, assert_one_line_error, make_key
from tests.inproc import run_cli
from tests.scenario import ok

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
secs = st.integers(-10**6, 10**6).map(lambda s: timedelta(seconds=s))


# ------------------------------------------------------------------ rules as properties


fractions = st.floats(0.001, 1.0, allow_nan=False)


@given(min_approvals=st.integers(0, 4), buffer=secs, hold=secs, retention=secs,
       approval_ttl=secs, witness_ttl=secs, skew=secs, floor_approvals=st.integers(1, 3),
       delete=fractions, table=fractions, ceil_delete=fractions, ceil_table=fractions)
def test_i17_floors_property(min_approvals: int, buffer: timedelta, hold: timedelta,
                             retention: timedelta, approval_ttl: timedelta,
                             witness_ttl: timedelta, skew: timedelta,
                             floor_approvals: int, delete: float, table: float,
                             ceil_delete: float, ceil_table: float) -> None:
    """A plan passes the root's floors iff every value is at least as strict: minimums not
    below, lifetimes, skew and delete fractions (I5) not above, and never fewer than one
    approval."""
    from cleanup.core.policy import Policy

    floors = Floors(min_approvals=floor_approvals, max_delete_fraction=ceil_delete,
                    max_table_delete_fraction=ceil_table)
    policy = Policy(min_approvals=max(min_approvals, 1), retention=retention,
                    approval_ttl=approval_ttl, witness_ttl=witness_ttl, max_clock_skew=skew,
                    max_delete_fraction=delete, max_table_delete_fraction=table)
    object.__setattr__(policy, "min_approvals", min_approvals)  # 0: what a forged plan says
    problems = loosened(floors, policy, buffer=buffer, hold=hold)
    strict = (min_approvals >= max(1, floor_approvals) and buffer >= floors.min_buffer
              and hold >= floors.min_hold and retention >= floors.min_retention
              and approval_ttl <= floors.max_approval_ttl
              and witness_ttl <= floors.max_witness_ttl and skew <= floors.max_clock_skew
              and delete <= ceil_delete and table <= ceil_table)
    assert (problems == []) == strict


def _sig(signed: timedelta, recorded: timedelta | None, role: str = "approver",
         signer: str = "bob") -> so.Signature:
    return so.Signature(path="x", role=role, signer=signer, plan_id="p",
                        signed_at=T0 + signed, crypto=so.VALID,
                        recorded_at=None if recorded is None else T0 + recorded, stage=0)


@given(signed=secs, recorded=secs, now=secs, created=secs)
def test_i18_store_clock_property(signed: timedelta, recorded: timedelta, now: timedelta,
                                  created: timedelta) -> None:
    """A cryptographically valid approval counts iff the store recorded it within the skew
    of its signed time, neither predates the plan (beyond the skew), it is not from the
    future, and its age by the store's record time is within the TTL."""
    skew, ttl = timedelta(minutes=5), timedelta(days=7)
    s = so.classify(_sig(signed, recorded), plan_id="p", author="alice",
                    author_fingerprint=None, now=T0 + now, ttl=ttl, max_skew=skew,
                    store_time=True, plan_created=T0 + created)
    counts = (abs(recorded - signed) <= skew
              and min(signed, recorded) >= created - skew
              and signed <= now + skew
              and now - recorded <= ttl)
    assert (s.state == so.VALID) == counts, s


def test_i18_unrecorded_and_role() -> None:
    s = so.classify(_sig(timedelta(0), None), plan_id="p", author="alice",
                    author_fingerprint=None, now=T0, ttl=timedelta(days=1),
                    max_skew=timedelta(minutes=5), store_time=True)
    assert s.state == "not-recorded"
    s = so.classify(_sig(timedelta(0), timedelta(0)), plan_id="p", author="alice",
                    author_fingerprint=None, now=T0, ttl=timedelta(days=1),
                    max_skew=timedelta(minutes=5), store_time=True, has_role=False)
    assert s.state == "no-role"


names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)


@given(principals=st.dictionaries(names, st.sets(st.sampled_from(
    ["author", "approver", "witness", "runner"]), min_size=1), min_size=1, max_size=4),
       data=st.data())
def test_root_round_trips_and_rejects_any_other_bytes(principals: dict[str, set[str]],
                                                      data: st.DataObject) -> None:
    """parse_root accepts exactly its own canonical bytes: any edited byte is refused or
    gives a different digest (the pin then fails)."""
    th = data.draw(st.integers(1, len(principals)))
    root = RootDoc(1, None, th, {n: Principal(n, (KEY,), tuple(sorted(r)))
                                 for n, r in principals.items()}, Floors(), "t")
    raw = root.to_bytes()
    assert parse_root(raw, 1).to_bytes() == raw
    i = data.draw(st.integers(0, len(raw) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda v: v != raw[i]))
    edited = raw[:i] + bytes([b]) + raw[i + 1:]
    try:
        again = parse_root(edited, 1)
    except SignoffError as exc:
        message = exc.message
    else:
        message = ""
        assert digest(again.to_bytes()) != digest(raw)
    assert message == "" or "I17 trust-root" in message


def test_root_rules() -> None:
    good = RootDoc(1, None, 1, {"a": Principal("a", (KEY,), ("author",))})
    for bad, why in [
        ({**good.to_json(), "threshold": 2}, "threshold"),
        ({**good.to_json(), "threshold": 0}, "threshold"),
        ({**good.to_json(), "previous": "sha256:" + "0" * 64}, "previous"),
        ({**good.to_json(), "floors": {"min_approvals": 0}}, "min_approvals"),
        ({**good.to_json(), "principals": {"a": {"keys": ["nope"], "roles": ["author"]}}},
         "keys"),
        ({**good.to_json(), "principals": {"a": {"keys": [KEY], "roles": ["root"]}}}, "roles"),
        ({**good.to_json(), "principals": {"a b": {"keys": [KEY], "roles": ["author"]}}},
         "principal name"),
        ({**good.to_json(), "version": 2}, "version"),
    ]:
        with pytest.raises(SignoffError, match=why):
            parse_root(canonical_json(bad), 1)
    with pytest.raises(SignoffError, match="canonical"):
        parse_root(json.dumps(good.to_json(), indent=1).encode(), 1)
    with pytest.raises(UsageError):
        parse_pin("sha1:abc")
    assert parse_pin("SHA256:" + "A" * 64) == "sha256:" + "a" * 64


# ------------------------------------------------------------------ the chain, real keys


@pytest.fixture
def team(tmp_path: Path, keys_dir: Path) -> dict[str, Path]:
    # File names of their own: the session's keys_dir holds "carol" as an ECDSA key of
    # tests/test_signoff.py, and whoever makes a name first decides its type.
    return {n: make_key(keys_dir, f"trust-{n}") for n in ("alice", "bob", "carol")}


def _allowed(path: Path, keys: dict[str, Path], extra: dict[str, str] | None = None) -> Path:
    path.write_text("".join(f"{n} {(extra or {}).get(n, '')} "
                            f"{Path(str(k) + '.pub').read_text().strip()}\n".replace("  ", " ")
                            for n, k in keys.items()))
    return path


def _store(tmp_path: Path) -> tuple[str, LocalStore]:
    root = tmp_path / "store"
    root.mkdir(exist_ok=True)
    return str(root), LocalStore(parse_store(str(root)))


def _init(tmp_path: Path, team: dict[str, Path], *extra: str) -> tuple[str, str]:
    url, _s = _store(tmp_path)
    allowed = _allowed(tmp_path / "allowed", team)
    r = ok(run_cli(["trust", "init", url, "--from", str(allowed), *extra, "--json"]))
    return url, json.loads(r.out)["digest"]


def _sign(url: str, version: int, team: dict[str, Path], *names: str) -> None:
    for n in names:
        ok(run_cli(["trust", "sign", url, "--version", str(version), "--signer", n,
                    "--key", str(team[n])]))


def test_version_1_needs_every_principal_and_the_pin(tmp_path: Path,
                                                     team: dict[str, Path]) -> None:
    url, pin = _init(tmp_path, team)
    _sign(url, 1, team, "alice", "bob")
    assert_one_line_error(run_cli(["trust", "verify", url, "--trust-root", pin]), 4,
                          "I17 trust-root", "missing: carol")
    _sign(url, 1, team, "carol")
    r = ok(run_cli(["trust", "verify", url, "--trust-root", pin, "--json"]))
    assert json.loads(r.out)["version"] == 1
    # Another pin (a root made elsewhere): refused.
    other = "sha256:" + "1" * 64
    assert_one_line_error(run_cli(["trust", "verify", url, "--trust-root", other]), 4,
                          "I17 trust-root", "hashes to")
    # No pin at all: refused, naming where a pin comes from.
    r = run_cli(["trust", "verify", url], env={"CLEANUP_TRUST_ROOT": ""})
    assert_one_line_error(r, 4, "I17 trust-root", "no trust root is pinned")
    # Only one version 1 can ever exist; a signature is never replaced.
    allowed = _allowed(tmp_path / "mine", {"alice": team["alice"]})
    assert_one_line_error(run_cli(["trust", "init", url, "--from", str(allowed)]), 2,
                          "exists already")
    assert_one_line_error(run_cli(["trust", "sign", url, "--version", "1", "--signer",
                                   "alice", "--key", str(team["alice"])]), 2, "already")


def test_a_signature_by_another_key_is_refused(tmp_path: Path, team: dict[str, Path],
                                               keys_dir: Path) -> None:
    url, _pin = _init(tmp_path, team)
    mallory = make_key(keys_dir, "mallory")
    assert_one_line_error(run_cli(["trust", "sign", url, "--version", "1", "--signer", "bob",
                                   "--key", str(mallory)]), 4, "I17 trust-root")
    assert not (Path(url) / "_cleanup" / "trust" / "root.1.sig.bob").exists()


def test_config_pin_and_env_pin(tmp_path: Path, team: dict[str, Path]) -> None:
    url, pin = _init(tmp_path, team)
    _sign(url, 1, team, "alice", "bob", "carol")
    cfg = tmp_path / "cleanup.toml"
    cfg.write_text(f'trust_root = "{pin}"\n')
    ok(run_cli(["trust", "verify", url, "--config", str(cfg)], env={"CLEANUP_TRUST_ROOT": ""}))
    ok(run_cli(["trust", "verify", url], env={"CLEANUP_TRUST_ROOT": pin}))
    cfg.write_text('trust_root = "sha256:nope"\n')
    assert_one_line_error(run_cli(["trust", "verify", url, "--config", str(cfg)],
                                  env={"CLEANUP_TRUST_ROOT": ""}), 2, "sha256:<64 hex")


def test_rotation_needs_both_thresholds_and_only_one_next_version(
        tmp_path: Path, team: dict[str, Path]) -> None:
    url, pin = _init(tmp_path, team, "--threshold", "2")
    _sign(url, 1, team, "alice", "bob", "carol")
    two = {"alice": team["alice"], "bob": team["bob"]}
    r = ok(run_cli(["trust", "propose", url, "--trust-root", pin, "--from",
                    str(_allowed(tmp_path / "v2", two)), "--threshold", "1", "--json"]))
    assert json.loads(r.out)["version"] == 2
    # Only one version 2 can exist.
    assert_one_line_error(run_cli(["trust", "propose", url, "--trust-root", pin]), 2,
                          "still short of signatures")
    _sign(url, 2, team, "carol")  # one of version 1's threshold of 2: not yet
    st_ = json.loads(ok(run_cli(["trust", "verify", url, "--trust-root", pin, "--json"])).out)
    assert (st_["version"], st_["pending"]) == (1, 2)
    _sign(url, 2, team, "alice")  # now 2 of version 1 and 1 of version 2
    st_ = json.loads(ok(run_cli(["trust", "verify", url, "--trust-root", pin, "--json"])).out)
    assert st_["version"] == 2
    assert sorted(st_["principals"]) == ["alice", "bob"]
    assert len(st_["history"]) == 2
    # Version 1's pin still anchors the chain; a forged version 3 signed by carol alone (no
    # longer a principal) never takes effect.
    s = LocalStore(parse_store(url))
    cur = trust.verify_chain(s, pin)
    forged = RootDoc(3, cur.digest, 1, {"carol": Principal(
        "carol", (Path(str(team["carol"]) + ".pub").read_text().strip(),),
        ("author", "approver", "witness", "runner"))}, Floors(), "t")
    assert s.put_if_absent(trust.root_key(3), forged.to_bytes())
    with pytest.raises(UsageError, match="not a principal"):
        trust.sign(s, 3, "mallory", str(team["carol"]))
    trust.sign(s, 3, "carol", str(team["carol"]))  # carol is a principal of version 3 itself
    after = trust.verify_chain(s, pin)
    assert (after.version, after.pending) == (2, 3)


def test_floor_cannot_be_loosened_by_a_plan(tmp_path: Path, team: dict[str, Path]) -> None:
    """A plan looser than the root's floors is refused at plan time (I17, exit 3)."""
    from tests.test_plan_cli import Case

    case = Case(tmp_path, team["alice"])
    url, pin = _init(tmp_path, team, "--floor", "min_hold=48h")
    _sign(url, 1, team, "alice", "bob", "carol")
    r = case.plan("--hold", "24h", "--trust-root", pin)
    assert_one_line_error(r, 3, "I17 trust-root", "hold 24h < floor 2d")
    plan = case.plan("--hold", "72h", "--trust-root", pin, out="ok")
    ok(plan)
    doc = json.loads((tmp_path / "ok" / "plan.json").read_text())
    assert doc["trust"] == {"version": 1, "digest": pin}


def test_allowed_signers_cannot_authorize(tmp_path: Path) -> None:
    for cmd in (["execute", str(tmp_path), "--stage", "0", "--executor", "a", "--key", "k"],
                ["purge", str(tmp_path), "--stage", "0", "--executor", "a", "--key", "k"]):
        r = run_cli([*cmd, "--allowed-signers", str(tmp_path / "allowed")])
        assert_one_line_error(r, 4, "I17 trust-root", "--allowed-signers cannot authorize")


# ------------------------------------------------------------------ presence (I8, I18)


@pytest.fixture
def flow(tmp_path: Path) -> object:
    from tests.test_execute_local import Flow

    return Flow(tmp_path / "demo")


def _presence(f: object, action: str = "execute", stage: int = 0,
              executor: str = "alice") -> tuple[so.Signature | None, list[so.Signature]]:
    from cleanup.bundle import PlanBundle
    from cleanup.presence import find_witness
    from cleanup.published import Published

    store = LocalStore(parse_store(str(f.d.store)))  # type: ignore[attr-defined]
    root = trust.verify_chain(store, f.trust_root)  # type: ignore[attr-defined]
    with PlanBundle.open(str(f.plan)) as b, root.allowed_signers() as allowed:  # type: ignore[attr-defined]
        found, seen = find_witness(Published(store, b.plan_id), action, stage, b.plan, root,
                                   allowed, executor=executor, now=datetime.now(UTC))
    return (found.signature if found else None), seen


def test_witness_signs_the_runners_challenge(flow: object) -> None:
    f = flow
    r: Run = f.challenge()  # type: ignore[attr-defined]
    assert_one_line_error(r, 4, "I8 presence", "challenge execute.0.", "cleanup witness")
    assert _presence(f) == (None, [])
    w = ok(run_cli(["witness", str(f.plan), "--stage", "0", "--signer", "bob",  # type: ignore[attr-defined]
                    "--key", str(f.d.key("bob")), "--json"], env=f.env))  # type: ignore[attr-defined]
    doc = json.loads(w.out)
    assert (doc["action"], doc["runner"]) == ("execute", "alice")
    sig, seen = _presence(f)
    assert sig is not None
    assert sig.signer == "bob"
    assert sig.recorded_at is not None
    # The runner cannot be its own witness; a witness of execute is no witness of purge,
    # nor of another stage.
    assert _presence(f, executor="bob")[0] is None
    assert _presence(f, action="purge")[0] is None
    assert _presence(f, stage=1)[0] is None
    # Plain OpenSSH verifies the published witness in the witness namespace only.
    chal = Path(str(f.d.store)) / "_cleanup" / "plans" / f.plan_id / "challenges"  # type: ignore[attr-defined]
    doc_path = next(chal.glob("*.witness.bob.json"))
    sig_path = doc_path.with_name(doc_path.name[:-5] + ".sig")
    import subprocess

    for ns, want in (("cleanup-witness", 0), ("cleanup-plan", 255)):
        p = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(f.allowed_file), "-I", "bob",  # type: ignore[attr-defined]
                            "-n", ns, "-s", str(sig_path)], stdin=doc_path.open("rb"),
                           capture_output=True, check=False)
        assert (p.returncode == 0) == (want == 0), p.stderr


def test_witness_counts_from_the_store_record_and_expires(flow: object) -> None:
    """I18: the witness's age is counted from the store's record time (local store: the
    file's change time, which no one backdates), and its signed time must agree with it."""
    from cleanup.bundle import PlanBundle
    from cleanup.presence import find_witness, sign_challenge
    from cleanup.published import Published

    f = flow
    f.challenge()  # type: ignore[attr-defined]
    store = LocalStore(parse_store(str(f.d.store)))  # type: ignore[attr-defined]
    plan_id = f.current_plan_id()  # type: ignore[attr-defined]
    # Signed "30 minutes ago", recorded now: the clocks disagree, it does not count.
    sign_challenge(store, plan_id, 0, "execute", "bob", str(f.d.key("bob")),  # type: ignore[attr-defined]
                   now=datetime.now(UTC) - timedelta(minutes=30))
    assert [s.state for s in _presence(f)[1]] == ["clock-disagrees"]
    # An honest witness, 61 minutes later by the store's clock: expired.
    f.challenge()  # type: ignore[attr-defined]
    root = trust.verify_chain(store, f.trust_root)  # type: ignore[attr-defined]
    with PlanBundle.open(str(f.plan)) as b, root.allowed_signers() as allowed:  # type: ignore[attr-defined]
        pub = Published(store, plan_id)
        sign_challenge(store, plan_id, 0, "execute", "bob", str(f.d.key("bob")))  # type: ignore[attr-defined]
        now_found, _seen = find_witness(pub, "execute", 0, b.plan, root, allowed,
                                        executor="alice", now=datetime.now(UTC))
        assert now_found is not None
        found, _seen = find_witness(pub, "execute", 0, b.plan, root, allowed,
                                    executor="alice",
                                    now=datetime.now(UTC) + timedelta(minutes=61))
        assert found is None
    # A witness with no open challenge has nothing to sign.
    assert_one_line_error(run_cli(["witness", str(f.plan), "--stage", "1", "--signer", "bob",  # type: ignore[attr-defined]
                                   "--key", str(f.d.key("bob"))], env=f.env), 4,  # type: ignore[attr-defined]
                          "I8 presence", "no open execute challenge for stage 1")


def test_anchor_with_object_lock_on_moto(moto_server: object, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit head copied to an Object Lock bucket cannot be deleted, and a truncated
    log fails verification against it (I14)."""
    from cleanup import audit
    from cleanup.stores import open_store

    server = moto_server
    c = server.client()  # type: ignore[attr-defined]
    bucket = server.bucket()  # type: ignore[attr-defined]
    locked = f"anchor-{os.urandom(4).hex()}"
    c.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    env = server.env()  # type: ignore[attr-defined]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3

    # A fresh default session: an earlier in-process client may hold other credentials.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    store = open_store(f"s3://{bucket}/data/")
    anchor = open_store(f"s3://{locked}/")
    audit.use_anchor(anchor)
    try:
        for i in range(3):
            audit.append(store, f"e{i}")
    finally:
        audit.use_anchor(None)
    keys = anchor.list_keys("_cleanup/audit-anchor/")
    assert len(keys) == 3
    head = c.head_object(Bucket=locked, Key=keys[-1])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(Exception, match="AccessDenied|Access Denied"):
        c.delete_object(Bucket=locked, Key=keys[-1], VersionId=head["VersionId"])
    assert audit.verify(store, anchor=anchor).ok
    c.delete_object(Bucket=bucket, Key="data/_cleanup/audit/000000000003.json")
    c.delete_object(Bucket=bucket, Key="data/_cleanup/audit-head.json")
    rep = audit.verify(store, anchor=anchor)
    assert rep.problems == ["the anchor holds entry 3 "
                            f"({json.loads(anchor.get_bytes(keys[-1]) or b'{}')['hash'][:12]}"
                            "...), which is not in the log (truncated or removed)"]
    r = run_cli(["audit", "verify", f"s3://{bucket}/data/", "--anchor", f"s3://{locked}/"],
                env=env)
    assert_one_line_error(r, 3, "I14 audit", "the anchor holds entry 3")


def test_three_machines_share_only_the_store(tmp_path: Path) -> None:
    """The author plans on one machine, the reviewer fetches the plan by id on another and
    approves and witnesses there, the runner fetches it on a third and executes: only the
    store is shared (I10: the local directories are caches)."""
    from tests.test_execute_local import Flow

    f = Flow(tmp_path / "demo")  # plans and approves in its own directory
    plan_id = f.current_plan_id()
    reviewer, runner = tmp_path / "reviewer", tmp_path / "runner"
    for d in (reviewer, runner):
        ok(run_cli(["fetch", str(f.d.store), plan_id, "-o", str(d)], env=f.env))
        assert (d / "plan.json").read_bytes() == (f.plan / "plan.json").read_bytes()
    shutil.rmtree(f.plan)  # the author's machine is gone
    run = ["execute", str(runner), "--stage", "0", "--executor", "alice", "--key",
           str(f.d.key("alice")), "--json"]
    assert_one_line_error(run_cli(run, env=f.env), 4, "I8 presence")
    ok(run_cli(["witness", str(reviewer), "--stage", "0", "--signer", "bob", "--key",
                str(f.d.key("bob"))], env=f.env))
    res = json.loads(ok(run_cli(run, env=f.env)).out)
    assert res["removed"] > 0
    st_ = json.loads(ok(run_cli(["status", str(reviewer), "--json"], env=f.env)).out)
    assert st_["stages"][0]["state"] == "complete"  # the reviewer sees the store's records
    # A fetched copy is verified: a wrong id is refused.
    assert_one_line_error(run_cli(["fetch", str(f.d.store), "0" * 64, "-o",
                                   str(tmp_path / "x")], env=f.env), 3, "I6 plan-integrity",
                          "not published")


def test_the_same_principal_can_approve_again(tmp_path: Path) -> None:
    """A fresh approval (e.g. for a purge after the first expired) is published beside the
    first, never replacing it; both are verified."""
    from tests.test_execute_local import Flow

    f = Flow(tmp_path / "demo")
    ok(f.approve("bob", "--comment", "again"))
    published = sorted(p.name for p in (f.d.store / "_cleanup" / "plans" / f.plan_id /
                                        "signatures" / "approvals").iterdir())
    assert len(published) == 4  # two approvals by bob, each with its signature
    assert all(n.startswith("bob~") for n in published)
    f.witness()
    ok(f.execute())


def test_execute_waits_for_the_witness(tmp_path: Path) -> None:
    """`execute --wait`: the run publishes its challenge and waits; the witness signs it
    from another process; the waiting run goes on and consumes it."""
    from tests import faultcli
    from tests.scenario import wait_until
    from tests.test_execute_local import Flow

    f = Flow(tmp_path / "demo")
    chal = f.d.store / "_cleanup" / "plans" / f.plan_id / "challenges"
    run = faultcli.spawn(["execute", str(f.plan), "--stage", "0", "--executor", "alice",
                          "--key", str(f.d.key("alice")), "--wait", "2m", "--json"], env=f.env)
    try:
        wait_until(lambda: any(chal.glob("execute.0.*.json")) or run.poll() is not None,
                   timeout=120, what="the waiting run's challenge")
        assert run.poll() is None, run.communicate()
        ok(run_cli(["witness", str(f.plan), "--stage", "0", "--signer", "bob", "--key",
                    str(f.d.key("bob"))], env=f.env))
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert json.loads(out)["removed"] == len(f.manifest(0))
    assert len(list(chal.glob("*.consumed"))) == 1


def test_an_approval_anchors_the_audit_log_it_saw(tmp_path: Path) -> None:
    """I14: the approval carries the audit head its signer saw, so a log cut below it (the
    head object removed too) fails verification even before any stage ran."""
    from tests.test_execute_local import Flow

    f = Flow(tmp_path / "demo")
    audit_dir = f.d.store / "_cleanup" / "audit"
    ok(run_cli(["audit", "verify", str(f.d.store)]))
    for p in sorted(audit_dir.iterdir()):
        p.unlink()
    (f.d.store / "_cleanup" / "audit-head.json").unlink()
    assert_one_line_error(run_cli(["audit", "verify", str(f.d.store)]), 3, "I14 audit",
                          "a record saw audit entry 1")
