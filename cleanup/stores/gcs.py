"""Google Cloud Storage store (``gs://bucket/prefix/``) through google-cloud-storage.

Install with ``pip install 'cleanup[gcs]'``; the package is imported only when a
``gs://`` store is opened.

* Listings carry ``updated`` with millisecond precision (1 ms, I2), the object's
  MD5 as a hex etag (like an S3 single-part ETag; composite objects, which have no
  MD5, keep GCS's own etag) and the generation as ``version_id``.
* Every mutation of a user object is pinned to the generation it checked:
  ``ifGenerationMatch`` on deletes, ``ifSourceGenerationMatch`` on the quarantine
  rewrite, ``ifGenerationMatch=0`` for the lock (I12) and for restores (never
  overwrite). The store first reads the object's metadata (size and MD5 against
  the plan), then acts only on that generation, so an object rewritten in between
  is refused by the server. fake-gcs-server honours ``ifGenerationMatch=0`` on
  uploads but ignores the other preconditions; there only the metadata check
  guards (the window between the check and the call is not closed).
* ``versioning`` quarantine: with Object Versioning on, a delete keeps the
  generation as noncurrent; the "marker" is that generation. Restore rewrites it
  back to the live name (only if no live object), purge deletes it.
* Region: the bucket's location, lower case; dual- and multi-region buckets are
  ``dual-region:<loc>`` / ``multi-region:<loc>``, never equal to a single region.

Endpoint: ``--endpoint-url`` or ``STORAGE_EMULATOR_HOST`` (an emulator: anonymous
credentials); otherwise Application Default Credentials.
"""

from __future__ import annotations

import base64
import importlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, confined
from cleanup.errors import StoreError, UsageError
from cleanup.stores.base import Checksums, ClockProbe, ObjectInfo, quarantine_key

# google-cloud-storage ships no type information: its objects are Any here, imported
# through importlib so that type checking needs no stubs.
Blob: TypeAlias = Any
Bucket: TypeAlias = Any
Client: TypeAlias = Any

WORKERS = 8
TIMEOUT = (10, 60)  # connect, read (seconds)
INSTALL_HINT = "pip install 'cleanup[gcs]'"
# What a listing needs of each object (a smaller response than the full resource).
LIST_FIELDS = "items(name,size,updated,timeCreated,md5Hash,etag,generation),nextPageToken"
T = TypeVar("T")


def _import_storage() -> Any:
    try:
        return importlib.import_module("google.cloud.storage")
    except ImportError:
        raise UsageError("gs:// stores need the google-cloud-storage package",
                         hint=INSTALL_HINT) from None


def make_client(endpoint_url: str | None = None, what: str = "GCS") -> Client:
    """A storage client: ``endpoint_url`` (or ``STORAGE_EMULATOR_HOST``) is an emulator
    used with anonymous credentials; otherwise Application Default Credentials."""
    storage = _import_storage()
    from google.api_core.client_options import ClientOptions

    endpoint = endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    try:
        if endpoint:
            anonymous = importlib.import_module("google.auth.credentials").AnonymousCredentials
            if "://" not in endpoint:
                endpoint = f"http://{endpoint}"
            client: Client = storage.Client(
                project=project or "cleanup", credentials=anonymous(),
                client_options=ClientOptions(api_endpoint=endpoint.rstrip("/")))
        else:
            client = storage.Client(project=project)
    except api_errors() + (ValueError,) as exc:  # DefaultCredentialsError, a bad endpoint
        err = unusable_error(exc, what, endpoint)
        if err is not None:
            raise err from None
        raise UsageError(f"cannot use {what}: {exc}",
                         hint="check --endpoint-url and the Google credentials") from None
    return client


def api_errors() -> tuple[type[Exception], ...]:
    """What the client raises for a failed call (API errors, auth, transport)."""
    import google.auth.exceptions as ga
    import requests
    from google.api_core import exceptions as gx

    return (gx.GoogleAPIError, ga.GoogleAuthError, requests.RequestException)


