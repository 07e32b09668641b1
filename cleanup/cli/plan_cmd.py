"""``cleanup plan``, ``cleanup show`` and ``cleanup review``: writing a signed plan and
presenting it to reviewers.

The library is imported inside each command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import IO, Any

import click

from cleanup.cli.options import (
    DURATION,
    MEMORY,
    TIME,
    check_output,
    json_option,
    store_options,
)
from cleanup.cli.output import TEXT, Output
from cleanup.cli.render import human_bytes, plan_summary
from cleanup.errors import UsageError


@click.command()
@click.option("--store", required=True, help="The store: a directory or s3://bucket/prefix/.")
@click.option("--inventory", "inventory_path", required=True, type=click.Path(),
              help="Inventory Parquet from `cleanup inventory` of the same store (a file, "
                   "or a directory or quoted glob of its shards; local or a mounted file "
                   "system, not a URL).")
@click.option("--snapshot", "snapshot_path", type=click.Path(),
              help="Snapshot Parquet from `cleanup snapshot` (a file, directory or glob). "
                   "Required, except for a retirement (--retire-to).")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Plan directory to create (must not exist or be empty).")
@click.option("--buffer", type=DURATION, help="cutoff = snapshot taken_at - buffer "
                                              "[default: policy min_buffer, 24h].")
@click.option("--cutoff", type=TIME, help="An explicit cutoff; accepted only at or before "
                                          "taken_at - buffer (I1).")
@store_options(region="The store's region (S3: must agree with GetBucketLocation; "
                      "local: default 'local').")
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
              help="I5 limit on candidates / scope [default: policy, 0.10]; with table "
                   "sources, of the scope outside the table roots.")
@click.option("--max-table-delete-fraction", type=click.FloatRange(0, 1),
              help="I5 limit per table root of the snapshot's table sources: candidates / "
                   "the table's data files and bytes [default: policy, 0.95].")
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
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb",
              show_default=True, help="Where the anti-join runs: embedded DuckDB, or Apache "
                                      "Spark (needs `pip install 'cleanup[spark]'` and Java; "
                                      "executors need the driver's DuckDB release, which "
                                      "extracts tenants). Same manifest and plan id either "
                                      "way.")
@click.option("--spark-master", metavar="URL",
              help="Spark master (local[2], spark://host:7077, yarn, k8s://...) [default: "
                   "spark-submit's, else local[*]].")
@click.option("--spark-conf", "spark_conf", multiple=True, metavar="KEY=VALUE",
              help="A Spark setting, e.g. spark.executor.memory=8g. Repeatable.")
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
@click.option("--reconcile-with", "reconcile_with", metavar="SOURCE",
              help="The live metadata execution reconciles each batch against (I9): a "
                   "database source as for `cleanup snapshot` (with --reconcile-query), or a "
                   "snapshot Parquet read from one. Signed with the plan (I19); needed to "
                   "execute it.")
@click.option("--reconcile-query", help="SQL for a database --reconcile-with source.")
@click.option("--trust-root", "trust_root", metavar="sha256:HEX",
              help="Pinned digest of the store's trust root version 1 (I17) [default: "
                   "CLEANUP_TRUST_ROOT, then trust_root in the config]. Recorded in the plan; "
                   "its floors bound the policy. Without one the plan cannot be executed.")
@click.option("--retire-to", "retire_to", metavar="TARGET_STORE",
              help="Retire the store after a migration: candidates are objects whose copy in "
                   "TARGET_STORE is verified (mapped key, size, checksum); the others are "
                   "listed as blocking, never candidates. --snapshot is optional; the cutoff "
                   "is then the store's clock minus --buffer. Needs --allowed-regions for "
                   "both stores (I13).")
@click.option("--require-copy-in", "require_copy_in", metavar="BACKUP_STORE",
              help="Every candidate needs a verified copy in BACKUP_STORE: candidates without "
                   "one are excluded and reported (or refuse the plan with --strict, I11).")
@click.option("--map", "maps", multiple=True, metavar="SRC-PREFIX/=DST-PREFIX/",
              help="Where a key's copy is: the longest matching source prefix replaced. "
                   "Repeatable; with rules, a key no rule covers has no copy.")
@click.option("--verify-content", is_flag=True,
              help="Read and sha256 both objects of every pair (streamed, parallel) instead "
                   "of trusting stored checksums alone; needed where the two stores state "
                   "no common checksum.")
@click.option("--checksum", "checksum", type=click.Choice(["strongest", "listed"]),
              default="strongest", show_default=True,
              help="How copies are compared. strongest: the strongest checksum both objects "
                   "state (an S3 SHA256 or SHA1 takes a HEAD of each object). listed: the "
                   "strongest checksum both listings state -- a single-part MD5 ETag, as "
                   "`rclone check` compares -- with a HEAD only where the listings do not "
                   "decide (multipart). Recorded in the signed plan and re-applied per batch.")
@click.option("--strict", is_flag=True,
              help="With --require-copy-in: refuse the plan if any candidate lacks a copy.")
@click.option("--allowed-regions", "allowed_regions", multiple=True,
              metavar="STORE=REGION[,REGION]",
              help="The regions STORE's data may live in (I13), also [residency] in "
                   "cleanup.toml (\"STORE\" = [\"REGION\", ...]). The copies' store must be "
                   "in its own and in the source's regions. Repeatable; recorded.")
@click.option("--target-region", "target_region", metavar="REGION",
              help="The region of a local or Azure copies' store (S3: checked against the "
                   "bucket's own).")
@click.option("--verify-workers", "verify_workers", type=click.IntRange(1, 256), default=16,
              show_default=True, help="Parallel checksum reads and content hashes.")
@json_option("Print plan id and counts as JSON.")
def plan(store: str, inventory_path: str, snapshot_path: str | None, out: str,
         buffer: timedelta | None, cutoff: datetime | None, region: str | None,
         endpoint_url: str | None, tenant_pattern: str, internal: str, stages: str,
         hold: timedelta | None, quarantine: str, max_delete_fraction: float | None,
         max_table_delete_fraction: float | None, max_missing_refs: float | None,
         sentinels: tuple[str, ...],
         sentinel_file: IO[str] | None, override_minimums: bool, unsafe_store: bool,
         memory_limit: str, threads: int | None, engine: str, spark_master: str | None,
         spark_conf: tuple[str, ...], config: str | None, author: str,
         key: str, foreign_refs_ok: tuple[str, ...], accept_near_misses: bool,
         reconcile_with: str | None, reconcile_query: str | None, trust_root: str | None,
         retire_to: str | None, require_copy_in: str | None, maps: tuple[str, ...],
         verify_content: bool, checksum: str, strict: bool,
         allowed_regions: tuple[str, ...], target_region: str | None, verify_workers: int,
         output: Output) -> None:
    """Compute the deletion set and write a signed, content-addressed plan.

    Candidates are inventory objects that no snapshot reference names and whose
    last_modified + listing precision is at or before the cutoff, derived as
    snapshot taken_at - buffer. Invariants I1-I5, I15 and I16 are checked; a
    refusal exits 3, names the invariant and writes nothing.
    """
    from cleanup.core.policy import Policy, load_policy_file
    from cleanup.core.timeutil import format_time
    from cleanup.planner import PlanOptions, make_plan

    check_output(out.rstrip("/") or out)
    copies = _copy_options(snapshot_path, retire_to, require_copy_in, maps, verify_content,
                           strict, allowed_regions, target_region, verify_workers, checksum)
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
        overrides += [f"{d} from {config}" for d in defaults.differences()]
    for name, value in (("max_delete_fraction", max_delete_fraction),
                        ("max_table_delete_fraction", max_table_delete_fraction),
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
        store=store, inventory=inventory_path, snapshot=snapshot_path or "", out=out,
        author=author,
        key=key, buffer=buffer, cutoff=cutoff, region=region, endpoint_url=endpoint_url,
        tenant_pattern=tenant_pattern,
        internal=tuple(t.strip() for t in internal.split(",") if t.strip()),
        stages=stages, hold=hold, quarantine=quarantine,
        policy=defaults.with_values(values), policy_overrides=tuple(overrides),
        override_minimums=override_minimums, sentinels=tuple(sents), memory_limit=memory_limit,
        threads=threads, engine=engine, spark_master=spark_master, spark_conf=spark_conf,
        unsafe_store_without_conditional_writes=unsafe_store,
        foreign_refs_ok=foreign_refs_ok, accept_near_misses=accept_near_misses,
        reconcile_with=reconcile_with, reconcile_query=reconcile_query,
        trust_root=trust_root, config=config, copies=copies,
    )
    res = make_plan(opts)
    m = res.plan.manifest
    cutoff_s = format_time(res.plan.cutoff.time)
    cp = res.plan.copies
    copy_lines = [] if cp is None else [
        f"  {cp.verified} verified copies in {cp.target} ({cp.target_region}); "
        f"{cp.blocking} blocking"
        + "".join(f", {r}: {n}" for r, n in sorted(cp.blocking_reasons.items()))]
    output.result(
        {"plan_dir": res.path, "plan_id": res.plan_id, "objects": m.objects,
         "bytes": m.bytes, "cutoff": cutoff_s,
         "stages": [st.to_json() for st in res.plan.stages],
         **({"copies": cp.to_json()} if cp is not None else {})},
        lambda: [f"plan {res.plan_id}",
                 f"  {m.objects} candidates, {human_bytes(m.bytes)}, cutoff "
                 f"{cutoff_s} -> {res.path}", *copy_lines,
                 f"  next: `cleanup show {out}`, then a second engineer approves it"])


def _copy_options(snapshot: str | None, retire_to: str | None, require_copy_in: str | None,
                  maps: tuple[str, ...], verify_content: bool, strict: bool,
                  allowed_regions: tuple[str, ...], target_region: str | None,
                  workers: int, checksum: str) -> Any:
    """The CopyOptions of --retire-to / --require-copy-in, or None; refuses options that
    need one of them."""
    from cleanup.retire import CopyOptions

    if retire_to and require_copy_in:
        raise UsageError("--retire-to and --require-copy-in exclude each other")
    if not snapshot and not retire_to:
        raise UsageError("--snapshot is required (only a retirement, --retire-to, may "
                         "plan without one)")
    target = retire_to or require_copy_in
    if target is None:
        given = [n for n, v in (("--map", maps), ("--verify-content", verify_content),
                                ("--strict", strict), ("--target-region", target_region),
                                ("--allowed-regions", allowed_regions),
                                ("--checksum listed", checksum == "listed"))
                 if v]
        if given:
            raise UsageError(f"{given[0]} needs --retire-to or --require-copy-in")
        return None
    if checksum == "listed" and verify_content:
        raise UsageError("--checksum listed and --verify-content exclude each other "
                         "(--verify-content reads every byte)")
    if strict and retire_to:
        raise UsageError("--strict is for --require-copy-in (a retirement never removes an "
                         "object without a verified copy)")
    return CopyOptions("retire" if retire_to else "backup", target, maps=maps,
                       verify_content=verify_content, strict=strict,
                       allowed_regions=allowed_regions, target_region=target_region,
                       workers=workers, checksum=checksum)


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@json_option("Print the summary as JSON.")
@click.option("--top", default=10, show_default=True, help="Rows in the largest-* tables.")
@click.option("--markdown", is_flag=True,
              help="Print the summary as Markdown (overrides and risks first) for a "
                   "pull-request comment or a ticket.")
def show(plan_dir: str, output: Output, top: int, markdown: bool) -> None:
    """Summarize a plan: inputs, cutoff, invariant results, stages, tenants, prefixes."""
    from cleanup.show import summarize

    summary = summarize(plan_dir, top=top)
    if markdown:
        from cleanup.show import markdown as as_markdown

        TEXT.text(as_markdown(summary))
        return
    output.result(summary, lambda: plan_summary(summary))


@click.command()
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

    check_output(html_out, "--html")
    TEXT.text(f"wrote {write_report(plan_dir, html_out, allowed)}")
