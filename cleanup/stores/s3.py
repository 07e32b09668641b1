"""S3 (and S3-compatible) store through boto3.

Listings come from ListObjectsV2, whose LastModified is truncated to whole
seconds: precision 1 s (I2). ETags are stored without their quotes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup.core.paths import RESERVED_PREFIX, StoreRef
from cleanup.errors import StoreError, UsageError
from cleanup.stores.base import ClockProbe, ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def make_client(endpoint_url: str | None = None, region: str | None = None) -> S3Client:
    """A boto3 S3 client; endpoint and region fall back to the usual AWS environment."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"max_attempts": 10, "mode": "adaptive"},
        s3={"addressing_style": "path"} if endpoint_url else {},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=cfg)


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
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
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

    def probe_clock(self) -> ClockProbe:
        key = f"{self.ref.prefix}{RESERVED_PREFIX}clock/probe-{uuid.uuid4().hex}"
        before = datetime.now(UTC)
        self._call("PutObject (clock probe)", self.client.put_object,
                   Bucket=self.ref.bucket, Key=key, Body=b"clock probe\n")
        after = datetime.now(UTC)
        try:
            head = self._call("HeadObject (clock probe)", self.client.head_object,
                              Bucket=self.ref.bucket, Key=key)
        finally:
            self._call("DeleteObject (clock probe)", self.client.delete_object,
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
