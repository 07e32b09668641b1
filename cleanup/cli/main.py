"""``cleanup``: the click command tree.

Heavy libraries are imported inside the commands, so ``cleanup --help`` only
pays for click. Exit codes (SPEC.md): 0 done, 1 bug, 2 usage, 3 invariant
refusal, 4 sign-off, 5 reconciliation halt, 6 lock held.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta
from typing import Any

import click

from cleanup import __version__
from cleanup.cli.output import emit_json, error_line, progress_bar, say

EXIT_CODES = """\b
Exit codes:
  0 done              1 unexpected error (a bug)   2 usage error
  3 refused by a safety invariant (the message names it, e.g. I1 strict-cutoff)
  4 sign-off missing or invalid   5 reconciliation halt   6 store lock held"""


class Duration(click.ParamType[timedelta]):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        from cleanup.core.timeutil import parse_duration
        from cleanup.errors import UsageError

        try:
            return parse_duration(str(value))
        except UsageError as exc:
            self.fail(f"{exc.message} ({exc.hint})", param, ctx)


class Time(click.ParamType[datetime]):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        from cleanup.core.timeutil import parse_time
        from cleanup.errors import UsageError

        try:
            return parse_time(str(value))
        except UsageError as exc:
            self.fail(f"{exc.message} ({exc.hint})", param, ctx)


class MemoryLimit(click.ParamType[str]):
    """A DuckDB memory limit: a number and a unit (KB, MB, GB, TB, KiB, MiB, GiB, TiB) of at
    least 64 MiB, or a percentage (1-100%) of the machine's memory."""

    name = "SIZE"
    FORMS = "e.g. 512MB, 1GB, 1.5GiB or 80%"
    _RE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,6})?)\s*(kb|mb|gb|tb|kib|mib|gib|tib|%)\s*",
                     re.ASCII | re.IGNORECASE)
    _UNIT = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    MIN_BYTES = 64 * 2**20
    MAX_BYTES = 2**50

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = str(value)
        m = self._RE.fullmatch(text)
        if not m:
            self.fail(f"{text[:40]!r} is not a memory size ({self.FORMS})", param, ctx)
        number, unit = float(m.group(1)), m.group(2).lower()
        if unit == "%":
            if not 1 <= number <= 100:
                self.fail(f"{text!r}: a percentage must be between 1% and 100% "
                          f"({self.FORMS})", param, ctx)
        elif not self.MIN_BYTES <= number * self._UNIT[unit] <= self.MAX_BYTES:
            self.fail(f"{text!r} is out of range: give between 64MiB and 1024TiB "
                      f"({self.FORMS})", param, ctx)
        return f"{m.group(1)}{'%' if unit == '%' else unit.upper().replace('I', 'i')}"


DURATION = Duration()
TIME = Time()
MEMORY = MemoryLimit()


def _check_output(path: str, option: str = "-o") -> None:
    """Refuse an output path in a missing folder before any work is done."""
    from cleanup.inputs import check_output_path

    check_output_path(path, option)


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cleanup")
def cli() -> None:
    """Guarded storage cleanup: compute the unreferenced files, check the safety
    invariants, write a signed plan for review; only signed plans are executed.

    \b
    Typical flow:
      cleanup inventory STORE -o inv.parquet
      cleanup snapshot SOURCE --query ... -o snap.parquet
      cleanup plan --store STORE --inventory inv.parquet --snapshot snap.parquet \\
                   -o PLAN --author you --key ~/.ssh/id_ed25519
      cleanup show PLAN
    """


@cli.command()
@click.argument("store")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Parquet file to write (replaced atomically when complete).")
@click.option("--s3-inventory", "manifest", metavar="MANIFEST",
              help="Read an S3 Inventory report (manifest.json, local path or s3:// URL; "
                   "CSV or Parquet) instead of listing the bucket.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint.")
