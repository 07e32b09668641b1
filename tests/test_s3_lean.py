"""The per-object request path (cleanup.stores.s3_lean) against real servers: its SigV4
signatures are accepted for any key spelling (rclone serve s3 checks them), its answers
agree with boto3's, it goes through the proxy the environment names, retries 503
SlowDown, and wrong credentials or an unreachable endpoint are one-line usage errors."""

from __future__ import annotations

from datetime import UTC

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.errors import StoreError, UsageError
from cleanup.stores.base import ObjectInfo, quarantine_key
from cleanup.stores.s3 import S3Store
from tests.faultproxy import fault_proxy
from tests.servers import S3Server

pytestmark = pytest.mark.s3

PLAN = "ab" * 32
ODD = ["a b.bin", "ü/ß.bin", "x+y=z.bin", "p%41~q.bin", "q?r#s&t.bin",
       "semi;colon,comma'quote.bin", "日本/データ.bin", "tab\there.bin"]


def _store(server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch,
           endpoint: str | None = None) -> S3Store:
    import boto3

    from cleanup.stores import open_store

    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # credentials are cached there
    store = open_store(f"s3://{bucket}/data/", endpoint_url=endpoint or server.endpoint_url)
    assert isinstance(store, S3Store)
    return store


def _put(server: S3Server, bucket: str, keys: list[str]) -> None:
    c = server.client()
    for k in keys:
        c.put_object(Bucket=bucket, Key="data/" + k, Body=f"content of {k}".encode())


def _agrees(server: S3Server, store: S3Store, bucket: str, key: str) -> None:
    """HEAD, checksums and GET through the lean path equal boto3's own answers."""
    c = server.client()
    want = c.head_object(Bucket=bucket, Key="data/" + key)
    info = store._head(key)
    assert info is not None
    assert (info.size, info.etag) == (want["ContentLength"], want["ETag"].strip('"'))
    assert info.last_modified == want["LastModified"].astimezone(UTC)
    sums = store.checksums(key)
    assert sums is not None
    assert sums.size == info.size
    chunks = store.read_chunks(key, 4)
    assert chunks is not None
    assert b"".join(chunks) == f"content of {key}".encode()


def test_lean_requests_sign_every_key_spelling(s3_server: S3Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.bucket()
    _put(s3_server, bucket, ODD)
    store = _store(s3_server, bucket, monkeypatch)
    for k in ODD:
        _agrees(s3_server, store, bucket, k)
    assert store._head("absent.bin") is None
    assert store.checksums("absent.bin") is None
    assert store.read_chunks("absent.bin", 4) is None


key_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(key_chars, min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and not s.startswith("_cleanup")), min_size=1, max_size=3))
def test_lean_signatures_hold_for_generated_keys(rclone_server: S3Server,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 parts: list[str]) -> None:
    """rclone serve s3 verifies SigV4: any accepted key's HEAD and GET must agree."""
    key = "/".join(parts) + ".bin"
    bucket = rclone_server.bucket()
    _put(rclone_server, bucket, [key])
    _agrees(rclone_server, _store(rclone_server, bucket, monkeypatch), bucket, key)


def test_copies_and_restore_through_the_environment_proxy(
        moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_server.bucket()
    _put(moto_server, bucket, ["t/a.bin", "t/b.bin"])
    with fault_proxy(moto_server.endpoint_url, slowdown=0.0, drop=0.0) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.endpoint_url)
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        store = _store(moto_server, bucket, monkeypatch)
        objs = [o for o in store.iter_objects()]
        assert {o.key for o in objs} == {"t/a.bin", "t/b.bin"}
        assert store.quarantine(PLAN, objs) == {"t/a.bin": None, "t/b.bin": None}
        assert store._restore_copy(quarantine_key(PLAN, "t/a.bin"), "t/a.bin") == "restored"
        assert store.checksums("t/a.bin") is not None
        assert b"".join(store.read_chunks("t/a.bin", 8) or []) == b"content of t/a.bin"
    # boto3's listing, the lean copies (PUT), HEAD and GET all went through the proxy
    assert proxy.stats.methods["PUT"] >= 3
    assert proxy.stats.methods["HEAD"] >= 1
    assert proxy.stats.methods["GET"] >= 2


def test_slowdown_is_retried(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_server.bucket()
    keys = [f"t/{i}.bin" for i in range(12)]
    _put(moto_server, bucket, keys)
    with fault_proxy(moto_server.endpoint_url, slowdown=0.4, drop=0.0, seed=3,
                     methods=("HEAD", "GET", "PUT")) as proxy:
        store = _store(moto_server, bucket, monkeypatch, proxy.endpoint_url)
        objs = [ObjectInfo(k, len(f"content of {k}"), store._head(k).last_modified,  # type: ignore[union-attr]
                           None) for k in keys]
        assert all(v is None for v in store.quarantine(PLAN, objs).values())
    assert proxy.stats.slowdowns > 0
    live = {o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert {f"data/{quarantine_key(PLAN, k)}" for k in keys} <= live


def test_wrong_secret_is_a_usage_error(rclone_server: S3Server,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = rclone_server.bucket()
    _put(rclone_server, bucket, ["a.bin"])
    store = _store(rclone_server, bucket, monkeypatch)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    import boto3

    from cleanup.stores import open_store

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    bad = open_store(f"s3://{bucket}/data/", endpoint_url=rclone_server.endpoint_url)
    assert isinstance(bad, S3Store)
    with pytest.raises(UsageError, match="denied"):
        bad.checksums("a.bin")
    assert store.checksums("a.bin") is not None  # the right secret still works


def test_unreachable_endpoint_is_a_usage_error(moto_server: S3Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers import free_port

    store = _store(moto_server, "no-bucket", monkeypatch, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UsageError, match="cannot reach"):
        store.checksums("a.bin")


def test_a_missing_bucket_is_not_a_missing_key(moto_server: S3Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """GetObject's 404 NoSuchBucket is an error naming the key, never 'absent'."""
    store = _store(moto_server, "missing-bucket-x", monkeypatch)
    with pytest.raises(StoreError, match="GetObject k.bin failed.*NoSuchBucket"):
        store.read_chunks("k.bin", 4)


def test_a_bucket_in_another_region_names_the_region(moto_server: S3Server,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 answers a request signed for the wrong region with 301/400 and the bucket's
    region in ``x-amz-bucket-region``: a usage error naming the --region to pass (boto3
    would follow it; the lean path does not guess)."""
    from cleanup.stores.s3_lean import Reply

    store = _store(moto_server, moto_server.bucket(), monkeypatch)
    for status in (301, 400):
        with pytest.raises(UsageError, match="bucket is in region ap-south-1"):
            store.lean._judge("HEAD", "k", Reply(status, {"x-amz-bucket-region": "ap-south-1"}))
    same = Reply(400, {"x-amz-bucket-region": "us-east-1"})
    assert store.lean._judge("HEAD", "k", same) is same
