"""Azure Blob Storage store (``az://container/prefix/``) through azure-storage-blob.

Install with ``pip install 'cleanup[azure]'``; the package is imported only when an
``az://`` store is opened.

* The account: ``--endpoint-url`` (``https://ACCOUNT.blob.core.windows.net`` or an
  emulator's ``http://127.0.0.1:10000/devstoreaccount1``) with the key from
  ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_KEY``, or a SAS token
  from ``AZURE_STORAGE_SAS_TOKEN``; without an endpoint, the connection string
  alone; ``az://container@account/`` names the account and is checked against it.
* Listings carry Last-Modified in whole seconds (precision 1 s, I2), the ETag
  without quotes (it changes on every write) and the version id where blob
  versioning is on. Folder placeholders of hierarchical-namespace accounts
  (``hdi_isfolder``) are not objects.
* Conditional writes: ``If-None-Match: *`` for the lock (I12) and restores,
  ``If-Match`` with the planned ETag on deletes, ``x-ms-source-if-match`` on the
  quarantine copy (Copy Blob, same account; polled until it completes).
* Region: the blob API does not tell an account's location, so the region is the
  one declared with ``--region`` (or ``AZURE_STORAGE_REGION``); without one,
  :meth:`AzureStore.region` refuses.
* The ``versioning`` quarantine mode is not offered: Azurite does not implement blob
  versioning, so it could not be tested (use ``copy``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, confined
from cleanup.errors import StoreError, UsageError
from cleanup.stores.base import Checksums, ClockProbe, ObjectInfo, quarantine_key

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

WORKERS = 8
COPY_POLL_S = 120.0
INSTALL_HINT = "pip install 'cleanup[azure]'"
T = TypeVar("T")


def _parse_connection_string(cs: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in cs.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def make_service(ref: StoreRef, endpoint_url: str | None = None,
                 what: str = "Azure Blob Storage") -> BlobServiceClient:
    """A blob service client for ``ref``'s account (see the module docstring)."""
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError:
        raise UsageError("az:// stores need the azure-storage-blob package",
                         hint=INSTALL_HINT) from None
    # Exponential retry of throttling (503), timeouts and dropped connections: about
    # 0.5, 2.5, 4.5, 8.5, 16.5 s (+-1 s), then the call fails.
    opts: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 60, "retry_total": 5,
                            "initial_backoff": 0.5, "increment_base": 2,
                            "random_jitter_range": 1}
    cs = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    parts = _parse_connection_string(cs)
    account = ref.account or parts.get("AccountName", "")
    if not (endpoint_url or cs or (ref.account and os.environ.get("AZURE_STORAGE_KEY"))):
        raise UsageError(f"cannot use {what}: no storage account configured",
                         hint="set AZURE_STORAGE_CONNECTION_STRING, or give --endpoint-url "
                              "with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN")
    from azure.core.exceptions import AzureError

    try:
        if endpoint_url:
            credential: Any = None
            if parts.get("AccountKey"):
                credential = {"account_name": parts.get("AccountName", account),
                              "account_key": parts["AccountKey"]}
            elif os.environ.get("AZURE_STORAGE_KEY") and account:
                credential = {"account_name": account,
                              "account_key": os.environ["AZURE_STORAGE_KEY"]}
            elif os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
                credential = os.environ["AZURE_STORAGE_SAS_TOKEN"]
            elif parts.get("SharedAccessSignature"):
                credential = parts["SharedAccessSignature"]
            service = BlobServiceClient(endpoint_url, credential=credential, **opts)
        elif cs:
            service = BlobServiceClient.from_connection_string(cs, **opts)
        else:
            service = BlobServiceClient(
                f"https://{ref.account}.blob.core.windows.net",
                credential={"account_name": ref.account,
                            "account_key": os.environ["AZURE_STORAGE_KEY"]}, **opts)
    except (AzureError, ValueError) as exc:  # a malformed connection string or URL
        raise UsageError(f"cannot use {what}: {exc}",
                         hint="check --endpoint-url and AZURE_STORAGE_CONNECTION_STRING") from None
    if ref.account and service.account_name and service.account_name != ref.account:
        raise UsageError(f"{what} names account {ref.account!r} but the credentials are for "
                         f"{service.account_name!r}",
                         hint="use the account's connection string or --endpoint-url")
    return service


def strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else etag