@click.option("--region", help="S3 region (default: from the AWS environment).")
@click.option("--trust-mtime", is_flag=True,
              help="Local stores: use mtime alone instead of max(mtime, ctime). Unsafe where "
                   "files may be copied in with old mtimes; recorded and shown to reviewers.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inventory(store: str, out: str, manifest: str | None, endpoint_url: str | None,
              region: str | None, trust_mtime: bool, as_json: bool) -> None:
    """List STORE (a directory or s3://bucket/prefix/) into a Parquet inventory.

    Columns: key (store-relative), size, last_modified (UTC), etag. The listing
    time and timestamp precision are kept in the file's metadata. The reserved
    _cleanup/ prefix is never listed. Memory does not grow with the store.
    """
    from cleanup.inventory import list_store, read_s3_inventory
    from cleanup.stores import open_store

    _check_output(out)
    with progress_bar("listing") as progress:
        if manifest:
            res = read_s3_inventory(manifest, store, out, endpoint_url=endpoint_url,
                                    region=region, progress=progress)
        else:
            st = open_store(store, endpoint_url=endpoint_url, region=region,
                            trust_mtime=trust_mtime)
            res = list_store(st, out, progress,
                             time_source="mtime" if trust_mtime else "ctime-or-mtime")
    if as_json:
        emit_json(res.to_json())
    else:
        from cleanup.show import human_bytes

        say(f"{res.objects} objects, {human_bytes(res.bytes)} listed from {res.store} "
            f"at {res.to_json()['listed_at']} -> {res.path}")


@cli.command()
@click.argument("source")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Parquet file to write.")
@click.option("--query", help="SQL whose first column holds the references "
                              "(DuckDB, SQLite, PostgreSQL sources).")
@click.option("--column", help="Key lists: the column that holds the references.")
@click.option("--taken-at", type=TIME,
              help="Key lists: the time the list was complete as of (ISO 8601 with zone). "
                   "Databases give taken_at from their own transaction clock instead.")
@click.option("--ref-encoding", type=click.Choice(["literal", "uri"]), default="literal",
              show_default=True,
              help="How the source spells references: literal bytes, or percent-encoded "
                   "URIs (decoded exactly once at plan time). HTTPS URLs are always decoded.")
@click.option("--ref-base", metavar="URL",
              help="Base that relative references are resolved against "
                   "[default: the plan's store root].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def snapshot(source: str, out: str, query: str | None, column: str | None,
             taken_at: datetime | None, ref_encoding: str, ref_base: str | None,
             as_json: bool) -> None:
    """Capture the keys that metadata references, with the time they were true.

    \b
    SOURCE is one of:
      refs.parquet | refs.csv        a key list (--taken-at required)
      meta.duckdb | duckdb:///path   DuckDB file (--query)
      meta.sqlite | sqlite:///path   SQLite file (--query)
      postgresql://user@host/db      PostgreSQL (--query), read in one REPEATABLE READ
                                     transaction whose own now() becomes taken_at
    References may be store-relative keys or full URLs/paths (s3://, s3a://,
    file:/, file:///, S3 HTTPS URLs); they are resolved against the store at
    plan time by one resolver (I4). Secrets are never recorded.
    """
    from cleanup.snapshot import take_snapshot

    _check_output(out)
    res = take_snapshot(source, out, query=query, column=column, taken_at=taken_at,
                        ref_encoding=ref_encoding, ref_base=ref_base)
    if as_json:
        emit_json(res.to_json())
    else:
        say(f"{res.rows} references from {res.source} taken_at {res.to_json()['taken_at']} "
            f"({res.taken_at_clock}) -> {res.path}")


@cli.command()
@click.option("--store", required=True, help="The store: a directory or s3://bucket/prefix/.")
@click.option("--inventory", "inventory_path", required=True, type=click.Path(dir_okay=False),
              help="Inventory Parquet from `cleanup inventory` of the same store.")
@click.option("--snapshot", "snapshot_path", required=True, type=click.Path(dir_okay=False),
              help="Snapshot Parquet from `cleanup snapshot`.")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Plan directory to create (must not exist or be empty).")
@click.option("--buffer", type=DURATION, help="cutoff = snapshot taken_at - buffer "
                                              "[default: policy min_buffer, 24h].")
@click.option("--cutoff", type=TIME, help="An explicit cutoff; accepted only at or before "
                                          "taken_at - buffer (I1).")
@click.option("--region", help="The store's region (S3: must agree with GetBucketLocation; "
                               "local: default 'local').")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint.")
@click.option("--tenant-pattern", default=r"^(?P<tenant>[^/]+)/", show_default=True,
              help="Regex with a named group 'tenant', matched against each key.")
@click.option("--internal", default="", metavar="T1,T2",
              help="Internal tenants: they form stage 0.")
@click.option("--stages", default="10%,100%", show_default=True,
              help="Cumulative tenant-hash percentages for the stages after stage 0.")
