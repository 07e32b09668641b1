"""A cheap per-key ListObjectsV2 path for ``cleanup inventory`` (issue 18).

botocore still makes every request (signing, retries with backoff on 503 SlowDown,
credentials, endpoints, errors), but the body of a successful page is taken raw in a
``before-parse`` hook and parsed here with the C XML parser straight into column lists,
which become Arrow record batches. boto3's own path builds a dict and a ``datetime`` per
key, which is most of its CPU cost per key.

botocore asks for ``EncodingType=url`` on every listing, so keys (and the common
prefixes and continuation of a page) are URL-decoded here exactly as botocore does it
(``unquote_plus``), and only when the page says ``<EncodingType>url</EncodingType>``.

Split listing: a first listing with ``Delimiter='/'`` yields the objects directly under
the store prefix and the top-level folders. When there are several folders, the key
space above the first folder is cut at folder names into contiguous ranges
``[lo, hi)``, each listed by one worker (``StartAfter``, stop at ``hi``). Exactly once
by construction: an object directly under the prefix (no ``/`` in its relative key) is
taken only from the first listing; any other key from the one range that holds it. The
server must list in key order (S3 does; a page out of order is an error, never a silent
loss).
"""

from __future__ import annotations

import html
import os
import queue
import re
import threading
import xml.etree.ElementTree as ET  # noqa: S405 - the server's own listing XML
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus

from cleanup.core.paths import RESERVED_PREFIX
from cleanup.errors import StoreError

if TYPE_CHECKING:
    import pyarrow as pa

    from cleanup.core.paths import StoreRef


class S3Store(Protocol):
    """What this module needs of :class:`cleanup.stores.s3.S3Store` (which imports it)."""

    ref: StoreRef
    client: Any

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        ...

#: at most this many ranges are listed side by side (``CLEANUP_S3_LIST_WORKERS``)
LIST_WORKERS = 4
#: rows per Arrow record batch (and per progress update)
BATCH_ROWS = 20_000
#: keys per ListObjectsV2 page asked for (S3's maximum)
MAX_KEYS = 1000
_PAGE = "CleanupParsedListPage"
_EMPTY = (b'<?xml version="1.0" encoding="UTF-8"?>'
          b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>')
_active = threading.local()


def _take_page(response_dict: dict[str, Any], customized_response_dict: dict[str, Any],
               **_kwargs: Any) -> None:
    """``before-parse.s3.ListObjectsV2``, only in a thread listing through here: parse a
    successful page ourselves and give botocore's parser an empty result. A body that is
    not a whole ListBucketResult (cut short, an embedded ``<Error>``) becomes a 500, which
    botocore retries, as its own check of 200 responses does."""
    if not getattr(_active, "on", False) or response_dict.get("status_code") != 200:
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes):
        return
    try:
        customized_response_dict[_PAGE] = parse_page(body)
    except ValueError:
        response_dict["status_code"] = 500
        return
    response_dict["body"] = _EMPTY


def _install(client: Any) -> None:
    """Register :func:`_take_page` on ``client`` (once). botocore's own check of 200
    responses parses every body a second time with the XML parser; for our pages it is
    skipped because :func:`_take_page` does the same check (elsewhere it runs as before).
    Should botocore rename that handler, the check simply stays (slower, still correct)."""
    events = client.meta.events
    events.register("before-parse.s3.ListObjectsV2", _take_page,
                    unique_id="cleanup-fastlist-page")
    if getattr(client.meta, "_cleanup_fastlist", False):
        return
    client.meta._cleanup_fastlist = True
    try:
        from botocore.handlers import (  # type: ignore[attr-defined]
            _handle_200_error as check_200,
        )
    except ImportError:  # pragma: no cover - a botocore without it
        return

    def guarded(operation_model: Any = None, **kwargs: Any) -> None:
        if getattr(_active, "on", False) and getattr(operation_model, "name", "") == \
                "ListObjectsV2":
            return
        check_200(operation_model=operation_model, **kwargs)

    events.unregister("before-parse.s3.*", check_200)
    events.register_first("before-parse.s3.*", guarded, unique_id="cleanup-fastlist-200")


def workers() -> int:
    raw = os.environ.get("CLEANUP_S3_LIST_WORKERS", "")
    return max(1, int(raw)) if raw.isdigit() else LIST_WORKERS


@dataclass
class Page:
    """One parsed ListObjectsV2 page; keys are full (bucket) keys, decoded."""

    keys: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    etags: list[str | None] = field(default_factory=list)
    #: the additional checksum algorithms each object names (lower case; values need a
    #: HEAD), ``()`` for none
    algos: list[tuple[str, ...]] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    token: str | None = None


