"""``cleanup inventory``, ``cleanup snapshot`` and ``cleanup audit verify``: reading a
store and a reference source, and checking a store's audit log.

The library is imported inside each command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from cleanup.cli.options import (
    DURATION,
    TIME,
    check_output,
    json_option,
    store_options,
    trust_options,
)
from cleanup.cli.output import Output, progress_bar
from cleanup.cli.render import human_bytes
from cleanup.core.names import I14
from cleanup.errors import InvariantViolation


@click.command()
@click.argument("store")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Parquet file to write (replaced atomically when complete).")
@click.option("--s3-inventory", "manifest", metavar="MANIFEST",
              help="Read an S3 Inventory report (manifest.json, local path or s3:// URL; "
                   "CSV or Parquet) instead of listing the bucket.")
@click.option("--gcs-inventory", "gcs_manifest", metavar="MANIFEST",
              help="Read a GCS Storage Insights inventory report (its ..._manifest.json, "
                   "local path or gs:// URL; CSV or Parquet shards) instead of listing.")
@click.option("--azure-inventory", "azure_manifest", metavar="MANIFEST",
              help="Read an Azure blob inventory run (its RULE-manifest.json, local path or "
                   "az:// URL; CSV or Parquet files) instead of listing.")
@store_options(region="S3 region (default: from the AWS environment).")
@click.option("--trust-mtime", is_flag=True,
              help="Local stores: use mtime alone instead of max(mtime, ctime). Unsafe where "
                   "files may be copied in with old mtimes; recorded and shown to reviewers.")
@json_option()
def inventory(store: str, out: str, manifest: str | None, gcs_manifest: str | None,
              azure_manifest: str | None, endpoint_url: str | None,
              region: str | None, trust_mtime: bool, output: Output) -> None:
    """List STORE (a directory, s3://, gs:// or az:// store) into a Parquet inventory, or
    read the cloud's own inventory report of it.

    Columns: key (store-relative), size, last_modified (UTC), etag. The listing
    time and timestamp precision are kept in the file's metadata. The reserved
    _cleanup/ prefix is never listed. Memory does not grow with the store, except
    for a GCS or Azure report: a digest per key to catch duplicated rows.
    """
    from cleanup.errors import UsageError
    from cleanup.inventory import (
        list_store,
        read_azure_inventory,
        read_gcs_inventory,
        read_s3_inventory,
    )
    from cleanup.stores import open_store

    if sum(1 for m in (manifest, gcs_manifest, azure_manifest) if m) > 1:
        raise UsageError("give at most one of --s3-inventory, --gcs-inventory and "
                         "--azure-inventory")
    check_output(out)
    with progress_bar("listing") as progress:
        if gcs_manifest:
            res = read_gcs_inventory(gcs_manifest, store, out, endpoint_url=endpoint_url,
                                     progress=progress)
        elif azure_manifest:
            res = read_azure_inventory(azure_manifest, store, out, endpoint_url=endpoint_url,
                                       progress=progress)
        elif manifest:
            res = read_s3_inventory(manifest, store, out, endpoint_url=endpoint_url,
                                    region=region, progress=progress)
        else:
            st = open_store(store, endpoint_url=endpoint_url, region=region,
                            trust_mtime=trust_mtime)
            res = list_store(st, out, progress,
                             time_source="mtime" if trust_mtime else "ctime-or-mtime")
    output.result(res.to_json, lambda: (
        f"{res.objects} objects, {human_bytes(res.bytes)} listed from {res.store} "
        f"at {res.to_json()['listed_at']} -> {res.path}"))


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
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
@click.option("--retention", type=DURATION,
              help="delta:// sources: files removed within this window stay referenced "
                   "(time travel) [default: the table's delta.deletedFileRetentionDuration, "
                   "else 7d; at least 24h and the table's own].")
@json_option()
def snapshot(sources: tuple[str, ...], out: str, query: str | None, column: str | None,
             taken_at: datetime | None, ref_encoding: str, ref_base: str | None,
             retention: timedelta | None, output: Output) -> None:
    """Capture the keys that metadata references, with the time they were true.

    \b
    SOURCE is one of:
      refs.parquet | refs.csv        a key list (--taken-at required)
      meta.duckdb | duckdb:///path   DuckDB file (--query)
      meta.sqlite | sqlite:///path   SQLite file (--query)
      postgresql://user@host/db      PostgreSQL (--query), read in one REPEATABLE READ
                                     transaction whose own now() becomes taken_at
      delta://PATH | delta://s3://b/p  a Delta table: live files, files removed
                                     within --retention, deletion vectors, CDC, the log
      iceberg://CATALOG/NS[.TABLE]   Iceberg tables of a pyiceberg catalog: every file
                                     of every snapshot still in the metadata
    References may be store-relative keys or full URLs/paths (s3://, s3a://,
    file:/, file:///, S3 HTTPS URLs); they are resolved against the store at
    plan time by one resolver (I4). Secrets are never recorded.

    Several SOURCEs (for example every Delta table of a prefix and one database) are
    merged: the union of their references, the earliest taken_at, each one recorded.
    """
    from cleanup.snapshot import take_snapshots

    check_output(out)
    res = take_snapshots(list(sources), out, query=query, column=column, taken_at=taken_at,
                         ref_encoding=ref_encoding, ref_base=ref_base, retention=retention)
    output.result(res.to_json, lambda: (
        f"{res.rows} references from {res.source} taken_at {res.to_json()['taken_at']} "
        f"({res.taken_at_clock}) -> {res.path}"))


@click.group()
def audit() -> None:
    """The store's hash-chained audit log (I14) under _cleanup/audit/."""


@audit.command("verify")
@click.argument("store")
@click.option("--anchor", metavar="STORE",
              help="The anchor store that holds copies of STORE's heads: each must still be "
                   "an entry of the log.")
@click.option("--signatures", is_flag=True,
              help="Also check that every entry naming a principal is signed by them, "
                   "against the pinned trust root (--trust-root / CLEANUP_TRUST_ROOT / "
                   "cleanup.toml).")
@trust_options
@store_options()
@json_option()
def audit_verify(store: str, anchor: str | None, signatures: bool, trust_root: str | None,
                 config: str | None, endpoint_url: str | None, region: str | None,
                 output: Output) -> None:
    """Check that no audit entry of STORE was edited, removed or reordered, and that the
    log is not shorter than its head object, any head a plan's records saw, or the anchor
    (exit 3 naming I14 if so)."""
    from contextlib import ExitStack

    from cleanup import audit as audit_log
    from cleanup.published import all_referenced_heads
    from cleanup.stores import open_store

    s = open_store(store, endpoint_url=endpoint_url, region=region)
    anchor_store = open_store(anchor, endpoint_url=endpoint_url) if anchor else None
    with ExitStack() as stack:
        allowed = None
        if signatures:
            from cleanup import trust

            allowed = stack.enter_context(trust.current(s, trust_root, config)
                                          .allowed_signers())
        rep = audit_log.verify(s, all_referenced_heads(s), anchor=anchor_store,
                               allowed_signers=allowed)
        output.result(rep.to_json, lambda: [
            f"{rep.entries} entries, head {rep.head}: {'intact' if rep.ok else 'BROKEN'}",
            *(f"  {p}" for p in rep.problems)])
    if not rep.ok:
        raise InvariantViolation(I14, "; ".join(rep.problems[:3]))
