"""``cleanup demo``: a local store, a DuckDB metadata database and two SSH keys,
then the guarded flow on them. No service needed.

The demo's files are backdated with ``os.utime`` so that some are old enough
to be candidates; ctime cannot be backdated, so the demo inventory uses
``--trust-mtime``, which the plan records and ``show`` flags, as it would for
any real store listed that way.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

TENANTS = ("internal-analytics", "acme", "globex", "initech", "umbrella", "hooli")
FILES_PER_TABLE = 40
TABLES = ("events", "orders")


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    store: Path
    metadata: Path
    keys: Path
    allowed_signers: Path

    def key(self, name: str) -> Path:
        return self.keys / name


def build(root: Path) -> DemoPaths:
    """Create the demo store and metadata; return where everything is."""
    import duckdb

    store = root / "store"
    keys = root / "keys"
    if store.exists() and any(store.iterdir()):
        from cleanup.errors import UsageError

        raise UsageError(f"{root} already holds a demo store", hint="give a new DIR")
    store.mkdir(parents=True, exist_ok=True)
    keys.mkdir(exist_ok=True)
    now = time.time()
    referenced: list[str] = []
    for ti, tenant in enumerate(TENANTS):
        for table in TABLES:
            for i in range(FILES_PER_TABLE):
                key = f"{tenant}/{table}/part-{i:04d}.parquet"
                p = store / key
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(os.urandom(512 + 37 * i + 101 * ti))
                age_days = 2 + (i * 7 + ti) % 60
                os.utime(p, (now - age_days * 86400, now - age_days * 86400))
                # Files 0-2 of each table were compacted away: no metadata references them.
                if i >= 3:
                    referenced.append(key)
    # One fresh unreferenced file per tenant: written after the snapshot, must be kept.
    for tenant in TENANTS:
        (store / tenant / "events" / "part-fresh.parquet").write_bytes(b"fresh")
    metadata = root / "metadata.duckdb"
    con = duckdb.connect(str(metadata))
    con.execute("CREATE TABLE data_files (path VARCHAR, tenant VARCHAR)")
    con.executemany("INSERT INTO data_files VALUES (?, ?)",
                    [(f"file://{store}/{k}", k.split("/")[0]) for k in referenced])
    con.close()
    names = ("alice", "bob")
    lines = []
    for name in names:
        key_file = keys / name
        if not key_file.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                            "-f", str(key_file)], check=True, stdin=subprocess.DEVNULL)
        pub = (keys / f"{name}.pub").read_text().strip()
        lines.append(f'{name} namespaces="cleanup-plan,cleanup-witness" {pub}')
    allowed = root / "allowed_signers"
    allowed.write_text("\n".join(lines) + "\n")
    return DemoPaths(root, store, metadata, keys, allowed)


def run(root: Path, say: Callable[[str], None]) -> dict[str, str]:
    """Build the demo and run the flow that exists so far; return the artefacts' paths."""
    from cleanup.core.stages import DEFAULT_TENANT_PATTERN
    from cleanup.core.timeutil import format_time
    from cleanup.inventory import list_store
    from cleanup.planner import PlanOptions, make_plan
    from cleanup.snapshot import take_snapshot
    from cleanup.stores import open_store

    d = build(root)
    say(f"1. demo store {d.store}: {len(TENANTS)} tenants, metadata in {d.metadata}")
    inv = str(root / "inventory.parquet")
    res = list_store(open_store(str(d.store), trust_mtime=True), inv, time_source="mtime")
    say(f"2. cleanup inventory {d.store} -o {inv} --trust-mtime   ({res.objects} objects)")
    snap = str(root / "snapshot.parquet")
    s = take_snapshot(str(d.metadata), snap, query="SELECT path FROM data_files")
    say(f"3. cleanup snapshot {d.metadata} --query 'SELECT path FROM data_files' -o {snap}"
        f"   ({s.rows} references, taken_at {s.to_json()['taken_at']})")
    pin = _trust_root(d, say)
    plan_dir = str(root / "plan")
    query = "SELECT path FROM data_files"
    p = make_plan(PlanOptions(
        store=str(d.store), inventory=inv, snapshot=snap, out=plan_dir, author="alice",
        key=str(d.key("alice")), tenant_pattern=DEFAULT_TENANT_PATTERN,
        internal=("internal-analytics",), stages="10%,100%", quarantine="copy",
        reconcile_with=str(d.metadata), reconcile_query=query, trust_root=pin))
    m = p.plan.manifest
    say(f"4. cleanup plan --store {d.store} ... -o {plan_dir} --internal internal-analytics "
        f"--reconcile-with {d.metadata} --reconcile-query '{query}' --trust-root {pin} "
        f"--author alice --key {d.key('alice')}   (published to the store)")
    say(f"   plan {p.plan_id}: {m.objects} candidates of {p.plan.scope.objects} objects,"
        f" cutoff {format_time(p.plan.cutoff.time)}; the fresh unreferenced files were kept "
        "(I1, I2)")
    from cleanup.errors import SignoffError
    from cleanup.executor import ExecuteOptions, execute
    from cleanup.report import write_report
    from cleanup.signoff import approve, publish, require_verified, witness

    report = write_report(plan_dir, str(root / "report.html"))
    say(f"5. cleanup review {plan_dir} --html {report}   (open it in a browser)")
    approve(plan_dir, "bob", str(d.key("bob")), comment="demo review")
    publish(plan_dir)
    say(f"6. cleanup approve {plan_dir} --signer bob --key {d.key('bob')}   (second engineer; "
        "published to the store)")
    require_verified(plan_dir, str(d.allowed_signers))
    say(f"7. cleanup verify {plan_dir} --allowed-signers {d.allowed_signers}   (I6, I7 hold)")
    opts = ExecuteOptions(plan_dir=plan_dir, stage=0, executor="alice", key=str(d.key("alice")),
                          trust_root=pin)
    try:
        execute(opts)
    except SignoffError as exc:
        say(f"8. cleanup execute {plan_dir} --stage 0 --executor alice --key {d.key('alice')} "
            f"--trust-root {pin}")
        say(f"   refused, as it must be: {exc.message.split(' (')[0]}; the run published a "
            "challenge for a witness")
    else:
        raise AssertionError("execution without a witness was not refused")
    _plan_id, challenge, _doc = witness(plan_dir, 0, "bob", str(d.key("bob")))
    say(f"9. cleanup witness {plan_dir} --stage 0 --signer bob --key {d.key('bob')}   (I8: "
        f"bob, present, signs challenge {challenge.split('.')[-1][:12]}...)")
    r = execute(opts)
    say(f"10. cleanup execute {plan_dir} --stage 0 --executor alice --key {d.key('alice')} "
        f"--trust-root {pin}   (the same command again)")
    say(f"   stage 0 (internal tenants): {r.moved} objects moved to "
        f"{d.store}/_cleanup/quarantine/{p.plan_id[:12]}...; stages 1-2 wait for the hold (I10)")
    return {"store": str(d.store), "plan": plan_dir, "allowed_signers": str(d.allowed_signers),
            "plan_id": p.plan_id, "report": report, "trust_root": pin}


def _trust_root(d: DemoPaths, say: Callable[[str], None]) -> str:
    """The store's trust root (I17): alice may author and run, bob may approve and
    witness; version 1 signed by both; its digest is the runner's pin."""
    from cleanup import trust
    from cleanup.core.trust import Floors
    from cleanup.stores import open_store

    store = open_store(str(d.store))
    principals = trust.parse_allowed_signers(str(d.allowed_signers))
    principals = {"alice": replace(principals["alice"], roles=("author", "runner")),
                  "bob": replace(principals["bob"], roles=("approver", "witness"))}
    digest, _root = trust.init_root(store, principals, threshold=2, floors=Floors())
    for name in ("alice", "bob"):
        trust.sign(store, 1, name, str(d.key(name)))
    say(f"   cleanup trust init {d.store} --from {d.allowed_signers}; cleanup trust sign ... "
        f"(alice, bob): trust root {digest[:19]}... pinned by the runner (I17)")
    return digest