#: the usual shape of an object entry (AWS, moto, rclone): Key, LastModified, ETag, any
#: checksum fields, Size. A page where any entry differs is parsed by the XML parser.
_OBJECT = re.compile(
    r"<Contents>\s*<Key>([^<]*)</Key>\s*<LastModified>([^<]*)</LastModified>\s*"
    r"<ETag>([^<]*)</ETag>((?:\s*<(Checksum\w*)>[^<]*</\5>)*)\s*<Size>([^<]*)</Size>")
_ALGO = re.compile(r"<ChecksumAlgorithm>([^<]*)</ChecksumAlgorithm>")
_FOLDER = re.compile(r"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>\s*</CommonPrefixes>")
_TOP = {name: re.compile(f"<{name}>([^<]*)</{name}>")
        for name in ("IsTruncated", "NextContinuationToken", "EncodingType")}


def parse_page(body: bytes) -> Page:
    """The rows of a ListObjectsV2 result document. A document that is not one (cut
    short, an ``<Error>``) raises :class:`ValueError`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    tail = text.rstrip()
    if not tail.endswith("</ListBucketResult>") or "<!" in text:
        # Cut short, an error document, or comments / CDATA: the XML parser decides.
        return _parse_tree(body)
    found = _OBJECT.findall(text)
    folders = _FOLDER.findall(text)
    if len(found) != text.count("<Contents") or len(folders) != text.count("<CommonPrefixes"):
        return _parse_tree(body)
    page = Page()
    amp = "&" in text
    for key, lm, etag, checksums, _last, size in found:
        if amp:
            key, lm, etag, size = (html.unescape(v) for v in (key, lm, etag, size))
        page.keys.append(key)
        page.times.append(lm)
        page.sizes.append(size)
        page.etags.append(etag.strip('"'))
        page.algos.append(tuple(a.strip().lower() for a in _ALGO.findall(checksums))
                          if checksums else ())
    page.prefixes = [html.unescape(p) if amp else p for p in folders]
    top = {name: m.group(1) if (m := rx.search(text)) else None for name, rx in _TOP.items()}
    page.truncated = (top["IsTruncated"] or "").strip().lower() == "true"
    token = top["NextContinuationToken"]
    page.token = html.unescape(token) if token and amp else token
    _url_decode(page, (top["EncodingType"] or "").strip().lower() == "url")
    return page


def _url_decode(page: Page, url: bool) -> None:
    """botocore's decoding of an ``EncodingType=url`` page (``unquote_plus``)."""
    if url:
        page.keys = [unquote_plus(k) if ("%" in k or "+" in k) else k for k in page.keys]
        page.prefixes = [unquote_plus(p) for p in page.prefixes]


def _parse_tree(body: bytes) -> Page:
    """Any ListObjectsV2 result document, through the XML parser."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - the server's own listing XML
    except ET.ParseError as exc:
        raise ValueError(f"unreadable ListObjectsV2 response ({exc})") from None
    tag = root.tag
    n = tag.index("}") + 1 if tag.startswith("{") else 0
    if tag[n:] != "ListBucketResult":
        raise ValueError(f"ListObjectsV2 answered <{tag[n:]}>")
    page = Page()
    url = False
    for el in root:
        t = el.tag[n:]
        if t == "Contents":
            key = size = lm = etag = None
            algos: list[str] = []
            for c in el:
                ct = c.tag[n:]
                if ct == "Key":
                    key = c.text or ""
                elif ct == "Size":
                    size = c.text
                elif ct == "LastModified":
                    lm = c.text
                elif ct == "ETag":
                    etag = c.text
                elif ct == "ChecksumAlgorithm":
                    algos.append((c.text or "").strip().lower())
            if key is None or size is None or lm is None:
                raise ValueError("ListObjectsV2 returned an object without Key, Size or "
                                 "LastModified")
            page.keys.append(key)
            page.sizes.append(size)
            page.times.append(lm)
            page.etags.append(etag.strip('"') if etag else etag)
            page.algos.append(tuple(algos))
        elif t == "CommonPrefixes":
            page.prefixes += [c.text or "" for c in el if c.tag[n:] == "Prefix"]
        elif t == "IsTruncated":
            page.truncated = (el.text or "").strip().lower() == "true"
        elif t == "NextContinuationToken":
            page.token = el.text
        elif t == "EncodingType":
            url = (el.text or "").strip().lower() == "url"
    _url_decode(page, url)
    return page


class _Lister:
    """Pages of one store's listing through its botocore client."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        _install(store.client)

    def pages(self, prefix: str, *, delimiter: str | None = None,
              start_after: str | None = None) -> Iterator[Page]:
        kwargs: dict[str, Any] = {"Bucket": self.store.ref.bucket, "Prefix": prefix,
                                  "MaxKeys": MAX_KEYS}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            _active.on = True
            try:
                resp = self.store._call("ListObjectsV2", self.store.client.list_objects_v2,
                                        **kwargs)
            finally:
                _active.on = False
            page = resp.get(_PAGE)
            if page is None:  # parsed by botocore after all: take its dict
                page = _from_dict(resp)
            yield page
            if not page.truncated:
                return
            if not page.token:
                raise StoreError(f"{self.store.ref.url}: truncated listing without a "
                                 "continuation token")
            kwargs["ContinuationToken"] = page.token
            kwargs.pop("StartAfter", None)