@click.option("--hold", type=DURATION, help="Hold between stages [default: policy min_hold, 24h].")
@click.option("--quarantine", type=click.Choice(["copy", "versioning", "none"]), default="copy",
              show_default=True, help="Where removed files go: a quarantine prefix (copy), "
                                      "delete markers (versioning), or nowhere (none).")
@click.option("--max-delete-fraction", type=click.FloatRange(0, 1),
              help="I5 limit on candidates / scope [default: policy, 0.10].")
@click.option("--max-missing-refs", type=click.FloatRange(0, 1),
              help="I4 limit on referenced keys missing from the inventory [default 0.001].")
@click.option("--sentinel", "sentinels", multiple=True, metavar="KEY",
              help="A key known to be live: must be referenced, listed and kept (I16). "
                   "Repeatable.")
@click.option("--sentinel-file", type=click.File("r"),
              help="A file of sentinel keys, one per line.")
@click.option("--override-minimums", is_flag=True,
              help="Allow --buffer/--hold below the policy floors; recorded in the plan and "
                   "shown first to reviewers.")
@click.option("--unsafe-store-without-conditional-writes", "unsafe_store", is_flag=True,
              help="Allow executing on a store that ignores If-None-Match (e.g. rclone serve "
                   "s3), whose lock cannot exclude a second executor. Recorded, shown first.")
@click.option("--memory-limit", default="1GB", show_default=True, type=MEMORY,
              help="DuckDB memory limit (e.g. 512MB, 1GB, 1GiB, 80%); the rest spills "
                   "to disk.")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="DuckDB worker threads [default: one per CPU core].")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="Policy file (TOML, a [policy] table) [default: ./cleanup.toml if present].")
