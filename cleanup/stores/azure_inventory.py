"""Read Azure Storage blob inventory reports (``<rule>-manifest.json`` with CSV or Parquet
files) as a listing source.

Format, from Microsoft's "Azure Storage blob inventory"
(https://learn.microsoft.com/azure/storage/blobs/blob-inventory, sections "Inventory
output" and "Inventory files"):

* A run of rule ``R`` writes to
  ``<destination container>/YYYY/MM/DD/HH-MM-SS/R/``: the inventory files (CSV or Apache
  Parquet, several when the object count is large), ``R-manifest.json`` and, last,
  ``R-manifest.checksum`` ("the MD5 checksum of the contents of the manifest.json file";
  its generation marks the completion of the run).
* The manifest holds ``destinationContainer``, ``endpoint``, ``files`` (``blob``: the
  file's path in the destination container; ``size``), ``inventoryStartTime``,
  ``inventoryCompletionTime``, ``ruleDefinition`` (``filters`` with ``blobTypes``,
  ``prefixMatch``, ``excludePrefix``, ``includeBlobVersions``, ``includeSnapshots``,
  ``includeDeleted``; ``format`` ``csv``/``parquet``; ``objectType`` ``blob``/
  ``container``; ``schemaFields``), ``ruleName``, ``status`` (``Pending`` until the run
  completes, then ``Succeeded``, ``PartiallySucceeded`` or ``Failed``), ``summary`` and
  ``version``.
* CSV files: "the first row is always the schema row" (the ``schemaFields`` names:
  ``Name``, ``Creation-Time``, ``Last-Modified``, ``Content-Length``, ``Content-MD5``,
  ``Etag``, ``VersionId``, ``IsCurrentVersion``, ``Snapshot``, ``Deleted``,
  ``hdi_isfolder``, ...). Parquet files present dates as ``timestamp_millis``. ``Name``
  is the blob's path including its container (``prefixMatch`` values are "a container
  name prefix or a container name", e.g. ``container1/foo``).
* "In rare cases, duplicate blob entries might appear in your reports."

Decisions (each errs towards *not* listing an object):

* Only a finished run is read: ``status`` must be ``Succeeded`` and ``objectType``
  ``blob``; a ``-manifest.checksum`` beside the manifest must match it (hex or base64
  MD5); each file's size must be the manifest's ``size``.
* The store's ``container/prefix`` must lie inside one of the rule's ``prefixMatch``
  values (when it has any): otherwise the report may not cover the store.
* Rows whose ``Name`` is outside ``container/prefix``, the prefix itself and keys under
  ``_cleanup/`` are left out; so are folders (``hdi_isfolder`` true), deleted blobs
  (``Deleted`` true), snapshots (a non-empty ``Snapshot``) and non-current versions
  (``IsCurrentVersion`` false): this tool deletes by name, and only the current version
  is what a name means.
* ``Name`` is taken as written (no URL decoding); ``Etag`` without quotes, as the live
  listing records it; ``Last-Modified`` must carry a zone; precision 1 s as for a listing.
* Duplicate rows of one name are dropped when identical and refused when they differ.

``listed_at`` is ``inventoryStartTime`` (when the run began scanning) by Azure's clock
(clock ``azure-inventory``); the executor re-checks size and ETag before deleting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cleanup.core.paths import StoreRef, parse_store
from cleanup.errors import StoreError, UsageError
from cleanup.stores.base import ListingMeta
from cleanup.stores.gcs_inventory import (
    Deduper,
    RowSpec,
    _closing,
    check_columns,
    convert,
    load_json,
    open_local,
    parse_time,
    read_batches,
    read_local_manifest,
    rebatch,
    spooled,
)

if TYPE_CHECKING:
    import pyarrow as pa

AZ_HINT = ("use the manifest and files that the blob inventory rule wrote, unchanged; the "
           "rule needs the Name, Content-Length and Last-Modified fields (Etag recommended)")
AZ_SPEC = RowSpec(provider="azure", key="name", size="contentlength", mtime="lastmodified",
                  etag="etag", version="versionid",
                  skip_if_true=("hdiisfolder", "deleted"), keep_only_true=("iscurrentversion",),
                  skip_if_set=("snapshot",), hint=AZ_HINT)
FORMATS = {"csv": "CSV", "parquet": "Parquet"}


@dataclass(frozen=True)
class AzureReport:
    """One blob inventory run, as its manifest describes it. ``files`` are local paths or
    ``az://`` URLs; ``sizes`` maps each to the manifest's size."""

    manifest: str
    started_at: datetime
    file_format: str
    files: list[str]
    sizes: dict[str, int]
    fields: list[str]
    prefix_match: list[str]
    rule: str


def _az_split(url: str) -> tuple[StoreRef, str]:
    container_part, _, path = url[len("az://"):].partition("/")
    if not container_part or not path:
        raise UsageError(f"{url!r} is not an az://container/path URL",
                         hint="give the manifest as az://container/.../RULE-manifest.json")
    return parse_store(f"az://{container_part}/"), path