def _from_dict(resp: dict[str, Any]) -> Page:
    """A page botocore parsed (keys already decoded)."""
    page = Page(truncated=bool(resp.get("IsTruncated")), token=resp.get("NextContinuationToken"))
    for o in resp.get("Contents", []):
        page.keys.append(o["Key"])
        page.sizes.append(str(o["Size"]))
        page.times.append(o["LastModified"].isoformat())
        etag = o.get("ETag")
        page.etags.append(etag.strip('"') if etag else etag)
        page.algos.append(tuple(str(a).lower() for a in o.get("ChecksumAlgorithm", [])))
    page.prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
    return page


def pages(store: S3Store, prefix: str, *, start_after: str | None = None) -> Iterator[Page]:
    """The ListObjectsV2 pages of ``prefix`` (full keys, decoded), read from the raw XML."""
    return _Lister(store).pages(prefix, start_after=start_after)


def listing_time(value: str) -> datetime:
    """A listing's LastModified as an aware UTC datetime (botocore's reading of anything
    that is not plain ISO 8601 with a zone)."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        from botocore.utils import parse_timestamp

        t = parse_timestamp(value)
    return t.astimezone(UTC)


@dataclass
class _Rows:
    """Selected rows, store-relative keys."""

    keys: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    etags: list[str | None] = field(default_factory=list)

    def add(self, page: Page, plen: int, reserved: str, *, nested_only: bool = False,
            lo: str | None = None, hi: str | None = None) -> None:
        """Append the page's rows under the store prefix, ``_cleanup/`` and the prefix
        itself left out; ``nested_only``: only keys with a ``/`` after the prefix;
        ``lo``/``hi``: only keys in ``[lo, hi)``."""
        keys, sizes, times, etags = self.keys, self.sizes, self.times, self.etags
        pk = page.keys
        if not pk:
            return
        # The usual page: no key to leave out (checked at C speed), all rows taken.
        if (min(map(len, pk)) > plen and "\n" + reserved not in "\n" + "\n".join(pk)
                and (lo is None or min(pk) >= lo) and (hi is None or max(pk) < hi)):
            rel = [k[plen:] for k in pk]
            if not nested_only or all("/" in k for k in rel):
                keys += rel
                sizes += page.sizes
                times += page.times
                etags += page.etags
                return
        for i, full in enumerate(pk):
            if len(full) <= plen or full.startswith(reserved):
                continue
            if nested_only and "/" not in full[plen:]:
                continue
            if (lo is not None and full < lo) or (hi is not None and full >= hi):
                continue
            keys.append(full[plen:])
            sizes.append(page.sizes[i])
            times.append(page.times[i])
            etags.append(page.etags[i])

    def __len__(self) -> int:
        return len(self.keys)


def _record_batch(rows: _Rows) -> pa.RecordBatch:
    import pyarrow as pa

    from cleanup.formats import inventory_schema

    n = len(rows)
    ts = pa.timestamp("us", tz="UTC")
    times = pa.array(rows.times, pa.string())
    try:
        lm = times.cast(ts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        from botocore.utils import parse_timestamp  # botocore's own reading of the value

        lm = pa.array([parse_timestamp(t) for t in rows.times], ts)
    try:
        size = pa.array(rows.sizes, pa.string()).cast(pa.int64())
    except pa.ArrowInvalid:
        raise StoreError(f"ListObjectsV2 returned a size that is not an integer "
                         f"(one of {sorted(set(rows.sizes))[:3]})") from None
    return pa.RecordBatch.from_arrays(
        [pa.array(rows.keys, pa.string()), size, lm, pa.array(rows.etags, pa.string()),
         pa.nulls(n, pa.string()), pa.nulls(n, pa.binary())], schema=inventory_schema())


def _ranges(prefixes: list[str], parts: int, must_cut: str | None = None
            ) -> list[tuple[str | None, str | None]]:
    """``parts`` contiguous ranges ``[lo, hi)`` (None: unbounded) over the whole key space,
    cut at folder names, so that each holds about as many folders; one range starts at
    ``must_cut`` if given."""
    prefixes = sorted(prefixes)
    parts = max(1, min(parts, len(prefixes)))
    cuts = [prefixes[len(prefixes) * i // parts] for i in range(1, parts)]
    cuts = sorted(set(cuts) | ({must_cut} if must_cut else set()))
    bounds: list[str | None] = [None, *cuts, None]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def iter_batches(store: S3Store, parallel: int | None = None) -> Iterator[pa.RecordBatch]:
    """The store's listing as inventory record batches (``BATCH_ROWS`` rows at most),
    each key exactly once; memory is bounded by a few pages per worker and one batch."""
    lister = _Lister(store)
    root = store.ref.prefix
    plen = len(root)
    reserved = root + RESERVED_PREFIX
    n_workers = workers() if parallel is None else max(1, parallel)
    rows = _Rows()
    if n_workers == 1:
        for page in lister.pages(root):
            rows.add(page, plen, reserved)
            if len(rows) >= BATCH_ROWS:
                yield _record_batch(rows)
                rows = _Rows()
        if len(rows):
            yield _record_batch(rows)
        return
    # Discovery: the objects directly under the prefix, and the top-level folders.
    folders: list[str] = []
    skip_reserved = False
    for page in lister.pages(root, delimiter="/"):
        rows.add(page, plen, reserved)
        folders += [p for p in page.prefixes if p != reserved and p.startswith(root)]
        skip_reserved = skip_reserved or reserved in page.prefixes
        if len(rows) >= BATCH_ROWS:
            yield _record_batch(rows)
            rows = _Rows()
    if folders:
        yield from _split(lister, root, plen, reserved, folders, n_workers, rows,
                          skip_reserved)
    elif len(rows):
        yield _record_batch(rows)


def _split(lister: _Lister, root: str, plen: int, reserved: str, folders: list[str],
           n_workers: int, rows: _Rows, skip_reserved: bool) -> Iterator[pa.RecordBatch]:
    """List the nested keys range by range, ``n_workers`` at a time; pages come back
    through a bounded queue so that memory stays bounded. ``skip_reserved``: a range
    starts at ``_cleanup/`` and skips it (a large quarantine is not listed at all)."""
    ranges = _ranges([*folders, reserved] if skip_reserved else folders,
                     n_workers + (1 if skip_reserved else 0), must_cut=reserved
                     if skip_reserved else None)
    pages: queue.Queue[tuple[int, Page | None]] = queue.Queue(maxsize=4 * n_workers)
    stop = threading.Event()

    def run(i: int, lo: str | None, hi: str | None) -> None:
        last = ""
        try:
            # StartAfter just below lo: lo ends with '/', lo[:-1] sorts right before it;
            # from _cleanup/, after (nearly) every key under it: none is listed anyway.
            after = (reserved + "\U0010ffff" if lo == reserved
                     else lo[:-1] if lo else None)
            for page in lister.pages(root, start_after=after):
                if stop.is_set():
                    return
                for k in page.keys:
                    if k <= last:
                        raise StoreError(f"{lister.store.ref.url}: the server listed "
                                         f"{k!r} after {last!r} (not in key order); set "
                                         "CLEANUP_S3_LIST_WORKERS=1 to list it sequentially")
                    last = k
                pages.put((i, page))
                if hi is not None and page.keys and page.keys[-1] >= hi:
                    return
        finally:
            pages.put((i, None))

    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="s3-list") as pool:
        futures: list[Future[None]] = [pool.submit(run, i, lo, hi)
                                       for i, (lo, hi) in enumerate(ranges)]
        try:
            running = len(ranges)
            while running:
                i, page = pages.get()
                if page is None:
                    running -= 1
                    futures[i].result()  # the worker's error, if it failed
                    continue
                lo, hi = ranges[i]
                rows.add(page, plen, reserved, nested_only=True, lo=lo, hi=hi)
                if len(rows) >= BATCH_ROWS:
                    yield _record_batch(rows)
                    rows = _Rows()
            for f in futures:
                f.result()
        finally:
            stop.set()
            while any(not f.done() for f in futures):  # unblock producers on a full queue
                try:
                    pages.get(timeout=0.05)
                except queue.Empty:
                    pass
    if len(rows):
        yield _record_batch(rows)
