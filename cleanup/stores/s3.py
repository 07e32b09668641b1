"""S3 (and S3-compatible) store through boto3.

Listings come from ListObjectsV2, whose LastModified is truncated to whole
seconds: precision 1 s (I2). ETags are stored without their quotes.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, confined
from cleanup.errors import StoreError, UsageError
from cleanup.stores.base import Checksums, ClockProbe, ObjectInfo, etag_md5, quarantine_key
from cleanup.stores.s3_lean import DENIED, MAX_ATTEMPTS, LeanS3

if TYPE_CHECKING:
    import pyarrow as pa
    from mypy_boto3_s3 import S3Client

    from cleanup.stores.s3_fastlist import Page
    from cleanup.stores.s3_lean import Reply


#: concurrent single-object calls (CopyObject) of one store; boto3's connection pool is
#: sized to match, plus room for the listing workers (issue 18)
COPY_WORKERS = 32
#: concurrent DeleteObjects calls (1,000 keys each) of a purge
PURGE_WORKERS = 4


def make_client(endpoint_url: str | None = None, region: str | None = None,
                what: str = "S3") -> S3Client:
    """A boto3 S3 client; endpoint and region fall back to the usual AWS environment.

    An endpoint that cannot be reached and missing or broken credentials or region
    are usage errors (exit 2) naming ``what`` (e.g. ``store s3://bucket/``) and the
    endpoint, from client creation and from every call the client makes.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    cfg = Config(
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "adaptive"},
        s3={"addressing_style": "path"} if endpoint_url else {},
        connect_timeout=10,
        max_pool_connections=COPY_WORKERS + 12,
        read_timeout=60,
    )
    try:
        client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=cfg)
    except (BotoCoreError, ValueError) as exc:  # "Invalid endpoint: ...", a bad region
        raise UsageError(f"cannot use {what}: {exc}",
                         hint="check --endpoint-url, --region and the AWS environment") from None
    where = endpoint_url or client.meta.endpoint_url

    def usage_error(exception: BaseException | None = None, **_kwargs: Any) -> None:
        err = unreachable_error(exception, what, where) if exception is not None else None
        if err is not None:
            raise err from None

    client.meta.events.register("after-call-error.s3", usage_error)
    return client


def unreachable_error(exc: BaseException, what: str, endpoint: str | None) -> UsageError | None:
    """The usage error for an unreachable or misconfigured S3 endpoint, else ``None``."""
    from botocore import exceptions as bx

    at = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, bx.ConnectionError):  # refused, timeout, proxy, TLS
        return UsageError(f"cannot reach {what}{at}: {exc}",
                          hint="check --endpoint-url (or AWS_ENDPOINT_URL) and the network")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError
                  | bx.CredentialRetrievalError | bx.ProfileNotFound | bx.TokenRetrievalError
                  | bx.SSOError | bx.UnknownCredentialError):
        return UsageError(f"cannot use {what}{at}: {exc}",
                          hint="set credentials: AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, bx.NoRegionError | bx.InvalidRegionError | bx.UnknownEndpointError
                  | bx.InvalidEndpointConfigurationError | bx.InvalidConfigError):
        return UsageError(f"cannot use {what}{at}: {exc}",
                          hint="check --region and --endpoint-url")
    return None


def strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else etag


def s3_error_message(exc: Exception) -> str:
    """A one-line description of a botocore error."""
    resp: Any = getattr(exc, "response", None)
    if isinstance(resp, dict) and "Error" in resp:
        err = resp["Error"]
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


