"""Lean signed requests for S3's per-object hot paths (issues 17 and 18).

boto3 spends 1-3 ms of CPU on every call (parameter validation, the endpoint
ruleset, an event chain of dozens of handlers, response parsing into dicts). For a
listing page of 1,000 keys that is nothing; for one CopyObject, HeadObject or
GetObject per object it is most of the client's cost, and on a 2-core machine it is
CPU taken from the server too. This module sends those single-object requests
itself: Signature Version 4 over the request's own bytes, the same retry rule as the
rest (503 SlowDown, 500, dropped connections: exponential backoff with full jitter),
and answers as status, headers and the error code. The bytes travel through the boto3
client's own HTTP session (``http_session.send``): the same connection pool, proxies
(``HTTPS_PROXY``, ``NO_PROXY``, the client config), TLS verification and CA bundle
(``AWS_CA_BUNDLE``) and timeouts as every boto3 call.

Nothing about *where* a request goes is decided here: the URL of a bucket (virtual
host or path style, the endpoint ruleset, ``AWS_ENDPOINT_URL``), the signing region
and the credentials are those of the store's boto3 client. They are read once by
letting the client prepare one HeadObject and stopping it before it is sent
(``before-send``), so the lean path cannot disagree with boto3 about the target.
A bucket in another region than the client's is an error naming the region to pass
(boto3 would follow the redirect; this path does not guess).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import quote, urlsplit

from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import EndpointConnectionError, HTTPClientError

from cleanup.errors import StoreError, UsageError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: attempts per request, here and in the store's boto3 client (``max_attempts``)
MAX_ATTEMPTS = 10
#: error codes that mean the credentials or the policy refused a call (a usage error)
DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")
#: backoff: full jitter over min(CAP, BASE * 2**attempt) seconds
BASE, CAP = 0.05, 5.0
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                          "ThrottlingException"})
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")
_PROBE_KEY = "cleanup-lean-endpoint-probe"
_capturing = threading.local()


class _Captured(Exception):  # noqa: N818 - control flow, never escapes this module
    def __init__(self, url: str, authorization: str | None) -> None:
        super().__init__(url)
        self.url, self.authorization = url, authorization


def _capture(request: Any, **_kwargs: Any) -> None:
    """``before-send.s3.HeadObject``: in a thread that is probing, stop the prepared
    request before it is sent and hand back where it would have gone."""
    if getattr(_capturing, "on", False):
        auth = request.headers.get("Authorization")
        raise _Captured(request.url, auth.decode() if isinstance(auth, bytes) else auth)


@dataclass(frozen=True)
class Reply:
    """One answer: status, headers (case-insensitive) and body (empty for HEAD)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self._embedded_error()

    def _embedded_error(self) -> bool:
        # CopyObject may answer 200 and then report an error in the body (S3 does).
        return self.status == 200 and b"<Error>" in self.body[:512]

    @property
    def code(self) -> str:
        """The S3 error code (``NoSuchKey``, ``PreconditionFailed``...), else the status
        as text (a HEAD's error has no body: ``404``, ``412``, ``403``)."""
        m = _CODE.search(self.body[:4096]) if self.body else None
        return m.group(1).decode("utf-8", "replace") if m else str(self.status)

    @property
    def message(self) -> str:
        m = _MESSAGE.search(self.body[:4096]) if self.body else None
        text = m.group(1).decode("utf-8", "replace") if m else ""
        return f"{self.code}: {text}".strip().rstrip(":")

    def header(self, name: str) -> str:
        """A header the answer must have (a store error if it has not)."""
        value = self.headers.get(name)
        if value is None:
            raise StoreError(f"an S3 answer ({self.status}) has no {name} header")
        return value

    def time(self, name: str = "last-modified") -> datetime:
        value = self.header(name)
        try:
            return parsedate_to_datetime(value).astimezone(UTC)
        except (TypeError, ValueError):
            raise StoreError(f"an S3 answer has an unreadable {name}: {value!r}") from None


