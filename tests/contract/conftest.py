"""Store factories for the conformance suite: each builds an empty store of one kind and
says, in :class:`Capabilities`, what that kind honours. Add a store by adding a factory
to :data:`FACTORIES` (and its row of capabilities); every contract test then runs on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cleanup.stores import open_store

if TYPE_CHECKING:
    from cleanup.stores.base import Store
    from tests.servers import AzureServer, GCSServer, S3Server


@dataclass(frozen=True)
class Capabilities:
    """What a store kind honours. A ``False`` is an expectation, not a skip: the suite
    asserts the documented fallback instead (e.g. the lock probe detecting it)."""

    #: put_if_absent refuses an existing key (If-None-Match: *; GCS ifGenerationMatch=0)
    conditional_create: bool
    #: quarantine's copy refuses a source changed since listing (x-amz-copy-source-if-match;
    #: Azure x-ms-source-if-match; GCS: the generation read with the planned MD5)
    conditional_copy: bool
    #: delete refuses a changed object (the ETag sent with DeleteObjects; Azure If-Match;
    #: GCS: the generation read with the planned MD5, as ifGenerationMatch)
    conditional_delete: bool
    #: delete and purge of an absent key say so ("missing", not counted); S3 deletes are
    #: idempotent and report success
    reports_missing: bool
    #: the server keeps versions when asked (PutBucketVersioning)
    versioning: bool
    #: a lookup (HEAD/GET/copy) of a key finds only that exact key; rclone serve s3 falls
    #: back to the other Unicode normalization form of a name when the exact one is absent
    exact_unicode_lookup: bool
    #: what region() reports for a store made by the factory
    region: str
    #: the listed etag is the content's hex MD5 (S3 single-part uploads, GCS); Azure's
    #: ETag is an opaque version tag that changes on every write
    md5_etag: bool = True


@dataclass
class StoreUnderTest:
    """A fresh store plus back doors that bypass the store: to seed and inspect objects
    the way another writer would."""

    name: str
    caps: Capabilities
    store: Store
    seed: Callable[[str, bytes], None]  # write an object at a store-relative key
    raw: Callable[[str], bytes | None]  # read an object at a store-relative key
    #: ask the server to keep versions (None: the kind has no such setting)
    enable_versioning: Callable[[], None] | None = None


def _local(tmp_path: Path, _request: pytest.FixtureRequest) -> StoreUnderTest:
    root = tmp_path / "store"
    root.mkdir()

    def seed(key: str, data: bytes) -> None:
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def raw(key: str) -> bytes | None:
        p = root / key
        return p.read_bytes() if p.is_file() else None

    caps = Capabilities(conditional_create=True, conditional_copy=True, conditional_delete=True,
                        reports_missing=True, versioning=False, exact_unicode_lookup=True,
                        region="local")
    return StoreUnderTest("local", caps, open_store(str(root)), seed, raw)


def _s3(server: S3Server, caps: Capabilities, request: pytest.FixtureRequest
        ) -> StoreUnderTest:
    import boto3

    monkeypatch = request.getfixturevalue("monkeypatch")
    for k, v in server.env().items():  # credentials the way the CLI finds them
        monkeypatch.setenv(k, v)
    # boto3's default session caches the first credentials it resolved in this process.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    bucket = server.bucket(None if caps.region == "us-east-1" else caps.region)
    client = server.client(caps.region)
    prefix = "data/"

    def seed(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=prefix + key, Body=data)

    def raw(key: str) -> bytes | None:
        try:
            body: bytes = client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    store = open_store(f"s3://{bucket}/{prefix}", endpoint_url=server.endpoint_url,
                       region=caps.region)
    # Outside the store's prefix: never listed, never touched.
    client.put_object(Bucket=bucket, Key=f"other-{uuid.uuid4().hex}", Body=b"outside")
    def enable_versioning() -> None:
        client.put_bucket_versioning(Bucket=bucket,
                                     VersioningConfiguration={"Status": "Enabled"})

    return StoreUnderTest(server.name, caps, store, seed, raw, enable_versioning)


def _moto(tmp_path: Path, request: pytest.FixtureRequest) -> StoreUnderTest:
    caps = Capabilities(conditional_create=True, conditional_copy=False,
                        conditional_delete=False, reports_missing=False, versioning=True,
                        exact_unicode_lookup=True, region="eu-west-1")
    return _s3(request.getfixturevalue("moto_server"), caps, request)


def _rclone(tmp_path: Path, request: pytest.FixtureRequest) -> StoreUnderTest:
    caps = Capabilities(conditional_create=False, conditional_copy=False,
                        conditional_delete=False, reports_missing=False, versioning=False,
                        exact_unicode_lookup=False, region="us-east-1")
    return _s3(request.getfixturevalue("rclone_server"), caps, request)


def _fake_gcs(tmp_path: Path, request: pytest.FixtureRequest) -> StoreUnderTest:
    """fake-gcs-server: honours ifGenerationMatch=0 on uploads but ignores the other
    preconditions (delete, rewrite); the store reads the generation first, so the
    documented outcomes hold (the server does not close the window in between)."""
    from google.api_core.exceptions import NotFound

    server: GCSServer = request.getfixturevalue("fake_gcs_server")
    client = server.client()
    name = server.bucket()
    bucket = client.bucket(name)
    prefix = "data/"

    def seed(key: str, data: bytes) -> None:
        bucket.blob(prefix + key).upload_from_string(data)

    def raw(key: str) -> bytes | None:
        try:
            body: bytes = bucket.blob(prefix + key).download_as_bytes(raw_download=True)
        except NotFound:
            return None
        return body

    def enable_versioning() -> None:
        b = client.get_bucket(name)
        b.versioning_enabled = True
        b.patch()

    bucket.blob(f"other-{uuid.uuid4().hex}").upload_from_string(b"outside")
    store = open_store(f"gs://{name}/{prefix}", endpoint_url=server.endpoint_url)
    caps = Capabilities(conditional_create=True, conditional_copy=True, conditional_delete=True,
                        reports_missing=True, versioning=True, exact_unicode_lookup=True,
                        region=server.location.lower())
    return StoreUnderTest("fake-gcs", caps, store, seed, raw, enable_versioning)


AZURE_REGION = "westeurope"  # declared: the blob API does not report an account's location


def _azurite(tmp_path: Path, request: pytest.FixtureRequest) -> StoreUnderTest:
    """Azurite: conditional headers honoured; no blob versioning."""
    from azure.core.exceptions import ResourceNotFoundError

    server: AzureServer = request.getfixturevalue("azurite_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for k, v in server.env().items():  # the account the way the CLI finds it
        monkeypatch.setenv(k, v)
    container = server.service().get_container_client(server.container())
    prefix = "data/"

    def seed(key: str, data: bytes) -> None:
        container.upload_blob(prefix + key, data, overwrite=True)

    def raw(key: str) -> bytes | None:
        try:
            body: bytes = container.download_blob(prefix + key).readall()
        except ResourceNotFoundError:
            return None
        return body

    container.upload_blob(f"other-{uuid.uuid4().hex}", b"outside")
    store = open_store(f"az://{container.container_name}/{prefix}",
                       endpoint_url=server.endpoint_url, region=AZURE_REGION)
    caps = Capabilities(conditional_create=True, conditional_copy=True, conditional_delete=True,
                        reports_missing=True, versioning=False, exact_unicode_lookup=True,
                        region=AZURE_REGION, md5_etag=False)
    return StoreUnderTest("azurite", caps, store, seed, raw)


Factory = Callable[[Path, pytest.FixtureRequest], StoreUnderTest]

# name -> factory. The s3 marker goes on the kinds that need a server.
FACTORIES: dict[str, Factory] = {"local": _local, "moto": _moto, "rclone": _rclone,
                                 "fake-gcs": _fake_gcs, "azurite": _azurite}
NEEDS_SERVER = {"moto", "rclone", "fake-gcs", "azurite"}


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.s3] if name in NEEDS_SERVER
                                     else []) for name in FACTORIES])
def sut(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    """Every store kind in :data:`FACTORIES`, fresh and empty for each test."""
    return FACTORIES[request.param](tmp_path, request)


@pytest.fixture
def plan_id() -> str:
    return uuid.uuid4().hex * 2
