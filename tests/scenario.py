"""One scenario builder for flow tests: a store with objects, its inventory, a snapshot of
references, a plan by alice, bob's approval and witness, a live snapshot to reconcile
against, and the execute/restore/status commands on that plan.

Steps run the CLI in this process (:mod:`tests.inproc`) unless the scenario is given
``run=tests.conftest.run_cli``; a step with a ``CLEANUP_FAULT_*`` or ``CLEANUP_TEST_*``
variable always runs as a real process through :mod:`tests.faultcli` (the fault kills
it). Inputs come from a real listing (:meth:`Scenario.list_store`,
:meth:`Scenario.snapshot_refs`) or are written directly as Parquet
(:meth:`Scenario.write_inputs`) when the test is about the plan, not the store.

Typical use::

    sc = Scenario(tmp_path, str(store_dir), signers={"alice": alice_key, "bob": bob_key})
    sc.list_store(); sc.snapshot_refs(refs)
    ok(sc.create_plan("--internal", "internal")); sc.approve_and_witness()
    ok(sc.execute())
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from cleanup.core.timeutil import format_time
from tests import faultcli, inproc
from tests.conftest import Run
from tests.factories import write_inventory_file, write_snapshot_file

if TYPE_CHECKING:
    from cleanup.published import RecordTrust

TENANTS = ("internal", "acme", "globex", "initech")
#: trust root floors that leave the tests' own policy values to the invariants under test
PERMISSIVE_FLOORS = ("--floor", "min_buffer=0s", "--floor", "min_hold=0s", "--floor",
                     "min_retention=0s", "--floor", "max_approval_ttl=3650d", "--floor",
                     "max_witness_ttl=3650d", "--floor", "max_clock_skew=3650d",
                     "--floor", "max_delete_fraction=1", "--floor",
                     "max_table_delete_fraction=1")


class Runner(Protocol):
    def __call__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 300) -> Run: ...


def ok(r: Run) -> Run:
    """The command succeeded (the whole result is shown when it did not)."""
    assert r.code == 0, (r.code, r.out, r.err)
    return r


def tenant_objects(n: int, when: datetime, *, size: int = 1000,
                   tenants: Sequence[str] = TENANTS) -> list[tuple[str, int, datetime]]:
    """``n`` listed objects spread over ``tenants``: (key, size, last_modified)."""
    return [(f"{tenants[i % len(tenants)]}/t/part-{i:03d}.parquet", size + i, when)
            for i in range(n)]


def allowed_signers_text(signers: Mapping[str, Path]) -> str:
    """allowed_signers lines for both namespaces (cleanup-plan, cleanup-witness)."""
    return "".join(f'{name} namespaces="cleanup-plan,cleanup-witness" '
                   f'{Path(str(key) + ".pub").read_text().strip()}\n'
                   for name, key in signers.items())


def runner_record_trust(directory: Path, name: str = "runner") -> RecordTrust:
    """A runner key and allowed_signers file that sign and check stage records, for
    library tests that write records without a whole trust root."""
    from cleanup.published import RecordTrust
    from tests.conftest import make_key

    key = make_key(directory, name)
    allowed = directory / "allowed_signers.records"
    allowed.write_text(f'{name} namespaces="cleanup-record" '
                       f'{Path(str(key) + ".pub").read_text().strip()}\n')
    return RecordTrust(str(allowed), lambda n: n == name, name, str(key))


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0,
               interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Scenario:
    """Everything a flow needs, rooted at ``tmp``. Attributes are plain paths so tests can
    damage or inspect any of them."""

    def __init__(self, tmp: Path, store_url: str, *, signers: Mapping[str, Path],
                 env: Mapping[str, str] | None = None, run: Runner = inproc.run_cli,
                 plan_name: str = "plan", allowed_signers: Path | None = None) -> None:
        self.tmp = tmp
        self.store_url = store_url
        self.signers = dict(signers)
        self.env: dict[str, str] = dict(env or {})
        self.run = run
        self.inventory = tmp / "inv.parquet"
        self.snapshot = tmp / "snap.parquet"
        self.live = tmp / "live.parquet"
        self.refs_file = tmp / "refs.csv"
        self.plan_dir = tmp / plan_name
        self.allowed_file = allowed_signers or tmp / "allowed_signers"
        if signers and allowed_signers is None:
            self.allowed_file.write_text(allowed_signers_text(self.signers))
        # How execution reconciles (signed with the plan): a live snapshot read from a
        # DuckDB database by default; a metadata database and its query for demo-style
        # flows. Set before create_plan.
        self.reconcile_args: list[str] = ["--reconcile-with", str(self.live)]
        self.trust_root: str | None = None

    def cli(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> Run:
        full = {**self.env, **(env or {})}
        if faultcli.wants_process(full):  # a fault kills the process: never this one
            return faultcli.run(list(args), env=full)
        return self.run(list(args), env=full or None)

    def signer_key(self, name: str) -> Path:
        return self.signers[name]

    # ------------------------------------------------------------------ inputs

    def write_inputs(self, objects: Sequence[tuple[str, int, datetime]], refs: Iterable[str], *,
                     taken_at: datetime | None, store: str | None = None,
                     skew_us: int | None = None,
                     precision: timedelta = timedelta(seconds=1)) -> None:
        """Inventory and snapshot written directly as Parquet (no store listing)."""
        write_inventory_file(self.inventory, store or self.store_url, objects,
                             precision=precision)
        write_snapshot_file(self.snapshot, refs, taken_at=taken_at, skew_us=skew_us)

    def list_store(self, *extra: str) -> Run:
        """``cleanup inventory`` of the store into :attr:`inventory`."""
        return ok(self.cli(["inventory", self.store_url, "-o", str(self.inventory), *extra]))

    def snapshot_refs(self, refs: Iterable[str], *, taken_at: datetime | None = None,
                      out: Path | None = None) -> Path:
        """``cleanup snapshot`` of a key list (taken now unless ``taken_at``)."""
        self.refs_file.write_text("key\n" + "".join(f"{r}\n" for r in refs))
        target = out or self.snapshot
        ok(self.cli(["snapshot", str(self.refs_file), "-o", str(target), "--taken-at",
                     format_time(taken_at or datetime.now(UTC))]))
        return target

    def snapshot_query(self, database: Path, query: str, *, out: Path | None = None) -> Path:
        """``cleanup snapshot`` of a metadata database (its own clock is taken_at)."""
        target = out or self.snapshot
        ok(self.cli(["snapshot", str(database), "--query", query, "-o", str(target)]))
        return target

    # ------------------------------------------------------------------ plan and sign-off

    def ensure_trust(self) -> str | None:
        """With two or more signers: the store's trust root (every signer a principal with
        every role, floors out of the tests' way), signed by all, pinned in :attr:`env`
        as the runner's configuration would (I17)."""
        if self.trust_root is not None or len(self.signers) < 2 \
                or not self.allowed_file.exists():
            return self.trust_root
        shown = self.cli(["trust", "show", self.store_url, "--json"])
        if shown.code == 0:  # a copy of a store that has one already
            self.trust_root = str(json.loads(shown.out)["digest"])
            self.env["CLEANUP_TRUST_ROOT"] = self.trust_root
            return self.trust_root
        r = ok(self.cli(["trust", "init", self.store_url, "--from", str(self.allowed_file),
                         "--people-run", *PERMISSIVE_FLOORS, "--json"]))
        digest = str(json.loads(r.out)["digest"])
        for name, key in self.signers.items():
            ok(self.cli(["trust", "sign", self.store_url, "--version", "1", "--signer", name,
                         "--key", str(key)]))
        self.trust_root = digest
        self.env["CLEANUP_TRUST_ROOT"] = digest
        return digest

    def create_plan(self, *extra: str, out: str | None = None, author: str = "alice") -> Run:
        target = self.tmp / out if out else self.plan_dir
        self.ensure_trust()
        recon = [] if "--reconcile-with" in extra else self.reconcile_args
        return self.cli(["plan", "--store", self.store_url, "--inventory", str(self.inventory),
                         "--snapshot", str(self.snapshot), "-o", str(target), "--author", author,
                         "--key", str(self.signer_key(author)), *recon, *extra])

    def approve(self, signer: str = "bob", *extra: str, plan: Path | None = None) -> Run:
        return self.cli(["approve", str(plan or self.plan_dir), "--signer", signer, "--key",
                         str(self.signer_key(signer)), "--yes", *extra])

    def challenge(self, stage: int = 0, action: str = "execute", executor: str = "alice",
                  plan: Path | None = None) -> Run:
        """The runner starts ``action`` without a witness: it publishes the challenge and
        exits 4 (I8). Anything else is returned as is for the test to see."""
        target = str(plan or self.plan_dir)
        if action == "purge":
            args = ["purge", target, "--stage", str(stage), "--executor", executor,
                    "--key", str(self.signer_key(executor))]
        else:
            args = ["execute", target, "--stage", str(stage), "--executor", executor,
                    "--key", str(self.signer_key(executor)), "--json"]
        return self.cli(args)

    def witness(self, stage: int = 0, signer: str = "bob", plan: Path | None = None,
                action: str = "execute", executor: str = "alice") -> Run:
        """Presence as it happens (I8): the runner's start publishes a challenge, then
        ``signer`` signs it."""
        self.challenge(stage, action, executor, plan)
        return self.cli(["witness", str(plan or self.plan_dir), "--stage", str(stage),
                         "--action", action, "--signer", signer,
                         "--key", str(self.signer_key(signer))])

    def snapshot_live(self, refs: Iterable[str]) -> Path:
        """The live metadata reconciliation reads: the references in a DuckDB database,
        snapshotted with the database's clock (a key list's taken_at is only a claim,
        which execution refuses)."""
        db = self.tmp / "live-meta.duckdb"
        con = duckdb.connect(str(db))
        try:
            con.execute("CREATE OR REPLACE TABLE refs (key VARCHAR)")
            con.executemany("INSERT INTO refs VALUES (?)", [[r] for r in refs])
        finally:
            con.close()
        return self.snapshot_query(db, "SELECT key FROM refs", out=self.live)

    def approve_and_witness(self, stage: int = 0, signer: str = "bob") -> None:
        """Approval by ``signer``, a live snapshot of the same references (taken after the
        plan's snapshot, as reconciliation requires), and ``signer``'s witness."""
        ok(self.approve(signer))
        if self.refs_file.exists():
            refs = self.refs_file.read_text().splitlines()[1:]
            self.snapshot_live(refs)
        ok(self.witness(stage, signer))

    # ------------------------------------------------------------------ execution

    def execute(self, stage: int = 0, *extra: str, executor: str = "alice",
                env: Mapping[str, str] | None = None) -> Run:
        return self.cli(["execute", str(self.plan_dir), "--stage", str(stage),
                         "--executor", executor, "--key", str(self.signer_key(executor)), "--json",
                         *extra], env)

    def restore(self, *extra: str) -> Run:
        return self.cli(["restore", str(self.plan_dir), *extra])

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            ok(self.cli(["status", str(self.plan_dir), "--json"])).out)
        return doc

    # ------------------------------------------------------------------ reading the plan

    def current_plan_id(self) -> str:
        """sha256 of plan.json as it is on disk now."""
        return hashlib.sha256((self.plan_dir / "plan.json").read_bytes()).hexdigest()

    def read_plan(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.plan_dir / "plan.json").read_text())
        return doc

    def manifest(self, stage: int | None = None) -> list[str]:
        where = "" if stage is None else f" WHERE stage = {int(stage)}"
        rows = duckdb.connect().execute(
            f"SELECT key FROM read_parquet('{self.plan_dir}/manifest.parquet'){where} "
            "ORDER BY key").fetchall()
        return [str(r[0]) for r in rows]
