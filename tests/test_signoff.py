"""Sign-off end to end with real OpenSSH: `approve`, `verify`, `witness` (I6, I7, I8).

Keys are made by ssh-keygen in fixtures, plans are built with the CLI, and each
test writes the allowed_signers file it verifies against. States are read from
`verify --json`; every refusal is a one-line error that names its cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cleanup.signoff import approve as lib_approve
from tests.conftest import Run, assert_one_line_error, make_key
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.scenario import Scenario, tenant_objects

NOW = datetime.now(UTC).replace(microsecond=0)
TAKEN = NOW - timedelta(hours=2)
OLD = TAKEN - timedelta(days=5)
NS_PLAN = "cleanup-plan"
NS_WITNESS = "cleanup-witness"
TEAM_NS = f'namespaces="{NS_PLAN},{NS_WITNESS}"'


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def carol_key(keys_dir: Path) -> Path:
    return make_key(keys_dir, "carol", "ecdsa")


@pytest.fixture(scope="session")
def mallory_key(keys_dir: Path) -> Path:
    return make_key(keys_dir, "mallory")


def pub(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


def line(name: str, key: Path, options: str = TEAM_NS) -> str:
    """One allowed_signers line: NAME [OPTIONS] KEYTYPE BASE64 [COMMENT]."""
    return " ".join(p for p in (name, options, pub(key)) if p)


def fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True,
                         text=True, check=True, stdin=subprocess.DEVNULL).stdout
    return out.split()[1]


def ssh_sign(doc: Path, key: Path, namespace: str, sig: Path) -> None:
    """Sign ``doc`` with plain ssh-keygen, writing the signature to ``sig``."""
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace,
                    str(doc)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    os.replace(f"{doc}.sig", sig)


def ssh_verify(allowed: Path, principal: str, namespace: str, sig: Path,
               doc: Path) -> subprocess.CompletedProcess[str]:
    with open(doc, "rb") as fh:
        return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", principal,
                               "-n", namespace, "-s", str(sig)], stdin=fh, capture_output=True,
                              text=True, check=False)


def states(report: dict[str, Any]) -> dict[str, str]:
    """{"author": state, <approval file stem>: state, ...} from `verify --json`."""
    out = {"author": report["author"]["state"] if report["author"] else "missing"}
    out.update({Path(a["path"]).stem: a["state"] for a in report["approvals"]})
    return out


def approval(plan_dir: Path, name: str) -> tuple[Path, Path]:
    d = plan_dir / "signatures" / "approvals"
    return d / f"{name}.json", d / f"{name}.sig"


class Signoff(Scenario):
    """A local store, its inputs and a plan by alice, all made with the CLI."""

    def __init__(self, tmp: Path, alice_key: Path) -> None:
        self.store = tmp / "store"
        self.store.mkdir()
        # No allowed_signers file: each test writes the one it verifies against.
        super().__init__(tmp, str(self.store), signers={})
        self.signers["alice"] = self.alice_key = alice_key
        objects = tenant_objects(40, OLD)
        self.write_inputs(objects, [k for k, _s, _t in objects[2:]], taken_at=TAKEN)
        self.plan_dir = self.make_plan("plan")

    def make_plan(self, out: str, *extra: str) -> Path:
        r = self.create_plan("--internal", "internal", "--max-delete-fraction", "0.5", *extra,
                             out=out)
        assert r.code == 0, r.err
        return self.tmp / out

    def allowed(self, *lines: str, name: str = "allowed_signers") -> Path:
        path = self.tmp / name
        path.write_text("".join(f"{ln}\n" for ln in lines))
        return path

    def approve(self, signer: str, key: Path, *extra: str,  # type: ignore[override]
                plan: Path | None = None, env: dict[str, str] | None = None) -> Run:
        return run_cli(["approve", str(plan or self.plan_dir), "--signer", signer, "--key",
                        str(key), "--yes", *extra], env=env)

    def verify(self, allowed: Path, plan: Path | None = None) -> tuple[Run, dict[str, Any]]:
        r = run_cli(["verify", str(plan or self.plan_dir), "--allowed-signers", str(allowed),
                     "--json"])
        return r, json.loads(r.out) if r.out.strip().startswith("{") else {}


@pytest.fixture
def so(tmp_path: Path, alice_key: Path) -> Signoff:
    return Signoff(tmp_path, alice_key)


@pytest.fixture
def team(so: Signoff, alice_key: Path, bob_key: Path, carol_key: Path) -> Path:
    """alice (author), bob (ed25519) and carol (ecdsa), for both namespaces."""
    return so.allowed(line("alice", alice_key), line("bob", bob_key), line("carol", carol_key))


def assert_refused_signoff(r: Run, *needles: str) -> None:
    """Exit 4, one line naming I7 and the cause."""
    assert_one_line_error(r, 4, "I7 two-person", *needles)


# ---------------------------------------------------------------- 1. happy path


def test_happy_path_ed25519_and_ecdsa_approvers(so: Signoff, team: Path, bob_key: Path,
                                               carol_key: Path) -> None:
    r = so.approve("bob", bob_key, "--comment", "checked the tenants")
    assert r.code == 0, r.err
    assert "approved plan" in r.out
    r = so.approve("carol", carol_key, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["signer"] == "carol"

    plan_id = hashlib.sha256((so.plan_dir / "plan.json").read_bytes()).hexdigest()
    doc_path, sig_path = approval(so.plan_dir, "bob")
    doc = json.loads(doc_path.read_bytes())
    assert set(doc) == {"plan_id", "signer", "signed_at", "role", "comment", "audit_head"}
    assert doc["plan_id"] == plan_id
    # The audit head bob saw (I14): entry 1, the plan's creation, as it is in the log.
    seq, digest = doc["audit_head"].split(":")
    entry = so.store / "_cleanup" / "audit" / f"{int(seq):012d}.json"
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == digest
    assert (doc["signer"], doc["role"], doc["comment"]) == ("bob", "approver",
                                                            "checked the tenants")
    signed_at = datetime.fromisoformat(doc["signed_at"])
    assert abs(datetime.now(UTC) - signed_at) < timedelta(minutes=5)
    assert sig_path.read_text().startswith("-----BEGIN SSH SIGNATURE-----")

    r, rep = so.verify(team)
    assert r.code == 0, r.err
    assert rep["ok"] is True
    assert rep["plan_id"] == plan_id
    assert rep["integrity"]["ok"] is True
    assert states(rep) == {"author": "valid", "bob": "valid", "carol": "valid"}
    assert rep["two_person"]["ok"] is True
    assert rep["two_person"]["facts"]["valid_approvers"] == ["bob", "carol"]
    by_name = {a["signer"]: a for a in rep["approvals"]}
    assert by_name["bob"]["fingerprint"] == fingerprint(bob_key)
    assert by_name["carol"]["fingerprint"] == fingerprint(carol_key)
    assert by_name["bob"]["comment"] == "checked the tenants"
    assert rep["author"]["fingerprint"] == fingerprint(so.alice_key)

    text = run_cli(["verify", str(so.plan_dir), "--allowed-signers", str(team)])
    assert text.code == 0, text.err
    assert "I6 plan-integrity: ok" in text.out
    assert "I7 two-person: ok" in text.out


def test_ecdsa_key_is_ecdsa(carol_key: Path) -> None:
    assert pub(carol_key).startswith("ecdsa-sha2-nistp256 ")


# ---------------------------------------------------------------- 2. ssh-agent


@pytest.fixture
def agent() -> Iterator[dict[str, str]]:
    """A private ssh-agent on a socket of our own; killed by its pid at teardown."""
    d = Path(tempfile.mkdtemp(prefix="cleanup-agent-"))  # short: sockets have a length limit
    p = subprocess.run(["ssh-agent", "-s", "-a", str(d / "sock")], capture_output=True,
                       text=True, check=True, stdin=subprocess.DEVNULL, timeout=30)
    sock = re.search(r"SSH_AUTH_SOCK=([^;\s]+)", p.stdout)
    pid = re.search(r"SSH_AGENT_PID=(\d+)", p.stdout)
    assert sock, p.stdout
    assert pid, p.stdout
    env = {"SSH_AUTH_SOCK": sock.group(1), "SSH_AGENT_PID": pid.group(1)}
    try:
        yield env
    finally:
        try:
            os.kill(int(pid.group(1)), signal.SIGTERM)
        except ProcessLookupError:
            pass
        shutil.rmtree(d, ignore_errors=True)


def test_encrypted_key_through_ssh_agent(so: Signoff, agent: dict[str, str],
                                         alice_key: Path) -> None:
    keydir = so.tmp / "dave-keys"
    keydir.mkdir()
    key = keydir / "dave"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-C", "dave",
                    "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
    askpass = keydir / "askpass.sh"
    askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
    askpass.chmod(0o700)
    add = subprocess.run(["ssh-add", str(key)], capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL, timeout=30,
                         env={**os.environ, **agent, "SSH_ASKPASS": str(askpass),
                              "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"})
    assert add.returncode == 0, add.stderr
    key.unlink()  # from now on only the agent holds the private key
    pubkey = Path(f"{key}.pub")

    r = so.approve("dave", pubkey, env=agent)
    assert r.code == 0, r.err
    allowed = so.allowed(line("alice", alice_key), line("dave", key))
    r, rep = so.verify(allowed)
    assert r.code == 0, r.err
    assert states(rep) == {"author": "valid", "dave": "valid"}
    assert rep["approvals"][0]["fingerprint"] == fingerprint(key)

    # Without the agent the .pub alone cannot sign: exit 4, the cause and the fix.
    doc_path, _ = approval(so.plan_dir, "dave")
    before = doc_path.read_bytes()
    r = so.approve("dave", pubkey, env={"SSH_AUTH_SOCK": str(so.tmp / "no-agent")})
    assert_one_line_error(r, 4, "could not sign", "ssh-agent")
    assert doc_path.read_bytes() == before


# ---------------------------------------------------------------- 3. I6 tampering


@pytest.fixture(scope="module")
def approved(tmp_path_factory: pytest.TempPathFactory, alice_key: Path, bob_key: Path,
             carol_key: Path) -> tuple[Path, Path]:
    """One plan approved by bob, copied by each tampering test."""
    s = Signoff(tmp_path_factory.mktemp("approved"), alice_key)
    allowed = s.allowed(line("alice", alice_key), line("bob", bob_key),
                        line("carol", carol_key))
    assert s.approve("bob", bob_key).code == 0
    r, _ = s.verify(allowed)
    assert r.code == 0, r.err
    return s.plan_dir, allowed


def _spread(name: str, i: int) -> tuple[float, int]:
    """A reproducible pseudo-random (position as a fraction of the file, bit)."""
    h = hashlib.sha256(f"{name}/{i}".encode()).digest()
    return int.from_bytes(h[:4]) / 2**32, h[4] % 8


# The first and last byte, and five more spread over each file.
FLIPS = [(name, where, bit) for name in ("plan.json", "manifest.parquet")
         for where, bit in [(0.0, 0), (1.0, 7), *(_spread(name, i) for i in range(5))]]


@pytest.mark.parametrize(("name", "where", "bit"), FLIPS,
                         ids=[f"{n}-{w:.3f}-bit{b}" for n, w, b in FLIPS])
def test_any_changed_byte_fails_i6(approved: tuple[Path, Path], tmp_path: Path, name: str,
                                   where: float, bit: int) -> None:
    src, allowed = approved
    plan = tmp_path / "plan"
    shutil.copytree(src, plan)
    data = bytearray((plan / name).read_bytes())
    pos = min(int(where * len(data)), len(data) - 1)
    data[pos] ^= 1 << bit
    (plan / name).write_bytes(bytes(data))
    r = run_cli(["verify", str(plan), "--allowed-signers", str(allowed)])
    assert_one_line_error(r, 3, "I6 plan-integrity", name)


def test_consistent_edit_of_plan_and_manifest_fails_i6(so: Signoff, team: Path,
                                                       bob_key: Path) -> None:
    """Swap in another manifest and fix up its digest in plan.json: still I6, exit 3."""
    assert so.approve("bob", bob_key).code == 0
    other = so.make_plan("plan-b", "--internal", "acme")
    shutil.copyfile(other / "manifest.parquet", so.plan_dir / "manifest.parquet")
    plan = json.loads((so.plan_dir / "plan.json").read_bytes())
    plan["manifest"] = json.loads((other / "plan.json").read_bytes())["manifest"]
    plan["policy"]["min_approvals"] = 0
    (so.plan_dir / "plan.json").write_text(json.dumps(plan, sort_keys=True,
                                                      separators=(",", ":")))
    r = run_cli(["verify", str(so.plan_dir), "--allowed-signers", str(team)])
    assert_one_line_error(r, 3, "I6 plan-integrity", "plan.json")
    assert_one_line_error(so.approve("carol", bob_key), 3, "I6 plan-integrity")


def test_approve_refuses_a_changed_manifest(so: Signoff, bob_key: Path) -> None:
    m = so.plan_dir / "manifest.parquet"
    m.write_bytes(m.read_bytes() + b"\0")
    assert_one_line_error(so.approve("bob", bob_key), 3, "I6 plan-integrity",
                          "manifest.parquet")
    assert not approval(so.plan_dir, "bob")[0].exists()


def test_editing_the_signed_time_breaks_the_approval(so: Signoff, team: Path,
                                                     bob_key: Path) -> None:
    lib_approve(str(so.plan_dir), "bob", str(bob_key),
                now=datetime.now(UTC) - timedelta(days=8))
    doc_path, _ = approval(so.plan_dir, "bob")
    doc = json.loads(doc_path.read_bytes())
    doc["signed_at"] = datetime.now(UTC).isoformat()  # make the old approval look fresh
    doc_path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    r, rep = so.verify(team)
    assert states(rep)["bob"] == "bad-signature"
    assert_refused_signoff(r, "bob: bad-signature")


# ---------------------------------------------------------------- 4. replay


def test_approval_replayed_from_another_plan(so: Signoff, team: Path, bob_key: Path) -> None:
    other = so.make_plan("plan-b", "--stages", "50%,100%")
    assert so.approve("bob", bob_key).code == 0
    dst = so.plan_dir, other
    for src_file, dst_file in zip(approval(dst[0], "bob"), approval(dst[1], "bob"),
                                  strict=True):
        shutil.copyfile(src_file, dst_file)
    r, rep = so.verify(team, plan=other)
    assert states(rep) == {"author": "valid", "bob": "plan-changed"}
    assert rep["integrity"]["ok"] is True
    assert_refused_signoff(r, "bob: plan-changed")


# ---------------------------------------------------------------- 5. self-approval


def test_approve_refuses_self_approval(so: Signoff, alice_key: Path) -> None:
    assert_one_line_error(so.approve("alice", alice_key), 4, "alice", "self-approval")
    assert not approval(so.plan_dir, "alice")[0].exists()


def test_hand_made_self_approval_does_not_count(so: Signoff, team: Path,
                                                alice_key: Path) -> None:
    doc_path, sig_path = approval(so.plan_dir, "alice")
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    plan_id = hashlib.sha256((so.plan_dir / "plan.json").read_bytes()).hexdigest()
    doc_path.write_text(json.dumps({"plan_id": plan_id, "signer": "alice",
                                    "signed_at": datetime.now(UTC).isoformat(),
                                    "role": "approver", "comment": ""}))
    ssh_sign(doc_path, alice_key, NS_PLAN, sig_path)
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "alice": "self-approval"}
    assert_refused_signoff(r, "alice: self-approval")


def test_another_name_bound_to_the_authors_key_is_self_approval(
        so: Signoff, alice_key: Path, carol_key: Path) -> None:
    # bob's name is listed with alice's key: OpenSSH says "valid", the key says alice.
    allowed = so.allowed(line("alice", alice_key), line("bob", alice_key),
                         line("carol", carol_key))
    lib_approve(str(so.plan_dir), "bob", str(alice_key))
    r, rep = so.verify(allowed)
    assert states(rep) == {"author": "valid", "bob": "self-approval"}
    assert rep["approvals"][0]["fingerprint"] == rep["author"]["fingerprint"]
    assert_refused_signoff(r, "bob: self-approval")
    # A genuine second approver makes it pass; the self-approval still does not count.
    lib_approve(str(so.plan_dir), "carol", str(carol_key))
    r, rep = so.verify(allowed)
    assert r.code == 0, r.err
    assert rep["two_person"]["facts"]["valid_approvers"] == ["carol"]


# ---------------------------------------------------------------- 6. unknown key, mismatch


def test_unknown_key(so: Signoff, alice_key: Path, bob_key: Path, carol_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    allowed = so.allowed(line("alice", alice_key), line("carol", carol_key))
    r, rep = so.verify(allowed)
    assert states(rep) == {"author": "valid", "bob": "unknown-key"}
    assert_refused_signoff(r, "bob: unknown-key")


def test_key_of_an_unlisted_person_under_a_listed_name(so: Signoff, team: Path,
                                                      mallory_key: Path) -> None:
    lib_approve(str(so.plan_dir), "bob", str(mallory_key))
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "bob": "unknown-key"}
    assert_refused_signoff(r, "bob: unknown-key")


def test_signer_mismatch(so: Signoff, team: Path, carol_key: Path) -> None:
    lib_approve(str(so.plan_dir), "bob", str(carol_key))  # bob.json, carol's key
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "bob": "signer-mismatch"}
    assert "carol" in rep["approvals"][0]["detail"]
    assert_refused_signoff(r, "bob: signer-mismatch")


def test_author_key_not_listed(so: Signoff, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    r, rep = so.verify(so.allowed(line("bob", bob_key)))
    assert states(rep) == {"author": "unknown-key", "bob": "valid"}
    assert_refused_signoff(r, "author signature of alice is unknown-key")


def test_author_signature_missing(so: Signoff, team: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    (so.plan_dir / "signatures" / "author.sig").unlink()
    (so.plan_dir / "signatures" / "author.json").unlink()
    r, rep = so.verify(team)
    assert rep["author"] is None
    assert_refused_signoff(r, "author signature is missing")


def test_approval_file_named_for_someone_else(so: Signoff, team: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    for src, dst in zip(approval(so.plan_dir, "bob"), approval(so.plan_dir, "carol"),
                        strict=True):
        os.replace(src, dst)
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "carol": "malformed"}
    assert "named for carol" in rep["approvals"][0]["detail"]
    assert_refused_signoff(r, "malformed")


# ---------------------------------------------------------------- 7. expiry


def test_expired_approval(so: Signoff, team: Path, bob_key: Path) -> None:
    lib_approve(str(so.plan_dir), "bob", str(bob_key),
                now=datetime.now(UTC) - timedelta(days=8))
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "bob": "expired"}
    assert_refused_signoff(r, "bob: expired", "older than 7d")


def test_approval_within_ttl_is_valid(so: Signoff, team: Path, bob_key: Path) -> None:
    lib_approve(str(so.plan_dir), "bob", str(bob_key),
                now=datetime.now(UTC) - timedelta(days=7) + timedelta(hours=1))
    r, rep = so.verify(team)
    assert r.code == 0, r.err
    assert states(rep)["bob"] == "valid"


def test_expiry_ignores_file_times(so: Signoff, team: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    old = time.time() - 30 * 86400
    for p in approval(so.plan_dir, "bob"):
        os.utime(p, (old, old))
    r, rep = so.verify(team)
    assert r.code == 0, r.err
    assert states(rep)["bob"] == "valid"


def test_approval_from_the_future(so: Signoff, team: Path, bob_key: Path) -> None:
    lib_approve(str(so.plan_dir), "bob", str(bob_key),
                now=datetime.now(UTC) + timedelta(hours=2))
    r, rep = so.verify(team)
    assert states(rep)["bob"] == "from-the-future"
    assert_refused_signoff(r, "bob: from-the-future")


# ---------------------------------------------------------------- 8. namespaces


def test_key_not_allowed_in_the_plan_namespace(so: Signoff, alice_key: Path,
                                               bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    allowed = so.allowed(line("alice", alice_key),
                         line("bob", bob_key, f'namespaces="{NS_WITNESS}"'))
    r, rep = so.verify(allowed)
    assert states(rep) == {"author": "valid", "bob": "wrong-namespace"}
    assert_refused_signoff(r, "bob: wrong-namespace")


def test_signature_in_another_namespace(so: Signoff, team: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    doc_path, sig_path = approval(so.plan_dir, "bob")
    ssh_sign(doc_path, bob_key, "git", sig_path)  # a git commit signature over bob.json
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "bob": "wrong-namespace"}
    assert_refused_signoff(r, "bob: wrong-namespace")


# ---------------------------------------------------------------- 9. key validity windows


def test_key_valid_before_in_the_past(so: Signoff, alice_key: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    allowed = so.allowed(line("alice", alice_key),
                         line("bob", bob_key, f'{TEAM_NS},valid-before="20200101"'))
    r, rep = so.verify(allowed)
    assert states(rep) == {"author": "valid", "bob": "key-expired"}
    assert_refused_signoff(r, "bob: key-expired")


def test_key_valid_after_in_the_future(so: Signoff, alice_key: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    allowed = so.allowed(line("alice", alice_key),
                         line("bob", bob_key, f'{TEAM_NS},valid-after="20990101"'))
    r, rep = so.verify(allowed)
    assert states(rep) == {"author": "valid", "bob": "key-not-yet-valid"}
    assert_refused_signoff(r, "bob: key-not-yet-valid")


def test_key_window_is_checked_at_the_signed_time(so: Signoff, alice_key: Path,
                                                  bob_key: Path) -> None:
    # bob's key was retired yesterday: an approval he signed two days ago still counts,
    # one dated today does not.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d%H%M%SZ")
    allowed = so.allowed(line("alice", alice_key),
                         line("bob", bob_key, f'{TEAM_NS},valid-before="{yesterday}"'))
    lib_approve(str(so.plan_dir), "bob", str(bob_key),
                now=datetime.now(UTC) - timedelta(days=2))
    r, rep = so.verify(allowed)
    assert r.code == 0, r.err
    assert states(rep)["bob"] == "valid"
    lib_approve(str(so.plan_dir), "bob", str(bob_key))
    r, rep = so.verify(allowed)
    assert states(rep)["bob"] == "key-expired"
    assert r.code == 4


def test_state_does_not_depend_on_the_allowed_signers_path(so: Signoff, alice_key: Path,
                                                           bob_key: Path) -> None:
    # ssh-keygen's message starts with the file's path; a directory called "namespace"
    # must not turn a key that is not yet valid into a wrong namespace.
    assert so.approve("bob", bob_key).code == 0
    d = so.tmp / "namespace-has-expired"
    d.mkdir()
    allowed = d / "allowed_signers"
    not_yet = f'{TEAM_NS},valid-after="20990101"'
    allowed.write_text(f"{line('alice', alice_key)}\n{line('bob', bob_key, not_yet)}\n")
    r, rep = so.verify(allowed)
    assert states(rep) == {"author": "valid", "bob": "key-not-yet-valid"}
    assert r.code == 4


def test_garbage_signature_is_malformed(so: Signoff, team: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    approval(so.plan_dir, "bob")[1].write_text("not a signature\n")
    r, rep = so.verify(team)
    assert states(rep) == {"author": "valid", "bob": "malformed"}
    assert_refused_signoff(r, "bob: malformed")


# ---------------------------------------------------------------- 10. interoperability


def test_plain_openssh_verifies_the_approval(so: Signoff, team: Path, bob_key: Path) -> None:
    assert so.approve("bob", bob_key).code == 0
    doc_path, sig_path = approval(so.plan_dir, "bob")
    v = ssh_verify(team, "bob", NS_PLAN, sig_path, doc_path)
    assert v.returncode == 0, v.stderr
    assert f'Good "{NS_PLAN}" signature for bob' in v.stdout
    assert ssh_verify(team, "bob", "git", sig_path, doc_path).returncode != 0
    assert ssh_verify(team, "carol", NS_PLAN, sig_path, doc_path).returncode != 0

    plan_json = so.plan_dir / "plan.json"
    sha = subprocess.run(["sha256sum", str(plan_json)], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    assert sha == hashlib.sha256(plan_json.read_bytes()).hexdigest()
    assert json.loads(doc_path.read_bytes())["plan_id"] == sha


# ---------------------------------------------------------------- 11. witness, I8


# The witness signs a challenge the runner publishes in the store: see tests/test_presence.py.


def test_witness_of_a_stage_the_plan_lacks(so: Signoff, bob_key: Path) -> None:
    r = run_cli(["witness", str(so.plan_dir), "--stage", "99", "--signer", "bob", "--key",
                 str(bob_key)])
    assert_one_line_error(r, 2, "no stage 99")
    assert not (so.plan_dir / "witness").exists() or not any(
        (so.plan_dir / "witness").iterdir())


# ---------------------------------------------------------------- 12. confirmation


def test_approve_without_yes_and_without_a_terminal(so: Signoff, bob_key: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    p = subprocess.run([sys.executable, "-m", "cleanup", "approve", str(so.plan_dir),
                        "--signer", "bob", "--key", str(bob_key)], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, env=env, check=False, timeout=120)
    assert_one_line_error(Run(p.returncode, p.stdout, p.stderr), 2, "not a terminal", "--yes")
    assert not approval(so.plan_dir, "bob")[0].exists()


def _on_a_terminal(args: list[str], prompt: bytes, answer: bytes) -> tuple[int, bytes]:
    """Run ``args`` with a pseudo-terminal as stdin/stdout/stderr; answer ``prompt``."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    out = b""
    answered = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not answered and prompt in out:
                os.write(master, answer)
                answered = True
            if not ready and proc.poll() is not None:
                break
        return proc.wait(timeout=30), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("answer", "code"), [(b"n\n", 130), (b"y\n", 0)], ids=["no", "yes"])
