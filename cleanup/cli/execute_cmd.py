"""``cleanup execute``, ``cleanup status``, ``cleanup restore`` and ``cleanup purge``:
running a signed plan's stages, and undoing or finishing them.

The library is imported inside each command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

import click

from cleanup.cli.options import (
    PLAN_REGION_HELP,
    anchor_option,
    json_option,
    no_allowed_signers,
    store_options,
    trust_options,
)
from cleanup.cli.output import TEXT, Output, progress_bar
from cleanup.cli.render import human_bytes, plan_status


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", required=True, type=click.IntRange(0), help="The stage to execute.")
@no_allowed_signers
@trust_options
@click.option("--reconcile-with", "reconcile_with", metavar="SOURCE",
              help="Optional check: the plan's signed reconciliation source (set by `cleanup "
                   "plan --reconcile-with`); any other is refused.")
@click.option("--reconcile-query", help="Optional check: the plan's signed query.")
@click.option("--executor", required=True,
              help="The runner's principal name (runner role in the trust root).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="The runner's SSH key; it proves the runner's identity.")
@click.option("--wait", "wait", default="0s", metavar="DURATION",
              help="Wait this long for a witness of the challenge this run publishes "
                   "(e.g. 10m) [default: 0s: publish it and exit 4].")
@anchor_option
@click.option("--dry-run", is_flag=True,
              help="Reconcile and re-check every batch and report; remove nothing.")
@click.option("--break-lock", is_flag=True,
              help="Take over an EXPIRED store lock (audited). A live lock is never broken.")
@store_options(region=PLAN_REGION_HELP)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 1000),
              help="Keys per batch (S3 DeleteObjects takes at most 1000).")
@click.option("--health-check", "health_checks", multiple=True, metavar="CMD",
              help="Before stage k > 0: a command that must exit 0 (e.g. a query error-rate "
                   "check). Repeatable. Runs after the read probe of referenced keys, and "
                   "again during the stage at every watchdog check.")
@click.option("--health-check-timeout", default=300.0, show_default=True, type=float,
              help="Seconds each --health-check may take.")
@click.option("--watch-every-batches", default=10, show_default=True, type=click.IntRange(1),
              help="Watchdog: check after this many batches (or --watch-every-seconds, "
                   "whichever comes first), and once after the last batch.")
@click.option("--watch-every-seconds", default=30.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Watchdog: check when this many seconds have passed since the last "
                   "check (looked at after each batch).")
@click.option("--on-failure", default="restore", show_default=True,
              type=click.Choice(["restore", "halt"]),
              help="When a watchdog check fails the stage is halted before its next batch; "
                   "'restore' also brings its quarantined objects back, 'halt' leaves them "
                   "in quarantine (for `cleanup restore`).")
@click.option("--canary-sample", default=20, show_default=True, type=click.IntRange(0),
              help="Watchdog canary: this many still-referenced objects (near the stage's "
                   "candidates first) are looked up and read at every check; any error, "
                   "missing object or changed size fails it. 0: no canary.")
@json_option()
def execute(plan_dir: str, stage: int, trust_root: str | None, config: str | None,
            reconcile_with: str | None, reconcile_query: str | None, executor: str, key: str,
            wait: str, anchor: str | None, dry_run: bool,
            break_lock: bool, endpoint_url: str | None, region: str | None, batch_size: int,
            health_checks: tuple[str, ...], health_check_timeout: float,
            watch_every_batches: int, watch_every_seconds: float, on_failure: str,
            canary_sample: int, output: Output) -> None:
    """Execute one stage of a verified, witnessed plan, as the runner.

    The plan, its manifest and signatures are read from the store
    (_cleanup/plans/<plan-id>/), only the plan id from PLAN_DIR, and checked
    against the pinned trust root (I17, I6, I7, I18; exit 3/4). Presence (I8):
    the run publishes a challenge for the stage; a second principal signs it
    with `cleanup witness`; without a valid witness the run exits 4 (run it
    again, or --wait). Then the stage order, hold and health gate from the
    store's stage records (I10: a read probe of referenced keys and every
    --health-check), the store's region (I13) and the store lock (I12, exit 6).
    Each batch is reconciled against the plan's live metadata source (a
    referenced key halts everything, exit 5), re-checked against the store
    (changed or missing objects are skipped) and moved to
    _cleanup/quarantine/<plan-id>/ (or deleted if the plan says quarantine = none).
    Interrupted? Run the same command again: it resumes.

    The watchdog checks the running stage every --watch-every-batches batches or
    --watch-every-seconds seconds, whichever first: a canary read of
    still-referenced objects and every --health-check. A failed check halts the
    stage before its next batch (exit 3, I10; the halt is audited, recorded in
    the store and lifted only by a new plan) and, with --on-failure restore (the
    default), restores the objects the stage had quarantined.
    """
    from cleanup.core.timeutil import parse_duration
    from cleanup.executor import ExecuteOptions
    from cleanup.executor import execute as do_execute

    with progress_bar("removing" if not dry_run else "checking") as progress:
        res = do_execute(ExecuteOptions(
            plan_dir=plan_dir, stage=stage, trust_root=trust_root, config=config,
            reconcile_with=reconcile_with, reconcile_query=reconcile_query, executor=executor,
            key=key, wait=parse_duration(wait).total_seconds(), anchor=anchor, dry_run=dry_run,
            endpoint_url=endpoint_url, region=region,
            break_lock=break_lock, batch_size=batch_size, health_checks=health_checks,
            health_timeout=health_check_timeout, watch_every_batches=watch_every_batches,
            watch_every_seconds=watch_every_seconds, on_failure=on_failure,
            canary_sample=canary_sample, progress=progress))
    verb = "would remove" if dry_run else "removed"
    output.result(res.to_json, lambda: [
        *([f"stage {stage} was already complete: nothing to do"] if res.already_complete
          else []),
        f"stage {stage}: {verb} {res.moved} objects ({human_bytes(res.moved_bytes)}) in "
        f"{res.batches} batches; skipped {res.skipped or 'none'}"
        + (f"; resumed {res.resumed_batches} finished batches" if res.resumed_batches
           else "")])


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@trust_options
@store_options(region=None, endpoint="S3-compatible endpoint of the plan's store.")
@json_option("Print the status as JSON.")
def status(plan_dir: str, trust_root: str | None, config: str | None,
           endpoint_url: str | None, output: Output) -> None:
    """Per-stage progress of a plan's execution, from the store's stage records (what
    gates execution); from this machine's journal when the store cannot be read.

    With a pinned trust root (--trust-root, CLEANUP_TRUST_ROOT or trust_root in
    cleanup.toml) only records signed by a runner of the root count, as they do for
    execution; without one the records are shown unverified, and say so."""
    from contextlib import ExitStack

    from cleanup.bundle import PlanBundle
    from cleanup.cli.output import warn
    from cleanup.errors import CleanupError
    from cleanup.status import plan_status as stage_rows
    from cleanup.status import record_trust
    from cleanup.stores import open_store

    with PlanBundle.open(plan_dir) as bundle:
        plan, plan_id = bundle.plan, bundle.plan_id
    try:
        store = open_store(plan.store, endpoint_url=endpoint_url,
                           region=plan.region if plan.store.startswith("s3") else None)
        with ExitStack() as stack:
            trusted = record_trust(store, trust_root, config, stack)
            if trusted is None:
                warn("warning: no trust root pinned: stage records are shown unverified "
                     "(execution counts only records a runner signed)")
            rows = stage_rows(plan_dir, plan, store=store, plan_id=plan_id, trust=trusted)
    except CleanupError as exc:
        warn(f"warning: the store's stage records could not be read ({exc.message}); "
             "showing this machine's journal")
        rows = stage_rows(plan_dir, plan)
    output.result({"plan_id": plan_id, "stages": rows}, lambda: plan_status(plan_id, rows))


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", type=click.IntRange(0), help="Only this stage.")
@click.option("--key", "key", help="Only this key.")
@store_options(region=PLAN_REGION_HELP)
@json_option("Print the counts as JSON.")
def restore(plan_dir: str, stage: int | None, key: str | None, endpoint_url: str | None,
            region: str | None, output: Output) -> None:
    """Bring quarantined objects back to their keys. An object written at the key since
    is never overwritten (counted as 'exists')."""
    from cleanup.executor import restore as do_restore

    counts = do_restore(plan_dir, stage=stage, key=key, endpoint_url=endpoint_url,
                        region=region)
    output.result(counts, ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                  or "nothing to restore")


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", required=True, type=click.IntRange(0), help="The stage to purge.")
@no_allowed_signers
@trust_options
@click.option("--executor", required=True, help="The runner's principal name.")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="The runner's SSH key.")
@click.option("--wait", "wait", default="0s", metavar="DURATION",
              help="Wait this long for a witness of the purge challenge [default: 0s].")
@anchor_option
@store_options(region=PLAN_REGION_HELP)
def purge(plan_dir: str, stage: int, trust_root: str | None, config: str | None,
          executor: str, key: str, wait: str, anchor: str | None, endpoint_url: str | None,
          region: str | None) -> None:
    """Permanently remove a completed stage's quarantine after its retention (I11),
    measured from the store's record of the stage's end by the store's clock. Needs the
    same sign-off as execution and a witness of a purge challenge (`cleanup witness
    PLAN --stage N --action purge`). Only keys the store's stage records show
    quarantined are touched."""
    from cleanup.core.timeutil import parse_duration
    from cleanup.executor import PurgeOptions
    from cleanup.executor import purge as do_purge

    n = do_purge(PurgeOptions(plan_dir=plan_dir, stage=stage, executor=executor, key=key,
                              trust_root=trust_root, config=config,
                              wait=parse_duration(wait).total_seconds(), anchor=anchor,
                              endpoint_url=endpoint_url, region=region))
    TEXT.text(f"purged {n} quarantined objects of stage {stage}")