class AzureStore:
    def __init__(self, ref: StoreRef, service: BlobServiceClient,
                 region: str | None = None) -> None:
        from azure.core import MatchConditions
        from azure.core import exceptions as ax

        self.ref = ref
        self.service = service
        self.container: ContainerClient = service.get_container_client(ref.bucket)
        self._region = region or os.environ.get("AZURE_STORAGE_REGION") or None
        self._ax = ax
        self._mc = MatchConditions
        self._errors: tuple[type[Exception], ...] = (ax.AzureError, ValueError)

    @property
    def precision(self) -> timedelta:
        return timedelta(seconds=1)

    # --- errors ----------------------------------------------------------------------

    def _fail(self, what: str, exc: Exception) -> Exception:
        ax = self._ax
        code = _code(exc)
        if isinstance(exc, ax.ServiceRequestError):  # refused, DNS, TLS, timeout
            return UsageError(f"cannot reach store {self.ref.url} at {self.service.url}: {exc}",
                              hint="check --endpoint-url and the network")
        if code == "ContainerNotFound":
            return UsageError(f"{self.ref.url}: container {self.ref.bucket!r} does not exist")
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ax.ClientAuthenticationError) or status == 403:
            return UsageError(f"{self.ref.url}: {what} was denied ({_msg(exc)})",
                              hint="check the account key, SAS token or RBAC role")
        return StoreError(f"{self.ref.url}: {what} failed ({_msg(exc)})",
                          hint="retrying the command is safe")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._errors as exc:
            raise self._fail(what, exc) from None

    def _full(self, key: str) -> str:
        return self.ref.prefix + confined(key, kind="s3", reserved_ok=True)  # I19

    def _client(self, key: str) -> BlobClient:
        return self.container.get_blob_client(self._full(key))

    def _absent(self, exc: Exception) -> bool:
        """True for a missing blob; a missing container is re-raised as a usage error."""
        if isinstance(exc, self._ax.ResourceNotFoundError):
            if _code(exc) == "ContainerNotFound":
                raise self._fail("request", exc) from None
            return True
        return False

    def _props(self, key: str) -> Any | None:
        try:
            return self._client(key).get_blob_properties()
        except self._errors as exc:
            if self._absent(exc):
                return None
            raise self._fail(f"GetBlobProperties {key!r}", exc) from None

    def _info(self, key: str, p: Any) -> ObjectInfo:
        return ObjectInfo(key=key, size=int(p.size), last_modified=p.last_modified.astimezone(UTC),
                          etag=strip_etag(p.etag), version_id=getattr(p, "version_id", None))

    def _pool_map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return list(pool.map(fn, items))

    # --- listing ---------------------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[Any]:
        try:
            for p in self.container.list_blobs(name_starts_with=prefix, include=["metadata"]):
                if (p.metadata or {}).get("hdi_isfolder") == "true":
                    continue  # a hierarchical namespace's folder, not an object
                yield p
        except self._errors as exc:
            raise self._fail("ListBlobs", exc) from None

    def iter_objects(self) -> Iterator[ObjectInfo]:
        reserved = self.ref.prefix + RESERVED_PREFIX
        plen = len(self.ref.prefix)
        for p in self._list(self.ref.prefix):
            if p.name.startswith(reserved) or len(p.name) == plen:
                continue
            yield self._info(p.name[plen:], p)

    def list_keys(self, prefix: str) -> list[str]:
        plen = len(self.ref.prefix)
        return sorted(p.name[plen:] for p in self._list(self.ref.prefix + prefix))

    def probe_clock(self) -> ClockProbe:
        key = f"{RESERVED_PREFIX}clock/probe-{uuid.uuid4().hex}"
        before = datetime.now(UTC)
        resp = self._call("PutBlob (clock probe)",
                          lambda: self._client(key).upload_blob(b"clock probe\n",
                                                                overwrite=False))
        after = datetime.now(UTC)
        self.delete_key(key)
        stamp = resp.get("last_modified")
        if stamp is None:
            raise StoreError(f"{self.ref.url}: the clock probe has no Last-Modified")
        return ClockProbe(stamp.astimezone(UTC), self.precision, before, after)

    def region(self) -> str:
        if not self._region:
            raise UsageError(f"{self.ref.url}: Azure does not report a storage account's "
                             "location through the blob API",
                             hint="give --region (the account's location, e.g. westeurope) "
                                  "or set AZURE_STORAGE_REGION")
        return self._region

    # --- bookkeeping -----------------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self._client(key).upload_blob(data, overwrite=False)  # If-None-Match: *
        except self._ax.ResourceExistsError:
            return False
        except self._errors as exc:
            if getattr(exc, "status_code", None) in (409, 412):
                return False
            raise self._fail(f"PutBlob {key!r}", exc) from None
        return True

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        """Compare-and-swap (:class:`ReplaceableStore`): Put Blob with ``If-Match`` (with
        ``If-None-Match: *`` when ``etag`` is None); False if the blob changed."""
        if etag is None:
            return self.put_if_absent(key, data)
        try:
            self._client(key).upload_blob(data, overwrite=True, etag=f'"{etag}"',
                                          match_condition=self._mc.IfNotModified)
        except self._errors as exc:
            if isinstance(exc, self._ax.ResourceModifiedError) or getattr(
                    exc, "status_code", None) in (404, 409, 412):
                if _code(exc) == "ContainerNotFound":
                    raise self._fail(f"PutBlob {key!r}", exc) from None
                return False
            raise self._fail(f"PutBlob {key!r}", exc) from None
        return True

    def get_bytes(self, key: str) -> bytes | None:
        try:
            data: bytes = self._client(key).download_blob().readall()
        except self._errors as exc:
            if self._absent(exc):
                return None
            raise self._fail(f"GetBlob {key!r}", exc) from None
        return data

    def put(self, key: str, data: bytes) -> None:
        self._call(f"PutBlob {key!r}", lambda: self._client(key).upload_blob(data,
                                                                            overwrite=True))

    def delete_key(self, key: str) -> None:
        try:
            self._client(key).delete_blob()
        except self._errors as exc:
            if self._absent(exc):
                return
            raise self._fail(f"DeleteBlob {key!r}", exc) from None

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        """List the batch's common prefix while that stays cheap (a budget of three
        listed objects per key); a HEAD per key for the rest."""
        if not keys:
            return {}
        ordered = sorted(set(keys))
        want = set(ordered)
        found: dict[str, ObjectInfo] = {}
        lcp = os.path.commonprefix(ordered)
        plen = len(self.ref.prefix)
        budget, scanned, complete = 3 * len(ordered) + 2000, 0, True
        for p in self._list(self.ref.prefix + lcp):
            k = p.name[plen:]
            if k in want:
                found[k] = self._info(k, p)
            scanned += 1
            if scanned > budget:
                complete = False
                break
        if complete:
            return found

        def one(k: str) -> tuple[str, Any | None]:
            return k, self._props(k)

        for k, p in self._pool_map(one, [k for k in ordered if k not in found]):
            if p is not None:
                found[k] = self._info(k, p)
        return found

    # --- removal ---------------------------------------------------------------------

    def _outcome(self, exc: Exception, key: str) -> str:
        """``changed``, ``missing`` or ``error: ...`` for a failed conditional call on
        ``key`` (If-Match on an absent blob is a 412 as well: it is ``missing``)."""
        ax = self._ax
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ax.ResourceModifiedError) or status == 412:
            try:
                return "changed" if self._props(key) is not None else "missing"
            except (StoreError, UsageError) as err:
                return f"error: {err.message}"
        if isinstance(exc, ax.ResourceNotFoundError) or status == 404:
            if _code(exc) == "ContainerNotFound":
                return f"error: {_msg(exc)}"
            return "missing"
        return f"error: {_msg(exc)}"

    def _copy(self, src: str, dest: str, **conditions: Any) -> None:
        """Copy Blob within the account, waiting until it completes."""
        dst = self._client(dest)
        resp = dst.start_copy_from_url(self._client(src).url, **conditions)
        status, deadline = resp.get("copy_status"), time.monotonic() + COPY_POLL_S
        copy_id = resp.get("copy_id")
        while status == "pending":
            if time.monotonic() > deadline:
                if isinstance(copy_id, str):
                    dst.abort_copy(copy_id)
                raise StoreError(f"copy of {src!r} did not finish in {COPY_POLL_S:.0f}s")
            time.sleep(0.2)
            status = dst.get_blob_properties().copy.status
        if status != "success":
            raise StoreError(f"copy of {src!r} ended {status}")

    def _delete_if(self, key: str, etag: str | None) -> None:
        kwargs: dict[str, Any] = {}
        if etag:
            kwargs = {"etag": f'"{etag}"', "match_condition": self._mc.IfNotModified}
        self._client(key).delete_blob(**kwargs)

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Copy mode: Copy Blob to the quarantine key only if the source still has the
        planned ETag, then delete the source only if it still has it. A crash between
        leaves both; a repeat copies again and deletes."""
        def move(o: ObjectInfo) -> str | None:
            qkey = quarantine_key(plan_id, o.key)
            cond: dict[str, Any] = {}
            if o.etag:
                cond = {"source_etag": f'"{o.etag}"',
                        "source_match_condition": self._mc.IfNotModified}
            try:
                self._copy(o.key, qkey, **cond)
            except StoreError as exc:
                return f"copy failed: {exc.message}"
            except self._errors as exc:
                out = self._outcome(exc, o.key)
                return out if out in ("changed", "missing") else f"copy failed: {_msg(exc)}"
            try:
                self._delete_if(o.key, o.etag)
            except self._errors as exc:
                out = self._outcome(exc, o.key)
                if out == "missing":
                    return None  # removed meanwhile: the quarantine copy holds it
                try:  # not moved: drop our copy (the object stays where it is)
                    self._client(qkey).delete_blob()
                except self._errors:  # noqa: S110  purge removes a leftover copy
                    pass
                return out
            return None

        return dict(zip([o.key for o in objs], self._pool_map(move, objs), strict=True))

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        def remove(o: ObjectInfo) -> str | None:
            try:
                self._delete_if(o.key, o.etag)
            except self._errors as exc:
                return self._outcome(exc, o.key)
            return None

        return dict(zip([o.key for o in objs], self._pool_map(remove, objs), strict=True))

    def restore(self, plan_id: str, key: str) -> str:
        qkey = quarantine_key(plan_id, key)
        q = self._props(qkey)
        if q is None:
            return "not-quarantined"
        if self._props(key) is not None:
            return "exists"
        try:  # If-None-Match: * on the destination: never overwrites
            self._copy(qkey, key, match_condition=self._mc.IfMissing,
                       source_etag=q.etag, source_match_condition=self._mc.IfNotModified)
        except StoreError:
            raise
        except self._errors as exc:
            if isinstance(exc, self._ax.ResourceExistsError) or getattr(
                    exc, "status_code", None) in (409, 412):
                return "exists"
            raise self._fail(f"restore {key!r}", exc) from None
        self.delete_key(qkey)
        return "restored"

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        def drop(k: str) -> int:
            try:
                self._client(quarantine_key(plan_id, k)).delete_blob()
            except self._errors as exc:
                if self._absent(exc):
                    return 0
                raise self._fail(f"DeleteBlob {k!r}", exc) from None
            return 1

        return sum(self._pool_map(drop, list(keys)))

    def soft_delete_retention(self) -> timedelta | None:
        """The account's blob soft-delete retention (reported, not relied on), or None."""
        props = self._call("GetServiceProperties", self.service.get_service_properties)
        policy = props.get("delete_retention_policy")
        if policy is None or not policy.enabled:
            return None
        return timedelta(days=int(policy.days or 0))

    # --- copy verification (cleanup.retire): read-only ---------------------------------

    def checksums(self, key: str) -> Checksums | None:
        """The blob's size and its Content-MD5 where one is stored (Put Blob stores it;
        a blob committed from blocks has one only if the uploader set it)."""
        p = self._props(key)
        if p is None:
            return None
        md5 = getattr(getattr(p, "content_settings", None), "content_md5", None)
        sums = {"md5": bytes(md5).hex()} if md5 else {}
        return Checksums(key=key, size=int(p.size), sums=sums, etag=strip_etag(p.etag),
                         last_modified=p.last_modified.astimezone(UTC))

    def read_chunks(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        """The blob's content, streamed (bounded memory), pinned to its etag."""
        p = self._props(key)
        if p is None:
            return None
        try:
            stream = self._client(key).download_blob(etag=p.etag, match_condition=self._match)
        except self._errors as exc:
            if self._absent(exc):
                return None
            raise self._fail(f"GetBlob {key!r}", exc) from None

        def chunks() -> Iterator[bytes]:
            for c in stream.chunks():
                for off in range(0, len(c), chunk_size):
                    yield bytes(c[off:off + chunk_size])

        return chunks()

    @property
    def _match(self) -> Any:
        from azure.core import MatchConditions

        return MatchConditions.IfNotModified


def _code(exc: BaseException) -> str:
    """The storage error code (``ContainerNotFound``) of an exception, or ``""``."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _msg(exc: BaseException) -> str:
    code = _code(exc)
    text = str(getattr(exc, "reason", None) or exc).splitlines()[0] if str(exc) else ""
    return f"{code}: {text}" if code else f"{type(exc).__name__}: {text}"
