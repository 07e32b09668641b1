"""Copy verification on GCS (fake-gcs-server: MD5 and CRC32C) and Azure (Azurite:
Content-MD5), against each other and against a local store: what the stores state is
compared, a mismatch is blocking, and --verify-content reads both sides."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cleanup.retire import KeyMap, Verifier
from cleanup.stores import open_store
from tests.servers import AzureServer, GCSServer

pytestmark = pytest.mark.s3  # needs servers started by the suite

DATA = {f"d/{i}.bin": f"payload {i} ".encode() * (i + 3) for i in range(4)}


def _items(data: dict[str, bytes]) -> list[tuple[str, int, str | None]]:
    return [(k, len(v), None) for k, v in sorted(data.items())]


def _local(tmp: Path, data: dict[str, bytes]) -> str:
    for k, v in data.items():
        p = tmp / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(v)
    return str(tmp)


def test_gcs_checksums_and_content(fake_gcs_server: GCSServer, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in fake_gcs_server.env().items():
        monkeypatch.setenv(k, v)
    client = fake_gcs_server.client()
    src, dst = fake_gcs_server.bucket(), fake_gcs_server.bucket()
    for k, data in DATA.items():
        client.bucket(src).blob(k).upload_from_string(data)
        body = data if k != "d/2.bin" else b"#" + data[1:]  # same size, other bytes
        if k != "d/3.bin":
            client.bucket(dst).blob(k).upload_from_string(body)
    source, target = open_store(f"gs://{src}/"), open_store(f"gs://{dst}/")
    got = {v.key: (v.reason, v.method) for v in Verifier(source, target).many(_items(DATA))}
    assert got == {"d/0.bin": ("verified", "md5"), "d/1.bin": ("verified", "md5"),
                   "d/2.bin": ("checksum differs (md5)", "md5"),
                   "d/3.bin": ("copy missing", None)}
    content = Verifier(source, target, verify_content=True).many(_items(DATA))
    assert [v.reason for v in content] == ["verified", "verified", "checksum differs (md5)",
                                           "copy missing"]
    # A local source against the GCS copies: local md5 meets GCS md5.
    local = open_store(_local(tmp_path / "src", DATA))
    reasons = {v.key: v.reason for v in Verifier(local, target).many(_items(DATA))}
    assert reasons["d/0.bin"] == "verified"
    assert reasons["d/2.bin"].startswith("checksum differs")


def test_azure_content_md5_and_content(azurite_server: AzureServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    svc = azurite_server.service()
    src, dst = azurite_server.container(), azurite_server.container()
    for k, data in DATA.items():
        svc.get_blob_client(src, k).upload_blob(data)
        if k != "d/3.bin":
            body = data if k != "d/2.bin" else b"#" + data[1:]
            svc.get_blob_client(dst, "copy/" + k).upload_blob(body)
    source, target = open_store(f"az://{src}/"), open_store(f"az://{dst}/")
    verifier = Verifier(source, target, KeyMap.parse(["d/=copy/d/"]))
    got = {x.key: (x.reason, x.method) for x in verifier.many(_items(DATA))}
    assert got["d/0.bin"] == ("verified", "md5")  # Put Blob stores the bytes' MD5
    local = open_store(_local(tmp_path / "src", DATA))
    stated = target.checksums("copy/d/0.bin")  # type: ignore[attr-defined]
    assert stated.sums["md5"] == hashlib.md5(DATA["d/0.bin"]).hexdigest()  # noqa: S324
    reasons = {x.key: x.reason for x in Verifier(local, target, KeyMap.parse(["d/=copy/d/"]))
               .many(_items(DATA))}
    assert reasons["d/1.bin"] == "verified"
    assert got["d/2.bin"] == ("checksum differs (md5)", "md5")
    assert got["d/3.bin"] == ("copy missing", None)
    content = Verifier(source, target, KeyMap.parse(["d/=copy/d/"]), verify_content=True)
    assert [x.reason for x in content.many(_items(DATA))] == [
        "verified", "verified", "checksum differs (md5)", "copy missing"]