def refused(exc: BaseException) -> bool:
    """A connection that could not be made at all (refused, unknown host): retrying will
    not help, unlike a dropped connection or a timeout."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if not isinstance(exc, requests.ConnectionError):
        return False
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", inner), NewConnectionError)


def make_retry() -> Any:
    """google-cloud-storage's default retry (429, 5xx, dropped connections; exponential
    backoff up to 120 s), except for an endpoint that refuses connections."""
    retry_mod = importlib.import_module("google.cloud.storage.retry")
    default_pred = retry_mod._should_retry  # noqa: SLF001  the library's own predicate

    def predicate(exc: Exception) -> bool:
        return not refused(exc) and bool(default_pred(exc))

    return retry_mod.DEFAULT_RETRY.with_predicate(predicate)


def unusable_error(exc: BaseException, what: str, endpoint: str | None) -> UsageError | None:
    """The usage error (exit 2) for missing credentials or an unreachable endpoint."""
    import google.auth.exceptions as ga
    import requests
    from google.api_core.exceptions import RetryError

    if isinstance(exc, RetryError) and exc.cause is not None:
        exc = exc.cause
    at = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, ga.DefaultCredentialsError | ga.RefreshError | ga.TransportError):
        return UsageError(f"cannot use {what}{at}: {exc}",
                          hint="set GOOGLE_APPLICATION_CREDENTIALS or run "
                               "`gcloud auth application-default login`")
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return UsageError(f"cannot reach {what}{at}: {exc}",
                          hint="check --endpoint-url (or STORAGE_EMULATOR_HOST) and the network")
    return None


def bucket_missing(exc: BaseException) -> bool:
    """A 404 that is about the bucket, not the object (GCS says so in the message; the
    URL in the message names the bucket, so its name alone proves nothing)."""
    return "specified bucket does not exist" in str(exc).lower()


def md5_hex(blob: Blob) -> str | None:
    """The etag we record: hex MD5 where GCS has one, else GCS's own etag."""
    if blob.md5_hash:
        return base64.b64decode(blob.md5_hash).hex()
    return str(blob.etag) if blob.etag else None


def region_name(location: str | None, location_type: str | None) -> str:
    """``us-east1``; ``dual-region:nam4``; ``multi-region:eu`` (never a single region)."""
    loc = (location or "").lower()
    kind = (location_type or "region").lower()
    return loc if kind == "region" else f"{kind}:{loc}"