@click.option("--author", required=True, help="Your principal name (as in allowed_signers).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="SSH key to sign with (private key, or .pub with the key in ssh-agent).")
@click.option("--foreign-refs-ok", "foreign_refs_ok", multiple=True, metavar="STORE",
              help="References into STORE (another bucket or root) are expected: count them "
                   "as outside this store instead of refusing (I4). Repeatable; recorded.")
@click.option("--accept-near-misses", is_flag=True,
              help="Plan although references absent from the inventory differ from an "
                   "inventory key only by encoding or Unicode form (I4). Recorded and shown "
                   "first to reviewers.")
@click.option("--json", "as_json", is_flag=True, help="Print plan id and counts as JSON.")
def plan(store: str, inventory_path: str, snapshot_path: str, out: str,
         buffer: timedelta | None, cutoff: datetime | None, region: str | None,
         endpoint_url: str | None, tenant_pattern: str, internal: str, stages: str,
         hold: timedelta | None, quarantine: str, max_delete_fraction: float | None,
         max_missing_refs: float | None, sentinels: tuple[str, ...],
         sentinel_file: Any, override_minimums: bool, unsafe_store: bool, memory_limit: str,
         threads: int | None, config: str | None, author: str,
         key: str, foreign_refs_ok: tuple[str, ...], accept_near_misses: bool,
         as_json: bool) -> None:
    """Compute the deletion set and write a signed, content-addressed plan.

    Candidates are inventory objects that no snapshot reference names and whose
    last_modified + listing precision is at or before the cutoff, derived as
    snapshot taken_at - buffer. Invariants I1-I5, I15 and I16 are checked; a
    refusal exits 3, names the invariant and writes nothing.
    """
    from cleanup.core.policy import Policy, load_policy_file
    from cleanup.errors import UsageError
    from cleanup.planner import PlanOptions, make_plan

    _check_output(out.rstrip("/") or out)
    values: dict[str, Any] = {}
    overrides = []
    defaults = Policy()
    if config is None and os.path.isfile("cleanup.toml"):
        config = "cleanup.toml"
    if config is not None:
        try:
            defaults, _file_values = load_policy_file(config)
        except UnicodeDecodeError as exc:
            raise UsageError(f"config {config} is not UTF-8 text ({exc.reason} at byte "
                             f"{exc.start})", hint="TOML files are UTF-8") from None
    for name, value in (("max_delete_fraction", max_delete_fraction),
                        ("max_missing_refs", max_missing_refs)):
        if value is not None and value != getattr(defaults, name):
            values[name] = value
            overrides.append(f"{name} = {value} (default {getattr(defaults, name)}; "
                             f"--{name.replace('_', '-')})")
    sents = list(sentinels)
    if sentinel_file is not None:
        try:
            sents += [ln.strip() for ln in sentinel_file
                      if ln.strip() and not ln.startswith("#")]
        except UnicodeDecodeError as exc:
            raise UsageError(f"--sentinel-file {sentinel_file.name} is not UTF-8 text "
                             f"({exc.reason} at byte {exc.start})",
                             hint="write one key per line, in UTF-8") from None
    opts = PlanOptions(
        store=store, inventory=inventory_path, snapshot=snapshot_path, out=out, author=author,
        key=key, buffer=buffer, cutoff=cutoff, region=region, endpoint_url=endpoint_url,
        tenant_pattern=tenant_pattern,
        internal=tuple(t.strip() for t in internal.split(",") if t.strip()),
        stages=stages, hold=hold, quarantine=quarantine,
        policy=defaults.with_values(values), policy_overrides=tuple(overrides),
        override_minimums=override_minimums, sentinels=tuple(sents), memory_limit=memory_limit,
        threads=threads, unsafe_store_without_conditional_writes=unsafe_store,
        foreign_refs_ok=foreign_refs_ok, accept_near_misses=accept_near_misses,
    )
    res = make_plan(opts)
    m = res.plan["manifest"]
    if as_json:
        emit_json({"plan_dir": res.path, "plan_id": res.plan_id, "objects": m["objects"],
                   "bytes": m["bytes"], "cutoff": res.plan["cutoff"]["time"],
                   "stages": res.plan["stages"]})
    else:
        from cleanup.show import human_bytes

        say(f"plan {res.plan_id}")
        say(f"  {m['objects']} candidates, {human_bytes(m['bytes'])}, cutoff "
            f"{res.plan['cutoff']['time']} -> {res.path}")
        say(f"  next: `cleanup show {out}`, then a second engineer approves it")


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--top", default=10, show_default=True, help="Rows in the largest-* tables.")
def show(plan_dir: str, as_json: bool, top: int) -> None:
    """Summarize a plan: inputs, cutoff, invariant results, stages, tenants, prefixes."""
    from cleanup.show import render, summarize

    summary = summarize(plan_dir, top=top)
    if as_json:
        emit_json(summary)
    else:
        render(summary)


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--html", "html_out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the report (one self-contained HTML file).")
@click.option("--allowed-signers", "allowed", type=click.Path(dir_okay=False),
              help="Also verify the signatures (I6, I7) and show their states.")
def review(plan_dir: str, html_out: str, allowed: str | None) -> None:
    """Write a self-contained HTML report for reviewers: plan id and verification,
    invariants with their numbers, a timeline (oldest candidate, cutoff, buffer,
    taken_at, listed_at), a histogram of candidates against the cutoff, stages,
    tenants, top prefixes, the candidates newest to the cutoff and a sample.
    Policy overrides come first, in red. No network needed to open it."""
    from cleanup.report import write_report

    _check_output(html_out, "--html")
    say(f"wrote {write_report(plan_dir, html_out, allowed)}")


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--signer", required=True, help="Your principal name (as in allowed_signers).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="SSH key to sign with (private key, or .pub with the key in ssh-agent).")
@click.option("--comment", default="", help="A comment, signed with the approval.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL",
              help="S3-compatible endpoint of the plan's store (for its audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def approve(plan_dir: str, signer: str, key: str, comment: str, yes: bool,
            endpoint_url: str | None, as_json: bool) -> None:
    """Approve PLAN_DIR: sign {plan id, signer, signed_at, comment} with SSH.

    Shows the plan summary first and asks for confirmation on a terminal. The
    approval is bound to the exact plan.json (and through it the manifest);
    it expires after policy approval_ttl (7d), counted from the signed time.
    """
    from cleanup.show import render, summarize
    from cleanup.signoff import approve as do_approve
    from cleanup.signoff import audit_plan_event, check_integrity

    _plan, _pid, integrity = check_integrity(plan_dir)
    integrity.raise_if_failed()
    if not yes:
        if not sys.stdin.isatty():
            from cleanup.errors import UsageError

            raise UsageError("not a terminal: cannot ask for confirmation",
                             hint="review with `cleanup show`, then pass --yes")
        render(summarize(plan_dir))
        click.confirm(f"Approve this plan as {signer}?", abort=True)
    plan_id, path = do_approve(plan_dir, signer, key, comment)
    warn = audit_plan_event(_plan, "approval", plan_id=plan_id, principal=signer,
                            details={"comment": comment}, endpoint_url=endpoint_url)
    if warn:
        click.echo(warn, err=True)
    if as_json:
        emit_json({"plan_id": plan_id, "signer": signer, "approval": path})
    else:
        say(f"approved plan {plan_id} as {signer} -> {path}")


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--allowed-signers", "allowed", required=True, type=click.Path(dir_okay=False),
              help="OpenSSH allowed_signers file naming the principals.")