def test_approve_asks_on_a_terminal(so: Signoff, bob_key: Path, answer: bytes,
                                    code: int) -> None:
    rc, out = _on_a_terminal([sys.executable, "-m", "cleanup", "approve", str(so.plan_dir),
                              "--signer", "bob", "--key", str(bob_key)],
                             b"Approve this plan as bob?", answer)
    assert rc == code, out.decode(errors="replace")
    assert b"I1 strict-cutoff" in out  # the summary is shown before the question
    assert approval(so.plan_dir, "bob")[0].exists() is (code == 0)


# ---------------------------------------------------------------- 13. usage errors


def test_verify_usage_errors(so: Signoff, team: Path) -> None:
    r = run_cli(["verify", str(so.plan_dir), "--allowed-signers", str(so.tmp / "nope")])
    assert_one_line_error(r, 2, "allowed signers file", "does not exist")
    r = run_cli(["verify", str(so.tmp / "no-plan"), "--allowed-signers", str(team)])
    assert_one_line_error(r, 2, "not a plan directory")


def test_approve_usage_errors(so: Signoff, bob_key: Path) -> None:
    assert_one_line_error(so.approve("bob smith", bob_key), 2, "principal name")
    assert_one_line_error(so.approve("bob", so.tmp / "no-key"), 2, "does not exist")
    assert not (so.plan_dir / "signatures" / "approvals").exists() or not any(
        (so.plan_dir / "signatures" / "approvals").iterdir())


@pytest.mark.parametrize("command", ["approve", "verify", "witness"])
def test_signoff_commands_have_help(command: str) -> None:
    r = run_cli([command, "--help"])
    assert r.code == 0
    assert "--key" in r.out or "--allowed-signers" in r.out