class LeanS3:
    """Signed single-object requests to one bucket, on the boto3 client's endpoint,
    region, credentials and HTTP session. Thread-safe."""

    def __init__(self, client: Any, bucket: str, *, what: str) -> None:
        self.what = what
        self.bucket = bucket
        url, auth = self._probe(client, bucket)
        if not url.endswith("/" + _PROBE_KEY):
            raise StoreError(f"{what}: unexpected request URL {url!r} for a HeadObject")
        parts = urlsplit(url[:-len(_PROBE_KEY)])
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._path = parts.path  # "/bucket/" (path style) or "/" (virtual host)
        self._region = None
        if auth is not None:
            m = re.search(r"Credential=[^/]*/\d{8}/([^/]+)/s3/aws4_request", auth)
            if m is None:
                raise StoreError(f"{what}: the S3 client does not sign with Signature V4")
            self._region = m.group(1)
        self._credentials = client._request_signer._credentials  # noqa: SLF001
        self._keys: dict[tuple[str, str], bytes] = {}
        self._session = client._endpoint.http_session  # noqa: SLF001

    @staticmethod
    def _probe(client: Any, bucket: str) -> tuple[str, str | None]:
        events = client.meta.events
        events.register_first("before-send.s3.HeadObject", _capture,
                              unique_id="cleanup-lean-probe")
        _capturing.on = True
        try:
            client.head_object(Bucket=bucket, Key=_PROBE_KEY)
        except _Captured as cap:
            return cap.url, cap.authorization
        finally:
            _capturing.on = False
        raise StoreError("the S3 client sent a probe request it was asked to hold back")

    # --- requests ----------------------------------------------------------------------

    def url_path(self, key: str) -> str:
        """The request path of ``key`` (full key in the bucket), percent-encoded as S3's
        canonical URI wants it: everything but unreserved characters and ``/``."""
        return self._path + quote(key, safe="/~")

    def copy_source(self, key: str) -> str:
        """The ``x-amz-copy-source`` value for ``key`` of this bucket."""
        return quote(f"{self.bucket}/{key}", safe="/~")

    def head(self, key: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("HEAD", key, headers)

    def copy(self, key: str, source_key: str, headers: dict[str, str] | None = None) -> Reply:
        """CopyObject of ``source_key`` (this bucket) to ``key``, metadata copied."""
        h = {"x-amz-copy-source": self.copy_source(source_key),
             "x-amz-metadata-directive": "COPY", **(headers or {})}
        return self.request("PUT", key, h)

    def get_stream(self, key: str, chunk_size: int) -> tuple[Reply, Iterator[bytes] | None]:
        """GetObject: the reply (body not read) and, if it succeeded, its chunks."""
        resp = self._send("GET", key, {}, stream=True)
        raw = resp.raw
        if not 200 <= resp.status_code < 300:
            reply = Reply(resp.status_code, resp.headers, resp.content or b"")
            raw.release_conn()
            return self._judge("GET", key, reply), None

        def chunks() -> Iterator[bytes]:
            try:
                yield from raw.stream(chunk_size, decode_content=False)
            finally:
                raw.release_conn()

        return Reply(resp.status_code, resp.headers), chunks()

    def request(self, method: str, key: str, headers: dict[str, str] | None = None) -> Reply:
        """One request with retries; the reply of the last attempt. An access denial is
        a usage error (exit 2), as on boto3's path."""
        resp = self._send(method, key, headers or {}, stream=False)
        return self._judge(method, key, Reply(resp.status_code, resp.headers,
                                              resp.content or b""))

    def _judge(self, method: str, key: str, reply: Reply) -> Reply:
        """Denials and a bucket in another region are usage errors; the rest is the
        caller's to read."""
        if reply.status == 403 or reply.code in DENIED:
            raise UsageError(f"{self.what}: {method} {key} was denied ({reply.message})",
                             hint="check the credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID) "
                                  "and policy")
        self._check_region(reply)
        return reply

    def _check_region(self, reply: Reply) -> None:
        where = reply.headers.get("x-amz-bucket-region")
        if reply.status in (301, 307, 400) and where and where != self._region:
            raise UsageError(f"{self.what}: the bucket is in region {where}, the client "
                             f"signs for {self._region}", hint=f"pass --region {where}")

    def _send(self, method: str, key: str, headers: dict[str, str], *, stream: bool) -> Any:
        """The botocore ``AWSResponse`` of the last attempt (``stream``: body unread)."""
        path = self.url_path(key)
        for attempt in range(MAX_ATTEMPTS):
            h = {k.lower(): v for k, v in headers.items()}
            self._sign(method, path, h)
            request = AWSPreparedRequest(method, self._origin + path, cast(Any, h), None, stream)
            try:
                resp = self._session.send(request)
            except (HTTPClientError, BotoConnectionError) as exc:
                if attempt == 0 and isinstance(exc, EndpointConnectionError):
                    raise UsageError(f"cannot reach {self.what} at {self._origin}: {exc}",
                                     hint="check --endpoint-url (or AWS_ENDPOINT_URL) and "
                                          "the network") from None
                if attempt + 1 == MAX_ATTEMPTS:
                    raise StoreError(f"{self.what}: {method} {key} failed after "
                                     f"{MAX_ATTEMPTS} attempts ({exc})",
                                     hint="check --endpoint-url and the network") from None
            else:
                if not self._retryable(resp, stream) or attempt + 1 == MAX_ATTEMPTS:
                    return resp
                if stream:
                    resp.raw.drain_conn()
                    resp.raw.release_conn()
            time.sleep(random.uniform(0, min(CAP, BASE * 2 ** attempt)))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _retryable(resp: Any, stream: bool) -> bool:
        """A 5xx, or (unless streamed) an answer whose error code is a transient one,
        which includes a 200 whose body is an error (CopyObject)."""
        if resp.status_code in _RETRY_STATUS:
            return True
        if stream:
            return False
        reply = Reply(resp.status_code, resp.headers, resp.content or b"")
        return not reply.ok and reply.code in _RETRY_CODES

    # --- Signature Version 4 -----------------------------------------------------------

    def _sign(self, method: str, path: str, h: dict[str, str]) -> None:
        """Add the SigV4 headers to ``h`` (lower-case names; no query, empty body)."""
        h["host"] = self._host
        creds = self._credentials.get_frozen_credentials() if self._credentials else None
        if creds is None or self._region is None:
            return  # an unsigned client (anonymous access)
        amzdate = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        day = amzdate[:8]
        h["x-amz-date"] = amzdate
        h["x-amz-content-sha256"] = EMPTY_SHA256
        if creds.token:
            h["x-amz-security-token"] = creds.token
        names = sorted(h)
        canonical = "\n".join([
            method, path, "",
            "".join(f"{n}:{' '.join(h[n].split())}\n" for n in names),
            ";".join(names), EMPTY_SHA256])
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._key(creds.secret_key, day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                              f"SignedHeaders={';'.join(names)}, Signature={signature}")

    def _key(self, secret: str, day: str) -> bytes:
        cache = (secret, day)
        key = self._keys.get(cache)
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self._region or "", "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {cache: key}  # one day's key: an old one is never needed again
        return key