@click.option("--json", "as_json", is_flag=True, help="Print every signature's state as JSON.")
def verify(plan_dir: str, allowed: str, as_json: bool) -> None:
    """Check plan integrity (I6) and two-person sign-off (I7).

    Every signature is verified with `ssh-keygen -Y verify -n cleanup-plan` at
    its signed time, and reported as valid, expired, self-approval, unknown-key,
    signer-mismatch, wrong-namespace, key-expired, plan-changed, ... Exits 3 if
    the plan changed, 4 unless the author and enough other principals signed.
    """
    from cleanup.core.signoff import VALID
    from cleanup.errors import InvariantViolation, SignoffError
    from cleanup.signoff import verify_plan

    rep = verify_plan(plan_dir, allowed)
    if as_json:
        emit_json(rep.to_json())
    else:
        say(f"plan {rep.plan_id}")
        say(f"  {rep.integrity.invariant}: {'ok' if rep.integrity.ok else 'FAILED'} "
            f"({rep.integrity.detail})")
        for sig in ([rep.author] if rep.author else []) + rep.approvals:
            mark = "ok " if sig.state == VALID else "BAD"
            when = sig.to_json()["signed_at"] or "?"
            say(f"  [{mark}] {sig.role:8} {sig.signer:16} {sig.state:16} {when}  "
                f"{'' if sig.state == VALID else sig.detail}")
        say(f"  {rep.two_person.invariant}: {'ok' if rep.two_person.ok else 'NOT MET'} "
            f"({rep.two_person.detail})")
    if not rep.integrity.ok:
        raise InvariantViolation(rep.integrity.invariant, rep.integrity.detail,
                                 hint=rep.integrity.hint)
    if not rep.two_person.ok:
        raise SignoffError(f"{rep.two_person.invariant}: {rep.two_person.detail}",
                           hint=rep.two_person.hint)


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", required=True, type=click.IntRange(0), help="The stage you witness.")
@click.option("--signer", required=True, help="Your principal name (as in allowed_signers).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="SSH key to sign with.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL",
              help="S3-compatible endpoint of the plan's store (for its audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def witness(plan_dir: str, stage: int, signer: str, key: str, endpoint_url: str | None,
            as_json: bool) -> None:
    """Sign that you are present for STAGE's execution (I8, namespace cleanup-witness).

    The executor needs a witness other than itself, made at most policy
    witness_ttl (60m) before the stage starts.
    """
    from cleanup.show import load_plan
    from cleanup.signoff import audit_plan_event
    from cleanup.signoff import witness as do_witness

    plan_id, path = do_witness(plan_dir, stage, signer, key)
    warn = audit_plan_event(load_plan(plan_dir)[0], "witness", plan_id=plan_id,
                            principal=signer, details={"stage": stage},
                            endpoint_url=endpoint_url)
    if warn:
        click.echo(warn, err=True)
    if as_json:
        emit_json({"plan_id": plan_id, "stage": stage, "signer": signer, "witness": path})
    else:
        say(f"witnessed stage {stage} of plan {plan_id} as {signer} -> {path}")


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", required=True, type=click.IntRange(0), help="The stage to execute.")
@click.option("--allowed-signers", "allowed", required=True, type=click.Path(dir_okay=False),
              help="OpenSSH allowed_signers file naming the principals.")
@click.option("--reconcile-with", "reconcile_with", required=True, metavar="SOURCE",
              help="Live metadata, read now (taken after the plan's snapshot): a database "
                   "source as for `cleanup snapshot` with --reconcile-query, or a snapshot "
                   "Parquet made after the plan's.")