def _az_fetch(endpoint_url: str | None, url: str, what: str, *,
              missing_ok: bool = False) -> Callable[[IO[bytes]], None]:
    ref, path = _az_split(url)

    def fetch(fh: IO[bytes]) -> None:
        from azure.core import exceptions as ax

        from cleanup.stores.azure import make_service

        service = make_service(ref, endpoint_url, what=f"{what} {url}")
        try:
            service.get_blob_client(ref.bucket, path).download_blob().readinto(fh)
        except ax.ResourceNotFoundError:
            if missing_ok:
                fh.write(b"\0missing")
                return
            raise UsageError(f"{what} {url} does not exist",
                             hint="check the path (and that the inventory run has finished)",
                             ) from None
        except ax.ClientAuthenticationError as exc:
            raise UsageError(f"reading {what} {url} was denied ({exc.message})",
                             hint="grant read access to the inventory destination container",
                             ) from None
        except ax.ServiceRequestError as exc:
            raise UsageError(f"cannot reach {what} {url}: {exc}",
                             hint="check --endpoint-url and the network") from None
        except ax.AzureError as exc:
            raise StoreError(f"reading {what} {url} failed ({exc})") from None

    return fetch


def _checksum_name(manifest: str) -> str | None:
    if manifest.endswith("-manifest.json"):
        return manifest[: -len("-manifest.json")] + "-manifest.checksum"
    return None


def _md5_matches(checksum: bytes, raw: bytes) -> bool | None:
    """True/False when the checksum file holds an MD5 (hex or base64); None if unreadable."""
    text = checksum.decode("ascii", "replace").strip().strip('"')
    digest = hashlib.md5(raw, usedforsecurity=False).digest()
    if len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower() == digest.hex()
    try:
        b = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return b == digest if len(b) == 16 else None


def load_azure_manifest(manifest: str, *, endpoint_url: str | None = None) -> AzureReport:
    """Read and check a blob inventory ``<rule>-manifest.json`` (local path or ``az://``)."""
    remote = manifest.startswith("az://")
    checksum_at = _checksum_name(manifest)
    checksum: bytes | None = None
    if remote:
        with spooled(_az_fetch(endpoint_url, manifest, "inventory manifest")) as fh:
            raw = fh.read()
        if checksum_at:
            with spooled(_az_fetch(endpoint_url, checksum_at, "manifest checksum",
                                   missing_ok=True)) as fh:
                data = fh.read()
            checksum = None if data == b"\0missing" else data
    else:
        raw = read_local_manifest(manifest)
        if checksum_at and os.path.isfile(checksum_at):
            checksum = Path(checksum_at).read_bytes()
    where = f"inventory manifest {manifest}"
    if checksum is not None and _md5_matches(checksum, raw) is False:
        raise UsageError(f"{where} does not match its {os.path.basename(checksum_at or '')}",
                         hint="the manifest was changed or truncated: copy it again")
    doc = load_json(raw, manifest, AZ_HINT)
    status = doc.get("status")
    if status != "Succeeded":
        raise UsageError(f"{where}: the inventory run's status is {status!r}, not "
                         "'Succeeded'",
                         hint="wait for the run to finish, or use the last run that succeeded")
    rule = doc.get("ruleDefinition")
    if not isinstance(rule, dict):
        raise UsageError(f"{where} has no ruleDefinition", hint=AZ_HINT)
    if rule.get("objectType", "blob") != "blob":
        raise UsageError(f"{where} is a {rule.get('objectType')!r} inventory, not a blob "
                         "inventory", hint="use a rule with objectType blob")
    fmt = FORMATS.get(str(rule.get("format", "")).lower())
    if fmt is None:
        raise UsageError(f"{where}: unknown format {rule.get('format')!r}",
                         hint="blob inventory reports are csv or parquet")
    fields = rule.get("schemaFields")
    if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
        raise UsageError(f"{where}: ruleDefinition has no schemaFields list", hint=AZ_HINT)
    check_columns(fields, AZ_SPEC, f"{where}: the rule")
    filters = rule.get("filters") or {}
    prefixes = filters.get("prefixMatch") or [] if isinstance(filters, dict) else []
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise UsageError(f"{where}: prefixMatch is not a list of strings", hint=AZ_HINT)
    if isinstance(filters, dict) and filters.get("includeBlobVersions") and not any(
            f.lower() == "iscurrentversion" for f in fields):
        raise UsageError(f"{where} lists blob versions without the IsCurrentVersion field",
                         hint="add IsCurrentVersion to the rule's schemaFields")
    try:
        started = parse_time(doc.get("inventoryStartTime"), where)
    except ValueError as exc:
        raise UsageError(f"{where}: inventoryStartTime: {exc}", hint=AZ_HINT) from None
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        raise UsageError(f"{where} has no files list", hint=AZ_HINT)
    dest = doc.get("destinationContainer")
    if remote:
        mref, _ = _az_split(manifest)
        if isinstance(dest, str) and dest and dest != mref.bucket:
            raise UsageError(f"{where}: destinationContainer {dest!r} is not the container "
                             f"the manifest was read from ({mref.bucket!r})", hint=AZ_HINT)
        base = manifest[: len("az://") + manifest[len("az://"):].index("/") + 1]
    mdir = Path(os.path.abspath(manifest)).parent if not remote else Path()
    locs: list[str] = []
    sizes: dict[str, int] = {}
    for i, entry in enumerate(files):
        blob = entry.get("blob") if isinstance(entry, dict) else None
        if not isinstance(blob, str) or not blob:
            raise UsageError(f"{where}: files[{i}] has no blob", hint=AZ_HINT)
        loc = base + blob if remote else _resolve_local(mdir, blob, where)
        if loc in sizes or loc in locs:
            raise UsageError(f"{where} lists file {blob} twice", hint=AZ_HINT)
        locs.append(loc)
        size = entry.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            sizes[loc] = size
    return AzureReport(manifest=manifest, started_at=started, file_format=fmt, files=locs,
                       sizes=sizes, fields=list(fields), prefix_match=list(prefixes),
                       rule=str(doc.get("ruleName", "")))