class S3Store:
    def __init__(self, ref: StoreRef, client: S3Client) -> None:
        self.ref = ref
        self.client = client
        self._lean: LeanS3 | None = None
        self._lean_lock = threading.Lock()

    @property
    def lean(self) -> LeanS3:
        """The per-object request path (:mod:`cleanup.stores.s3_lean`), on this client's
        endpoint, region and credentials; made on first use."""
        if self._lean is None:
            with self._lean_lock:
                if self._lean is None:
                    self._lean = LeanS3(self.client, self.ref.bucket, what=self.ref.url)
        return self._lean

    @property
    def precision(self) -> timedelta:
        return timedelta(seconds=1)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404"):
                raise UsageError(
                    f"{self.ref.url}: bucket {self.ref.bucket!r} does not exist") from None
            if code in DENIED:
                raise UsageError(
                    f"{self.ref.url}: {what} was denied ({s3_error_message(exc)})",
                    hint="check the credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID) and policy",
                ) from None
            raise StoreError(f"{self.ref.url}: {what} failed ({s3_error_message(exc)})") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.ref.url}: {what} failed ({exc})",
                             hint="check --endpoint-url and the network") from None

    def iter_objects(self) -> Iterator[ObjectInfo]:
        reserved = self.ref.prefix + RESERVED_PREFIX
        plen = len(self.ref.prefix)
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.ref.bucket, "Prefix": self.ref.prefix,
                                      "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("ListObjectsV2", self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                full = obj["Key"]
                if full.startswith(reserved) or len(full) == plen:
                    continue
                yield ObjectInfo(
                    key=full[plen:],
                    size=int(obj["Size"]),
                    last_modified=obj["LastModified"].astimezone(UTC),
                    etag=strip_etag(obj.get("ETag")),
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise StoreError(f"{self.ref.url}: truncated listing without a continuation token")

    def listing_batches(self) -> Iterator[pa.RecordBatch]:
        """The listing of :meth:`iter_objects` (same keys, exactly once) as inventory
        record batches, parsed from the raw ListObjectsV2 XML and split across folders
        (:mod:`cleanup.stores.s3_fastlist`): the fast path of ``cleanup inventory``."""
        from cleanup.stores.s3_fastlist import iter_batches

        return iter_batches(self)

    def probe_clock(self) -> ClockProbe:
        """Overwrite the one probe object ``_cleanup/clock/probe`` and read its
        Last-Modified back. Nothing is deleted: principals may write but never delete (the
        bucket policies of ``cleanup trust iam-policy``); a concurrent probe's write is a
        reading of the same clock at the same moment."""
        key = f"{self.ref.prefix}{RESERVED_PREFIX}clock/probe"
        before = datetime.now(UTC)
        self._call("PutObject (clock probe)", self.client.put_object,
                   Bucket=self.ref.bucket, Key=key, Body=f"clock probe {uuid.uuid4().hex}\n")
        after = datetime.now(UTC)
        head = self._call("HeadObject (clock probe)", self.client.head_object,
                          Bucket=self.ref.bucket, Key=key)
        return ClockProbe(head["LastModified"].astimezone(UTC), self.precision, before, after)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.ref.bucket, Key=self.ref.prefix + key, Body=data,
                                   IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise StoreError(f"{self.ref.url}: PutObject {key} failed "
                             f"({s3_error_message(exc)})") from None
        return True

    def retention_supported(self) -> bool:
        """Object Lock enabled on the bucket: :class:`RetainingStore`."""
        from botocore.exceptions import ClientError

        try:
            cfg = self.client.get_object_lock_configuration(Bucket=self.ref.bucket)
        except ClientError:
            return False
        return cfg.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def put_retained(self, key: str, data: bytes, days: int) -> None:
        """Create ``key`` under COMPLIANCE retention for ``days`` days (If-None-Match)."""
        from botocore.exceptions import ClientError

        until = datetime.now(UTC) + timedelta(days=days)
        try:
            self.client.put_object(Bucket=self.ref.bucket, Key=self.ref.prefix + key, Body=data,
                                   IfNoneMatch="*", ObjectLockMode="COMPLIANCE",
                                   ObjectLockRetainUntilDate=until,
                                   ChecksumAlgorithm="SHA256")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                return
            raise StoreError(f"{self.ref.url}: PutObject {key} (retained) failed "
                             f"({s3_error_message(exc)})") from None

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        """PutObject with ``If-Match`` (or ``If-None-Match: *``): :class:`ReplaceableStore`.
        A server that ignores the header (rclone) makes this a plain put; the lock probe
        (I12) already refuses such stores for execution unless the plan says otherwise."""
        from botocore.exceptions import ClientError

        if etag is None:
            return self.put_if_absent(key, data)
        try:
            self.client.put_object(Bucket=self.ref.bucket, Key=self.ref.prefix + key, Body=data,
                                   IfMatch=f'"{etag}"')
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409",
                        "NoSuchKey", "404"):
                return False
            raise StoreError(f"{self.ref.url}: PutObject {key} failed "
                             f"({s3_error_message(exc)})") from None
        return True

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.ref.bucket, Key=self.ref.prefix + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return None
            raise StoreError(f"{self.ref.url}: GetObject {key} failed "
                             f"({s3_error_message(exc)})") from None
        body: bytes = obj["Body"].read()
        return body

    def list_keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        plen = len(self.ref.prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.ref.bucket, Prefix=self.ref.prefix + prefix):
            out += [o["Key"][plen:] for o in page.get("Contents", [])]
        return sorted(out)

    def region(self) -> str:
        loc = self._call("GetBucketLocation", self.client.get_bucket_location,
                         Bucket=self.ref.bucket)
        return str(loc.get("LocationConstraint") or "us-east-1")

    # --- execution -------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self.ref.prefix + confined(key, kind="s3", reserved_ok=True)  # I19

    def put(self, key: str, data: bytes) -> None:
        self._call("PutObject", self.client.put_object, Bucket=self.ref.bucket,
                   Key=self._full(key), Body=data)

    def delete_key(self, key: str) -> None:
        self._call("DeleteObject", self.client.delete_object, Bucket=self.ref.bucket,
                   Key=self._full(key))

    def _head_reply(self, key: str, headers: dict[str, str] | None = None) -> Reply | None:
        """HeadObject of ``key`` (lean path); None if it is absent."""
        h = self.lean.head(self._full(key), headers)
        if h.status == 404:
            return None
        if not h.ok:
            raise StoreError(f"{self.ref.url}: HeadObject {key} failed ({h.message})")
        return h

    def _head(self, key: str) -> ObjectInfo | None:
        h = self._head_reply(key)
        if h is None:
            return None
        return ObjectInfo(key=key, size=int(h.header("content-length")),
                          last_modified=h.time(), etag=strip_etag(h.headers.get("etag")),
                          version_id=h.headers.get("x-amz-version-id"))

    def _scan_range(self, ordered: list[str]) -> tuple[list[tuple[str, Page, int]], str | None]:
        """List the key range of the sorted, non-empty ``ordered`` (a page per 1,000 keys,
        read by :mod:`cleanup.stores.s3_fastlist` from the raw XML): each listed key of
        ``ordered`` with its page and row, and None when the range was listed to its end,
        else the last key seen when the range held many more objects than were asked for
        (3 per key plus 2,000)."""
        from cleanup.stores.s3_fastlist import pages

        want = set(ordered)
        rows: list[tuple[str, Page, int]] = []
        lcp = os.path.commonprefix(ordered)
        after = self.ref.prefix + ordered[0][:-1] if len(ordered[0]) > len(lcp) else None
        scanned, budget, last_seen = 0, 3 * len(ordered) + 2000, ""
        plen = len(self.ref.prefix)
        for page in pages(self, self.ref.prefix + lcp, start_after=after):
            for i, full in enumerate(page.keys):
                k = last_seen = full[plen:]
                if k in want:
                    rows.append((k, page, i))
            scanned += len(page.keys)
            if last_seen >= ordered[-1]:
                return rows, None
            if scanned > budget:
                return rows, last_seen
        return rows, None  # the whole range was listed

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        """List the batch's key range (:meth:`_scan_range`) instead of a HEAD per key;
        HEAD the keys past where the scan stopped when the range holds many objects
        outside the batch."""
        from cleanup.stores.s3_fastlist import listing_time

        if not keys:
            return {}
        ordered = sorted(keys)
        rows, stopped = self._scan_range(ordered)
        found = {k: ObjectInfo(key=k, size=int(page.sizes[i]),
                               last_modified=listing_time(page.times[i]), etag=page.etags[i])
                 for k, page, i in rows}
        if stopped is not None:
            for k in ordered:
                if k > stopped:
                    info = self._head(k)
                    if info is not None:
                        found[k] = info
        return found

    def _delete_batch(self, entries: Sequence[tuple[str, str | None]],
                      markers: dict[str, str] | None = None) -> dict[str, str | None]:
        """DeleteObjects (<= 1000 keys), reading per-key Errors inside the 200 response and
        retrying SlowDown/InternalError keys with exponential backoff. ``markers``
        collects the delete-marker version ids a versioned bucket returns."""
        out: dict[str, str | None] = {}
        pending = list(entries)
        for attempt in range(8):
            if not pending:
                break
            objects: list[Any] = []
            for key, etag in pending:
                ident: dict[str, str] = {"Key": self._full(key)}
                if etag:
                    ident["ETag"] = f'"{etag}"'  # conditional delete where the server supports it
                objects.append(ident)
            resp = self._call("DeleteObjects", self.client.delete_objects,
                              Bucket=self.ref.bucket,
                              Delete={"Objects": objects, "Quiet": markers is None})
            if markers is not None:
                for d in resp.get("Deleted", []):
                    if d.get("DeleteMarkerVersionId"):
                        markers[d["Key"][len(self.ref.prefix):]] = d["DeleteMarkerVersionId"]
            retry: list[tuple[str, str | None]] = []
            errors = {e.get("Key", "")[len(self.ref.prefix):]: e for e in resp.get("Errors", [])}
            for key, etag in pending:
                err = errors.get(key)
                if err is None:
                    out[key] = None
                elif err.get("Code") in ("SlowDown", "InternalError", "ServiceUnavailable"):
                    retry.append((key, etag))
                elif err.get("Code") in ("PreconditionFailed",):
                    out[key] = "changed"
                else:
                    out[key] = f"{err.get('Code')}: {err.get('Message', '')}"
            pending = retry
            if pending:
                time.sleep(min(0.05 * 2**attempt, 5.0))
        for key, _etag in pending:
            out[key] = "SlowDown: gave up after retries"
        return out

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Copy mode: CopyObject (only if the source still has the planned ETag), then
        DeleteObjects of the copied keys. A crash between the two leaves both copies;
        the resumed batch copies again (idempotent) and deletes."""
        def copy(o: ObjectInfo) -> str | None:
            r = self.lean.copy(self._full(quarantine_key(plan_id, o.key)), self._full(o.key),
                               {"x-amz-copy-source-if-match": f'"{o.etag}"' if o.etag else "*"})
            if r.ok:
                return None
            if r.code in ("PreconditionFailed", "412"):
                return "changed"
            if r.code in ("NoSuchKey", "404"):
                return "missing"
            return f"copy failed: {r.message}"

        # Copies are independent single-object calls: run them concurrently. Only the
        # keys whose copy succeeded are deleted, in one DeleteObjects call.
        with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
            results = list(pool.map(copy, objs))
        out: dict[str, str | None] = {}
        copied: list[tuple[str, str | None]] = []
        for o, err in zip(objs, results, strict=True):
            if err is None:
                copied.append((o.key, o.etag))
            else:
                out[o.key] = err
        out.update(self._delete_batch(copied))
        return out

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        return self._delete_batch([(o.key, o.etag) for o in objs])

    def restore(self, plan_id: str, key: str) -> str:
        q = quarantine_key(plan_id, key)
        if self._head(q) is None:
            return "not-quarantined"
        if self._head(key) is not None:
            return "exists"
        res = self._restore_copy(q, key)
        if res.startswith("copy failed"):
            raise StoreError(f"{self.ref.url}: restore {key} failed ({res})")
        if res == "restored":
            self.delete_key(q)
        return res

    def restore_many(self, plan_id: str, keys: Sequence[str]) -> dict[str, str]:
        """:meth:`restore` of many keys (:class:`~cleanup.stores.bulk.BulkRestoreStore`):
        per 1,000 keys one listing of the keys and one of their quarantine copies instead
        of two HEADs per key, the copies concurrent (``If-None-Match: *`` where the
        server honours it, as :meth:`restore`), then one DeleteObjects of the restored
        copies (conditional on their etag). Pipelined: the listings of the next 1,000
        keys and the DeleteObjects of the previous 1,000 run while the copies of these
        run (the chunks' keys are disjoint, so no step of one chunk sees another's)."""
        out: dict[str, str] = {}
        failed: list[str] = []
        ordered = sorted(set(keys))
        chunks = [ordered[i:i + 1000] for i in range(0, len(ordered), 1000)]

        def look(chunk: list[str]) -> tuple[list[str], dict[str, str], dict[str, ObjectInfo]]:
            qkeys = {k: quarantine_key(plan_id, k) for k in chunk}
            copies = self.current(list(qkeys.values()))
            live = self.current(chunk)
            todo: list[str] = []
            for k in chunk:
                if qkeys[k] not in copies:
                    out[k] = "not-quarantined"
                elif k in live:
                    out[k] = "exists"
                else:
                    todo.append(k)
            return todo, qkeys, copies

        def removed(done: Future[dict[str, str | None]] | None) -> None:
            for q, err in (done.result() if done is not None else {}).items():
                if err is not None:
                    failed.append(f"{q}: removing the quarantine copy failed ({err})")

        with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool, \
                ThreadPoolExecutor(max_workers=2) as side:
            ahead = side.submit(look, chunks[0]) if chunks else None
            deleting: Future[dict[str, str | None]] | None = None
            i = 0
            while ahead is not None:
                todo, qkeys, copies = ahead.result()
                i += 1
                ahead = side.submit(look, chunks[i]) if i < len(chunks) else None
                results = list(pool.map(self._restore_copy, [qkeys[k] for k in todo], todo))
                restored: list[tuple[str, str | None]] = []
                for k, res in zip(todo, results, strict=True):
                    if res in ("restored", "exists", "not-quarantined"):
                        out[k] = res
                        if res == "restored":
                            restored.append((qkeys[k], copies[qkeys[k]].etag))
                    else:
                        failed.append(f"{k}: {res}")
                removed(deleting)
                deleting = side.submit(self._delete_batch, restored)
            removed(deleting)
        if failed:
            raise StoreError(f"{self.ref.url}: restore failed for {len(failed)} key(s), "
                             f"e.g. {failed[0]}",
                             hint="run the restore again: restored keys report 'exists'")
        return out

    def _restore_copy(self, q: str, key: str) -> str:
        """Copy the quarantine copy ``q`` back to ``key`` unless an object is there
        (``If-None-Match: *``: where the server honours it, the copy cannot overwrite an
        object written since it was looked at)."""
        r = self.lean.copy(self._full(key), self._full(q), {"if-none-match": "*"})
        if r.ok:
            return "restored"
        if r.code in ("PreconditionFailed", "412"):
            return "exists"
        if r.code in ("NoSuchKey", "404"):
            return "not-quarantined"
        return f"copy failed: {r.message}"

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        chunks = [[(quarantine_key(plan_id, k), None) for k in keys[i:i + 1000]]
                  for i in range(0, len(keys), 1000)]
        with ThreadPoolExecutor(max_workers=PURGE_WORKERS) as pool:
            results = list(pool.map(self._delete_batch, chunks))
        return sum(1 for res in results for v in res.values() if v is None)

    # --- versioning mode ---------------------------------------------------------------

    def versioning_status(self) -> str:
        """``Enabled``, ``Suspended`` or ``""`` (never enabled)."""
        v = self._call("GetBucketVersioning", self.client.get_bucket_versioning,
                       Bucket=self.ref.bucket)
        return str(v.get("Status") or "")

    def delete_to_markers(self, objs: Sequence[ObjectInfo]
                          ) -> tuple[dict[str, str | None], dict[str, str]]:
        """Versioning mode: DeleteObjects without version ids puts a delete marker on
        each key; the data stays as a noncurrent version. Returns (outcome, markers)."""
        markers: dict[str, str] = {}
        out = self._delete_batch([(o.key, o.etag) for o in objs], markers)
        for k, err in list(out.items()):
            if err is None and k not in markers:
                out[k] = "no delete marker returned (is versioning Enabled?)"
        return out, markers

    def _versions(self, key: str) -> list[dict[str, Any]]:
        """All versions and delete markers of exactly ``key``, newest first."""
        full = self._full(key)
        resp = self._call("ListObjectVersions", self.client.list_object_versions,
                          Bucket=self.ref.bucket, Prefix=full)
        entries = [{**v, "marker": False} for v in resp.get("Versions", [])] + [
            {**m, "marker": True} for m in resp.get("DeleteMarkers", [])]
        entries = [e for e in entries if e["Key"] == full]
        entries.sort(key=lambda e: (not e.get("IsLatest"), -e["LastModified"].timestamp()))
        return entries

    def marker_for(self, key: str, etag: str | None) -> str | None:
        """Resume in versioning mode: the latest delete marker of ``key`` if the version
        it hides has the planned ETag (our own earlier, unjournaled delete)."""
        versions = self._versions(key)
        if len(versions) >= 2 and versions[0]["marker"] and not versions[1]["marker"]:
            if etag is None or strip_etag(versions[1].get("ETag")) == etag:
                return str(versions[0]["VersionId"])
        return None

    def remove_marker(self, key: str, marker: str) -> str:
        """Restore in versioning mode: remove our delete marker if it is still the latest."""
        versions = self._versions(key)
        latest = versions[0] if versions else None
        if latest is None or not any(v["VersionId"] == marker for v in versions):
            return "not-quarantined"
        if latest["VersionId"] != marker:
            return "exists"  # a newer version was written since: it stays current
        self._call("DeleteObject", self.client.delete_object, Bucket=self.ref.bucket,
                   Key=self._full(key), VersionId=marker)
        return "restored"

    def purge_versions(self, key: str, marker: str) -> int:
        """Purge in versioning mode: the marker and the version it hid, if still latest."""
        versions = self._versions(key)
        if not versions or versions[0]["VersionId"] != marker or len(versions) < 2:
            return 0
        hidden = versions[1]
        for vid in (hidden["VersionId"], marker):
            self._call("DeleteObject", self.client.delete_object, Bucket=self.ref.bucket,
                       Key=self._full(key), VersionId=vid)
        return 1

    # --- copy verification (cleanup.retire): read-only ---------------------------------

    def checksums(self, key: str) -> Checksums | None:
        """HeadObject with ChecksumMode=ENABLED: the size, the additional checksums of the
        whole content (FULL_OBJECT; a COMPOSITE one of a multipart upload is left out) and
        the ETag as an MD5 only where it is one: a single-part upload without SSE-KMS or
        SSE-C (a multipart ETag ``...-N`` is an MD5 of part MD5s, never of the content)."""
        import base64

        reply = self._head_reply(key, {"x-amz-checksum-mode": "ENABLED"})
        if reply is None:
            return None
        h = reply.headers
        etag = strip_etag(h.get("etag"))
        multipart = etag is not None and "-" in etag
        ctype = str(h.get("x-amz-checksum-type") or "")
        sums: dict[str, str] = {}
        for algo in ("SHA256", "SHA1", "CRC64NVME", "CRC32C", "CRC32"):
            value = h.get(f"x-amz-checksum-{algo.lower()}")
            if not value or "-" in str(value):
                continue  # absent, or composite (``...-N``)
            # A multipart upload's checksum is of the whole content only when the store
            # says FULL_OBJECT (CRC64NVME always is); otherwise it may be COMPOSITE.
            if multipart and ctype != "FULL_OBJECT" and algo != "CRC64NVME":
                continue
            if ctype == "COMPOSITE":
                continue
            try:
                sums[algo.lower()] = base64.b64decode(str(value), validate=True).hex()
            except ValueError:
                continue
        md5 = etag_md5(etag)
        if (md5 is not None and h.get("x-amz-server-side-encryption") in (None, "AES256")
                and not h.get("x-amz-server-side-encryption-customer-algorithm")):
            sums["md5"] = md5
        return Checksums(key=key, size=int(reply.header("content-length")), sums=sums, etag=etag,
                         last_modified=reply.time())

    def read_chunks(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        """GetObject, streamed in chunks (bounded memory); None if the key is absent."""
        reply, chunks = self.lean.get_stream(self._full(key), chunk_size)
        if reply.status == 404 and reply.code in ("NoSuchKey", "404"):
            return None
        if chunks is None:
            raise StoreError(f"{self.ref.url}: GetObject {key} failed ({reply.message})")
        return chunks

    def list_checksums(self, keys: Sequence[str]) -> dict[str, Checksums] | None:
        """The keys' sizes, single-part MD5 ETags and the names of their additional
        checksums from listing their key range (values need :meth:`checksums`); None if
        the range holds many more objects than ``keys`` (:meth:`_scan_range`). Read-only."""
        if not keys:
            return {}
        from cleanup.stores.s3_fastlist import listing_time

        rows, stopped = self._scan_range(sorted(keys))
        if stopped is not None:
            return None
        out: dict[str, Checksums] = {}
        for k, page, i in rows:
            etag, md5 = page.etags[i], etag_md5(page.etags[i])
            out[k] = Checksums(key=k, size=int(page.sizes[i]),
                               sums={"md5": md5} if md5 is not None else {}, etag=etag,
                               last_modified=listing_time(page.times[i]), more=page.algos[i])
        return out