class GCSStore:
    def __init__(self, ref: StoreRef, client: Client, endpoint: str | None = None) -> None:
        from google.api_core import exceptions as gx

        self.ref = ref
        self.client = client
        self.endpoint = endpoint
        self.bucket: Bucket = client.bucket(ref.bucket)
        self._gx = gx
        self._errors = api_errors()
        self._retry = make_retry()
        self._kw: dict[str, Any] = {"timeout": TIMEOUT, "retry": self._retry}

    @property
    def precision(self) -> timedelta:
        return timedelta(milliseconds=1)

    # --- errors ----------------------------------------------------------------------

    def _fail(self, what: str, exc: Exception) -> Exception:
        """The exception to raise for a failed call (see Store's error contract)."""
        gx = self._gx
        err = unusable_error(exc, f"store {self.ref.url}", self.endpoint)
        if err is not None:
            return err
        if isinstance(exc, gx.NotFound) and bucket_missing(exc):
            return UsageError(f"{self.ref.url}: bucket {self.ref.bucket!r} does not exist")
        if isinstance(exc, gx.Forbidden | gx.Unauthorized):
            return UsageError(f"{self.ref.url}: {what} was denied ({_msg(exc)})",
                              hint="check the credentials and the IAM role on the bucket")
        return StoreError(f"{self.ref.url}: {what} failed ({_msg(exc)})",
                          hint="retrying the command is safe")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._errors as exc:
            raise self._fail(what, exc) from None

    def _full(self, key: str) -> str:
        return self.ref.prefix + confined(key, kind="s3", reserved_ok=True)  # I19

    def _blob(self, key: str, generation: int | None = None) -> Blob:
        return self.bucket.blob(self._full(key), generation=generation)

    def _info(self, key: str, blob: Blob) -> ObjectInfo:
        updated = blob.updated or blob.time_created
        if updated is None:
            raise StoreError(f"{self.ref.url}: object {key!r} has no update time")
        return ObjectInfo(key=key, size=int(blob.size or 0),
                          last_modified=updated.astimezone(UTC), etag=md5_hex(blob),
                          version_id=str(blob.generation) if blob.generation else None)

    def _get(self, key: str, generation: int | None = None) -> Blob | None:
        """The object's metadata (one GET), or None if absent."""
        try:
            blob: Blob | None = self.bucket.get_blob(self._full(key), generation=generation,
                                                     **self._kw)
        except self._gx.NotFound as exc:
            if bucket_missing(exc):
                raise self._fail("GetObject", exc) from None
            return None
        except self._errors as exc:
            raise self._fail(f"GetObject {key!r}", exc) from None
        return blob

    def _pool_map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return list(pool.map(fn, items))

    # --- listing ---------------------------------------------------------------------

    def _list(self, prefix: str, **kwargs: Any) -> Iterator[Blob]:
        try:
            yield from self.client.list_blobs(self.bucket, prefix=prefix, **self._kw,
                                              **kwargs)
        except self._gx.NotFound:  # a listing finds no object only when the bucket is gone
            raise UsageError(f"{self.ref.url}: bucket {self.ref.bucket!r} does not exist",
                             hint="check the bucket name (gs://bucket/prefix/)") from None
        except self._errors as exc:
            raise self._fail("ListObjects", exc) from None

    def iter_objects(self) -> Iterator[ObjectInfo]:
        reserved = self.ref.prefix + RESERVED_PREFIX
        plen = len(self.ref.prefix)
        for blob in self._list(self.ref.prefix, fields=LIST_FIELDS):
            full = blob.name
            if full.startswith(reserved) or len(full) == plen:
                continue
            yield self._info(full[plen:], blob)

    def list_keys(self, prefix: str) -> list[str]:
        plen = len(self.ref.prefix)
        return sorted(b.name[plen:] for b in self._list(self.ref.prefix + prefix))

    def probe_clock(self) -> ClockProbe:
        key = f"{RESERVED_PREFIX}clock/probe-{uuid.uuid4().hex}"
        blob = self._blob(key)
        before = datetime.now(UTC)
        self._call("PutObject (clock probe)", lambda: blob.upload_from_string(
            b"clock probe\n", if_generation_match=0, **self._kw))
        after = datetime.now(UTC)
        try:
            stamp = blob.updated or blob.time_created
            if stamp is None:
                self._call("GetObject (clock probe)", lambda: blob.reload(**self._kw))
                stamp = blob.updated or blob.time_created
        finally:
            self.delete_key(key)
        if stamp is None:
            raise StoreError(f"{self.ref.url}: the clock probe has no update time")
        return ClockProbe(stamp.astimezone(UTC), self.precision, before, after)

    def region(self) -> str:
        b = self._call("GetBucket", lambda: self.client.get_bucket(self.ref.bucket,
                                                                   **self._kw))
        return region_name(b.location, b.location_type)

    # --- bookkeeping -----------------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> bool:
        blob = self._blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=0, **self._kw)
        except self._gx.PreconditionFailed:
            return False
        except self._errors as exc:
            raise self._fail(f"PutObject {key!r}", exc) from None
        return True

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        """Compare-and-swap (:class:`ReplaceableStore`): replace ``key`` only if its etag is
        still ``etag`` (``None``: only if absent). The generation read with that etag is
        the upload's ``ifGenerationMatch``, so a write in between makes this False."""
        if etag is None:
            return self.put_if_absent(key, data)
        cur = self._get(key)
        if cur is None or md5_hex(cur) != etag:
            return False
        blob = self._blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=int(cur.generation), **self._kw)
        except (self._gx.PreconditionFailed, self._gx.NotFound):
            return False
        except self._errors as exc:
            raise self._fail(f"PutObject {key!r}", exc) from None
        return True

    def get_bytes(self, key: str) -> bytes | None:
        blob = self._blob(key)
        try:
            data: bytes = blob.download_as_bytes(raw_download=True, **self._kw)
        except self._gx.NotFound as exc:
            if bucket_missing(exc):
                raise self._fail("GetObject", exc) from None
            return None
        except self._errors as exc:
            raise self._fail(f"GetObject {key!r}", exc) from None
        return data

    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        self._call(f"PutObject {key!r}", lambda: blob.upload_from_string(data, **self._kw))

    def delete_key(self, key: str) -> None:
        blob = self._blob(key)
        try:
            blob.delete(**self._kw)
        except self._gx.NotFound:
            return
        except self._errors as exc:
            raise self._fail(f"DeleteObject {key!r}", exc) from None

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        """One listing from the batch's first key (``startOffset``) while it stays inside
        the batch's range; a GET per key for what the listing budget did not reach."""
        if not keys:
            return {}
        ordered = sorted(set(keys))
        want = set(ordered)
        found: dict[str, ObjectInfo] = {}
        lcp = os.path.commonprefix(ordered)
        plen = len(self.ref.prefix)
        budget, scanned, last_seen = 3 * len(ordered) + 2000, 0, ""
        for blob in self._list(self.ref.prefix + lcp,
                               start_offset=self.ref.prefix + ordered[0]):
            k = blob.name[plen:]
            if k > ordered[-1]:
                last_seen = ordered[-1]
                break
            last_seen = k
            if k in want:
                found[k] = self._info(k, blob)
            scanned += 1
            if scanned > budget:
                break
        else:
            last_seen = ordered[-1]

        def one(k: str) -> tuple[str, Blob | None]:
            return k, self._get(k)

        for k, blob in self._pool_map(one, [k for k in ordered if k > last_seen]):
            if blob is not None:
                found[k] = self._info(k, blob)
        return found

    # --- removal ---------------------------------------------------------------------

    def _check(self, o: ObjectInfo) -> tuple[Blob | None, str | None]:
        """The live object if it is still as planned, else (None, outcome)."""
        cur = self._get(o.key)
        if cur is None:
            return None, "missing"
        if (int(cur.size or 0) != o.size or (o.etag is not None and md5_hex(cur) != o.etag)
                or (o.version_id is not None and str(cur.generation) != o.version_id)):
            return None, "changed"
        return cur, None

    def _delete_generation(self, key: str, generation: int) -> str | None:
        """Delete ``key`` only if its live generation is ``generation``."""
        try:
            self._blob(key).delete(if_generation_match=generation, **self._kw)
        except self._gx.PreconditionFailed:
            return "changed"
        except self._gx.NotFound:
            return "missing"
        except self._errors as exc:
            return f"error: {_msg(exc)}"
        return None

    def _rewrite(self, src: Blob, dest_key: str, **conditions: Any) -> Blob:
        dest = self._blob(dest_key)
        token, _done, _total = dest.rewrite(src, **self._kw, **conditions)
        while token is not None:
            token, _done, _total = dest.rewrite(src, token=token, **self._kw, **conditions)
        return dest

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Copy mode: rewrite the checked generation to the quarantine key
        (``ifSourceGenerationMatch``), then delete that generation (``ifGenerationMatch``).
        A crash in between leaves both; a repeat copies again and deletes."""
        def move(o: ObjectInfo) -> str | None:
            try:
                cur, outcome = self._check(o)
            except (StoreError, UsageError) as exc:
                return f"error: {exc.message}"
            if cur is None:
                return outcome
            gen = int(cur.generation or 0)
            qkey = quarantine_key(plan_id, o.key)
            src = self._blob(o.key, generation=gen)
            try:
                copy = self._rewrite(src, qkey, if_source_generation_match=gen)
            except self._gx.PreconditionFailed:
                return "changed"
            except self._gx.NotFound:
                return "missing"
            except self._errors as exc:
                return f"copy failed: {_msg(exc)}"
            res = self._delete_generation(o.key, gen)
            if res == "changed":  # rewritten just now: keep it, drop our copy of the old
                try:
                    self._blob(qkey).delete(if_generation_match=copy.generation, **self._kw)
                except self._errors:  # noqa: S110  the copy stays: purge removes it
                    pass
                return "changed"
            return None if res == "missing" else res  # gone meanwhile: the copy holds it

        return dict(zip([o.key for o in objs], self._pool_map(move, objs), strict=True))

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        def remove(o: ObjectInfo) -> str | None:
            try:
                cur, outcome = self._check(o)
            except (StoreError, UsageError) as exc:
                return f"error: {exc.message}"
            if cur is None:
                return outcome
            return self._delete_generation(o.key, int(cur.generation or 0))

        return dict(zip([o.key for o in objs], self._pool_map(remove, objs), strict=True))

    def restore(self, plan_id: str, key: str) -> str:
        qkey = quarantine_key(plan_id, key)
        q = self._get(qkey)
        if q is None:
            return "not-quarantined"
        if self._get(key) is not None:
            return "exists"
        gen = int(q.generation or 0)
        try:
            self._rewrite(self._blob(qkey, generation=gen), key, if_generation_match=0,
                          if_source_generation_match=gen)
        except self._gx.PreconditionFailed:
            return "exists"
        except self._errors as exc:
            raise self._fail(f"restore {key!r}", exc) from None
        try:
            self._blob(qkey).delete(if_generation_match=gen, **self._kw)
        except (self._gx.NotFound, self._gx.PreconditionFailed):
            pass
        except self._errors as exc:
            raise self._fail(f"DeleteObject {qkey!r}", exc) from None
        return "restored"

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        def drop(k: str) -> int:
            blob = self._blob(quarantine_key(plan_id, k))
            try:
                blob.delete(**self._kw)
            except self._gx.NotFound:
                return 0
            except self._errors as exc:
                raise self._fail(f"DeleteObject {blob.name!r}", exc) from None
            return 1

        return sum(self._pool_map(drop, list(keys)))

    # --- versioning mode -------------------------------------------------------------

    def versioning_status(self) -> str:
        """``Enabled`` when Object Versioning is on, else ``""`` (GCS does not say whether
        it was ever on; either way a delete would destroy the data)."""
        b = self._call("GetBucket", lambda: self.client.get_bucket(self.ref.bucket,
                                                                   **self._kw))
        return "Enabled" if b.versioning_enabled else ""

    def soft_delete_retention(self) -> timedelta | None:
        """The bucket's soft-delete retention (reported, not relied on), or None."""
        b = self._call("GetBucket", lambda: self.client.get_bucket(self.ref.bucket,
                                                                   **self._kw))
        seconds = getattr(b.soft_delete_policy, "retention_duration_seconds", None)
        return timedelta(seconds=int(seconds)) if seconds else None

    def delete_to_markers(self, objs: Sequence[ObjectInfo]
                          ) -> tuple[dict[str, str | None], dict[str, str]]:
        """Delete the checked generation of each object; with versioning on it stays as a
        noncurrent generation, whose number is the "marker"."""
        markers: dict[str, str] = {}

        def remove(o: ObjectInfo) -> tuple[str | None, str | None]:
            try:
                cur, outcome = self._check(o)
            except (StoreError, UsageError) as exc:
                return f"error: {exc.message}", None
            if cur is None:
                return outcome, None
            gen = int(cur.generation or 0)
            return self._delete_generation(o.key, gen), str(gen)

        out: dict[str, str | None] = {}
        for o, (res, gen) in zip(objs, self._pool_map(remove, objs), strict=True):
            out[o.key] = res
            if res is None and gen is not None:
                markers[o.key] = gen
        return out, markers

    def _versions(self, key: str) -> list[Blob]:
        """Every generation of exactly ``key``, newest first."""
        full = self._full(key)
        blobs = [b for b in self._list(full, versions=True) if b.name == full]
        return sorted(blobs, key=lambda b: -int(b.generation or 0))

    def marker_for(self, key: str, etag: str | None) -> str | None:
        """Resume: the newest generation of ``key`` if it is noncurrent (no live object)
        and has the planned etag (our own earlier, unjournaled delete)."""
        versions = self._versions(key)
        if versions and versions[0].time_deleted is not None:
            if etag is None or md5_hex(versions[0]) == etag:
                return str(versions[0].generation)
        return None

    def remove_marker(self, key: str, marker: str) -> str:
        """Restore: rewrite the noncurrent generation ``marker`` back to the live name,
        only if there is no live object (``ifGenerationMatch=0``). The generation stays
        noncurrent (lifecycle rules or purge remove it)."""
        old = self._get(key, generation=int(marker))
        if old is None:
            return "not-quarantined"
        live = self._get(key)
        if live is not None:
            restored = (live.metadata or {}).get("cleanup-restored-generation") == marker
            return "not-quarantined" if restored else "exists"
        dest = self._blob(key)
        dest.metadata = {**(old.metadata or {}), "cleanup-restored-generation": marker}
        try:
            token, _d, _t = dest.rewrite(old, if_generation_match=0,
                                         if_source_generation_match=int(marker),
                                         **self._kw)
            while token is not None:
                token, _d, _t = dest.rewrite(old, token=token, if_generation_match=0,
                                             if_source_generation_match=int(marker),
                                             **self._kw)
        except self._gx.PreconditionFailed:
            return "exists"
        except self._errors as exc:
            raise self._fail(f"restore {key!r}", exc) from None
        return "restored"

    def purge_versions(self, key: str, marker: str) -> int:
        """Delete the noncurrent generation ``marker`` for good, only while no live object
        exists (as S3: only while our marker is the latest); 1 if removed."""
        if self._get(key) is not None:
            return 0
        old = self._get(key, generation=int(marker))
        if old is None:
            return 0
        try:
            self._blob(key, generation=int(marker)).delete(**self._kw)
        except self._gx.NotFound:
            return 0
        except self._errors as exc:
            raise self._fail(f"DeleteObject {key!r}#{marker}", exc) from None
        return 1

    # --- copy verification (cleanup.retire): read-only ---------------------------------

    def checksums(self, key: str) -> Checksums | None:
        """The object's size, MD5 (absent for composed objects) and CRC32C, as GCS states
        them for the stored bytes."""
        blob = self._get(key)
        if blob is None:
            return None
        sums = {}
        for algo, value in (("md5", blob.md5_hash), ("crc32c", blob.crc32c)):
            if value:
                sums[algo] = base64.b64decode(value).hex()
        updated = blob.updated or blob.time_created
        return Checksums(key=key, size=int(blob.size or 0), sums=sums, etag=md5_hex(blob),
                         last_modified=(updated or datetime.now(UTC)).astimezone(UTC))

    def read_chunks(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        """The stored bytes (no decompressive transcoding) of the current generation, in
        ranged reads of ``chunk_size``."""
        blob = self._get(key)
        if blob is None:
            return None
        size, generation = int(blob.size or 0), blob.generation

        def part(start: int) -> bytes:
            b = self._blob(key, generation=generation)
            try:
                return bytes(b.download_as_bytes(start=start,
                                                 end=min(start + chunk_size, size) - 1,
                                                 raw_download=True, **self._kw))
            except self._errors as exc:
                raise self._fail(f"GetObject {key!r}", exc) from None

        def chunks() -> Iterator[bytes]:
            for start in range(0, size, chunk_size):
                yield part(start)

        return chunks()


def _msg(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    text = getattr(exc, "message", None) or str(exc)
    return f"{code}: {text}".strip() if code else f"{type(exc).__name__}: {text}"