@click.option("--reconcile-query", help="SQL for a database --reconcile-with source.")
@click.option("--executor", required=True, help="Your principal name (as in allowed_signers).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="Your SSH key; the executor signs the stage start.")
@click.option("--dry-run", is_flag=True,
              help="Reconcile and re-check every batch and report; remove nothing.")
@click.option("--break-lock", is_flag=True,
              help="Take over an EXPIRED store lock (audited). A live lock is never broken.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint.")
@click.option("--region", help="Local stores: the region the plan was bound to [local].")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 1000),
              help="Keys per batch (S3 DeleteObjects takes at most 1000).")
@click.option("--health-check", "health_checks", multiple=True, metavar="CMD",
              help="Before stage k > 0: a command that must exit 0 (e.g. a query error-rate "
                   "check). Repeatable. Runs after the read probe of referenced keys.")
@click.option("--health-check-timeout", default=300.0, show_default=True, type=float,
              help="Seconds each --health-check may take.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def execute(plan_dir: str, stage: int, allowed: str, reconcile_with: str,
            reconcile_query: str | None, executor: str, key: str, dry_run: bool,
            break_lock: bool, endpoint_url: str | None, region: str | None, batch_size: int,
            health_checks: tuple[str, ...], health_check_timeout: float,
            as_json: bool) -> None:
    """Execute one stage of a verified, witnessed plan.

    Checks I6-I8 (exit 3/4), the stage order, hold and health gate (I10: a read
    probe of referenced keys and every --health-check), the store's region
    (I13) and takes the store lock (I12, exit 6). Each batch is reconciled
    against live metadata (a referenced key halts everything, exit 5),
    re-checked against the store (changed or missing objects are skipped) and
    moved to _cleanup/quarantine/<plan-id>/ (or deleted if the plan says
    quarantine = none). Interrupted? Run the same command again: it resumes.
    """
    from cleanup.executor import ExecuteOptions
    from cleanup.executor import execute as do_execute

    with progress_bar("removing" if not dry_run else "checking") as progress:
        res = do_execute(ExecuteOptions(
            plan_dir=plan_dir, stage=stage, allowed_signers=allowed,
            reconcile_with=reconcile_with, reconcile_query=reconcile_query, executor=executor,
            key=key, dry_run=dry_run, endpoint_url=endpoint_url, region=region,
            break_lock=break_lock, batch_size=batch_size, health_checks=health_checks,
            health_timeout=health_check_timeout, progress=progress))
    if as_json:
        emit_json(res.to_json())
    else:
        from cleanup.show import human_bytes

        if res.already_complete:
            say(f"stage {stage} was already complete: nothing to do")
        verb = "would remove" if dry_run else "removed"
        say(f"stage {stage}: {verb} {res.moved} objects ({human_bytes(res.moved_bytes)}) in "
            f"{res.batches} batches; skipped {res.skipped or 'none'}"
            + (f"; resumed {res.resumed_batches} finished batches" if res.resumed_batches
               else ""))


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(plan_dir: str, as_json: bool) -> None:
    """Per-stage progress of a plan's execution, from its journal."""
    from cleanup.show import human_bytes, load_plan
    from cleanup.status import plan_status

    plan, plan_id = load_plan(plan_dir)
    rows = plan_status(plan_dir, plan)
    if as_json:
        emit_json({"plan_id": plan_id, "stages": rows})
        return
    say(f"plan {plan_id}")
    for r in rows:
        skipped = ", ".join(f"{k} {v}" for k, v in r["skipped"].items()) or "none"
        say(f"  stage {r['stage']}: {r['state']:11} removed {r['moved']}/{r['planned_objects']}"
            f" ({human_bytes(r['moved_bytes'])} of {human_bytes(r['planned_bytes'])}), "
            f"skipped {skipped}" + (f", {r['restored']} restored since" if r["restored"] else ""))
        for label, field in (("started", "started_at"), ("finished", "finished_at"),
                             ("hold ends", "hold_ends_at")):
            if r.get(field):
                say(f"      {label}: {r[field]}")
        if r.get("gate"):
            g = r["gate"]
            say(f"      health gate: {'passed' if g['passed'] else 'FAILED'} at {g['time']}")
        say(f"      next: {r['next']}")


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", type=click.IntRange(0), help="Only this stage.")
@click.option("--key", "key", help="Only this key.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint.")
@click.option("--region", help="Local stores: the region the plan was bound to [local].")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def restore(plan_dir: str, stage: int | None, key: str | None, endpoint_url: str | None,
            region: str | None, as_json: bool) -> None:
    """Bring quarantined objects back to their keys. An object written at the key since
    is never overwritten (counted as 'exists')."""
    from cleanup.executor import restore as do_restore

    counts = do_restore(plan_dir, stage=stage, key=key, endpoint_url=endpoint_url,
                        region=region)
    if as_json:
        emit_json(counts)
    else:
        say(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to restore")


@cli.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", required=True, type=click.IntRange(0), help="The stage to purge.")
@click.option("--allowed-signers", "allowed", required=True, type=click.Path(dir_okay=False),
              help="OpenSSH allowed_signers file naming the principals.")
@click.option("--executor", required=True, help="Your principal name.")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint.")
@click.option("--region", help="Local stores: the region the plan was bound to [local].")
def purge(plan_dir: str, stage: int, allowed: str, executor: str, endpoint_url: str | None,
          region: str | None) -> None:
    """Permanently remove a completed stage's quarantine after its retention (I11).
    Needs the same sign-off as execution: verified plan and a fresh witness."""
    from cleanup.executor import purge as do_purge

    n = do_purge(plan_dir, stage=stage, allowed_signers=allowed, executor=executor,
                 endpoint_url=endpoint_url, region=region)
    say(f"purged {n} quarantined objects of stage {stage}")


@cli.group()
def audit() -> None:
    """The store's hash-chained audit log (I14) under _cleanup/audit/."""


@audit.command("verify")
@click.argument("store")
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint.")
@click.option("--region", help="S3 region.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def audit_verify(store: str, endpoint_url: str | None, region: str | None,
                 as_json: bool) -> None:
    """Check that no audit entry of STORE was edited, removed or reordered (exit 3 if so).

    Prints the head hash: keep it, and compare later to detect truncation."""
    from cleanup import audit as audit_log
    from cleanup.core.names import I14
    from cleanup.errors import InvariantViolation
    from cleanup.stores import open_store

    rep = audit_log.verify(open_store(store, endpoint_url=endpoint_url, region=region))
    if as_json:
        emit_json(rep.to_json())
    else:
        say(f"{rep.entries} entries, head {rep.head}: {'intact' if rep.ok else 'BROKEN'}")
        for p in rep.problems:
            say(f"  {p}")
    if not rep.ok:
        raise InvariantViolation(I14, "; ".join(rep.problems[:3]))


@cli.command()
@click.argument("directory", required=False, default="cleanup-demo",
                type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the artefacts' paths as JSON.")
def demo(directory: str, as_json: bool) -> None:
    """Build a local demo store (tenants, a DuckDB metadata database, SSH keys for
    two principals and an allowed_signers file) in DIRECTORY [default ./cleanup-demo]
    and run the guarded flow on it: inventory, snapshot, plan, review report,
    approve, verify, witness, execute stage 0 (into quarantine), show, status.
    No service is needed."""
    from pathlib import Path

    from cleanup.demo import run
    from cleanup.show import render, summarize

    out = run(Path(directory).absolute(), (lambda s: None) if as_json else say)
    if as_json:
        emit_json(out)
        return
    say(f"10. cleanup show {out['plan']}")
    render(summarize(out["plan"]))
    say(f"11. cleanup status {out['plan']}")
    from cleanup.journal import stage_state

    for s in summarize(out["plan"])["plan"]["stages"]:
        st = stage_state(out["plan"], int(s["stage"]))
        say(f"   stage {st.stage}: {st.state}, removed {st.moved}/{s['objects']}")
    say(f"Undo with: cleanup restore {out['plan']} --stage 0")
    say(f"Review report: {out['report']}")


def _register_runbook() -> None:
    from cleanup.cli.runbook_cmd import runbook_group

    cli.add_command(runbook_group)


_register_runbook()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to the documented exit codes."""
    from cleanup.errors import CleanupError

    try:
        rv = cli.main(args=argv, prog_name="cleanup", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cleanup: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other error; the hint points at the command's help.
        path = exc.ctx.command_path if exc.ctx is not None else "cleanup"
        click.echo(f"cleanup: error: {exc.format_message()}\n  hint: see '{path} --help'",
                   err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except CleanupError as exc:
        click.echo(error_line(exc), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("cleanup: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("CLEANUP_DEBUG"):
            raise
        click.echo(error_line(exc), err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