def _resolve_local(mdir: Path, blob: str, where: str) -> str:
    """``files[].blob`` is relative to the destination container: the first ``d / blob``
    walking up from the manifest's directory (a report copied with its layout)."""
    rel = Path(blob)
    if rel.is_absolute() or ".." in rel.parts:
        raise UsageError(f"{where} lists a file {blob!r} that is not a relative path",
                         hint=AZ_HINT)
    for d in (mdir, *mdir.parents):
        if (d / rel).is_file():
            return str(d / rel)
    raise UsageError(f"inventory file {blob} listed in {where} was not found in "
                     f"{mdir} or any directory above it",
                     hint="copy the destination container's report keeping its layout "
                          "(YYYY/MM/DD/HH-MM-SS/RULE/...) and give the manifest inside it")


def _check_size(fh: IO[bytes], report: AzureReport, loc: str) -> None:
    want = report.sizes.get(loc)
    if want is None:
        return
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    if size != want:
        raise UsageError(f"inventory data file {loc} has {size} bytes, the manifest says "
                         f"{want}", hint="the file is truncated or replaced: copy the report "
                                         "again")


def iter_azure_batches(report: AzureReport, store: StoreRef, *,
                       endpoint_url: str | None = None,
                       batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    if store.cloud != "azure":
        raise UsageError(f"a blob inventory report describes an Azure container, not "
                         f"{store.url}", hint="give the store as az://container/prefix/")
    scope = f"{store.bucket}/{store.prefix}"
    if report.prefix_match and not any(scope.startswith(p) for p in report.prefix_match):
        raise UsageError(f"inventory report {report.manifest} covers only "
                         f"{', '.join(report.prefix_match)}, not all of {store.url}",
                         hint="use a report whose rule's prefixMatch includes the store's "
                              "container/prefix")
    spec = RowSpec(**{**AZ_SPEC.__dict__, "name_prefix": f"{store.bucket}/"})
    dedupe = Deduper()

    def raw() -> Iterator[pa.RecordBatch]:
        for loc in report.files:
            opener = (spooled(_az_fetch(endpoint_url, loc, "inventory data file"))
                      if loc.startswith("az://") else _closing(open_local(loc)))
            with opener as fh:
                _check_size(fh, report, loc)
                for b in read_batches(fh, report.file_format, loc, header=True, columns=None,
                                      batch_rows=batch_rows):
                    check_columns(b.schema.names, spec, f"inventory data file {loc}")
                    out = convert(b, spec, store, store.bucket, loc, dedupe)
                    if out is not None:
                        yield out

    yield from rebatch(raw(), batch_rows)


class AzureInventorySource:
    """A blob inventory run as a :class:`~cleanup.stores.base.ListingSource`. ``listed_at``
    is ``inventoryStartTime`` by Azure's clock; precision 1 s."""

    def __init__(self, report: AzureReport, store: StoreRef, *,
                 endpoint_url: str | None = None, batch_rows: int = 65536) -> None:
        self.report, self.store = report, store
        self.endpoint_url, self.batch_rows = endpoint_url, batch_rows

    def meta(self) -> ListingMeta:
        return ListingMeta(store=self.store.url, listed_at=self.report.started_at,
                           listed_at_clock="azure-inventory", precision=timedelta(seconds=1),
                           source=f"azure-inventory:{self.report.manifest}",
                           time_source="azure-last-modified")

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        return iter_azure_batches(self.report, self.store, endpoint_url=self.endpoint_url,
                                  batch_rows=self.batch_rows)

