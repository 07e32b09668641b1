"""Retirement and --require-copy-in against moto_server: a source bucket in eu-west-1, a
target in eu-central-1 (and one in us-east-1 for the residency refusal). Copies with
matching and mismatching size and SHA256, missing copies, multipart ETags and
composite checksums (no comparable checksum: blocking, content-verified only with
--verify-content), a copy rewritten between plan and execute (halt, exit 5, nothing of
the batch touched)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, assert_one_line_error, make_key
from tests.scenario import Scenario, ok, wait_until
from tests.servers import S3Server

pytestmark = pytest.mark.s3

SRC, DST = "eu-west-1", "eu-central-1"
PART = 5 * 1024 * 1024


def _body(i: int, size: int = 64) -> bytes:
    return (f"object {i:04d} ".encode() * (size // 12 + 1))[:size]


def _multipart(c: Any, bucket: str, key: str, data: bytes) -> None:
    mp = c.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    parts = []
    for n, off in enumerate(range(0, len(data), PART), start=1):
        r = c.upload_part(Bucket=bucket, Key=key, UploadId=mp["UploadId"], PartNumber=n,
                          Body=data[off:off + PART], ChecksumAlgorithm="SHA256")
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=mp["UploadId"],
                                MultipartUpload={"Parts": parts})


class S3Retire(Scenario):
    BUFFER = timedelta(seconds=1)

    def __init__(self, server: S3Server, tmp: Path, keys_dir: Path,
                 target_region: str = DST) -> None:
        self.server = server
        self.src_bucket, self.dst_bucket = server.bucket(SRC), server.bucket(target_region)
        self.target_region = target_region
        env = {**server.env(), "AWS_DEFAULT_REGION": SRC}
        super().__init__(tmp, f"s3://{self.src_bucket}/", env=env, signers={
            "alice": make_key(keys_dir, "alice"), "bob": make_key(keys_dir, "bob")})
        self.src_c, self.dst_c = server.client(SRC), server.client(target_region)
        self.target = f"s3://{self.dst_bucket}/"

    def put(self, key: str, data: bytes, *, copy: bytes | None = None,
            algo: str = "SHA256") -> None:
        self.src_c.put_object(Bucket=self.src_bucket, Key=key, Body=data,
                              ChecksumAlgorithm=algo)  # type: ignore[arg-type]
        if copy is not None:
            self.dst_c.put_object(Bucket=self.dst_bucket, Key=key, Body=copy,
                                  ChecksumAlgorithm="SHA256")

    def wait_old(self) -> None:
        """Until every object is older than now - buffer + precision (no fixed sleep)."""
        newest = max(o["LastModified"] for o in self.src_c.list_objects_v2(
            Bucket=self.src_bucket).get("Contents", []))
        ready = newest + self.BUFFER + timedelta(seconds=1, milliseconds=50)
        wait_until(lambda: datetime.now(UTC) >= ready, timeout=60, what="old enough")

    def plan(self, *extra: str, mode: str = "--retire-to") -> Run:
        self.wait_old()
        self.list_store()
        self.ensure_trust()
        snap = ["--snapshot", str(self.snapshot)] if mode != "--retire-to" else []
        return self.cli(["plan", "--store", self.store_url, "--inventory", str(self.inventory),
                         *snap, "-o", str(self.plan_dir), "--author", "alice",
                         "--key", str(self.signer_key("alice")), *self.reconcile_args,
                         "--buffer", "1s", "--override-minimums", "--internal", "internal",
                         "--stages", "100%", "--max-delete-fraction", "1",
                         mode, self.target, "--allowed-regions",
                         f"{self.store_url}={SRC},{DST}", "--allowed-regions",
                         f"{self.target}={self.target_region}", "--json", *extra])

    def run_stage0(self) -> Run:
        ok(self.approve("bob"))
        self.snapshot_live(["elsewhere/unrelated.bin"])
        self.execute(0)  # publishes the challenge (exit 4)
        ok(self.cli(["witness", str(self.plan_dir), "--stage", "0", "--action", "execute",
                     "--signer", "bob", "--key", str(self.signer_key("bob"))]))
        return self.execute(0)

    def source_keys(self) -> set[str]:
        return {o["Key"] for o in self.src_c.list_objects_v2(
            Bucket=self.src_bucket).get("Contents", []) if not o["Key"].startswith("_cleanup/")}


def test_retire_on_s3_verifies_sha256_and_blocks_the_rest(moto_server: S3Server,
                                                          tmp_path: Path,
                                                          keys_dir: Path) -> None:
    w = S3Retire(moto_server, tmp_path, keys_dir)
    for i in range(4):
        w.put(f"internal/ok{i}.bin", _body(i), copy=_body(i))
    w.put("internal/size.bin", _body(10), copy=_body(10)[:-1])
    w.put("internal/sum.bin", _body(11), copy=b"#" + _body(11)[1:])
    w.put("internal/missing.bin", _body(12))
    # Multipart source (ETag "...-2", COMPOSITE SHA256): nothing comparable with the
    # single-part copy's SHA256 and MD5, so blocking without --verify-content.
    big = _body(13, PART + 100)
    _multipart(w.src_c, w.src_bucket, "internal/multi.bin", big)
    w.dst_c.put_object(Bucket=w.dst_bucket, Key="internal/multi.bin", Body=big,
                       ChecksumAlgorithm="SHA256")
    out = json.loads(ok(w.plan()).out)["copies"]
    assert set(w.manifest()) == {f"internal/ok{i}.bin" for i in range(4)}
    assert out["methods"] == {"sha256": 4}
    assert out["blocking_reasons"] == {"copy missing": 1, "size differs": 1,
                                       "checksum differs": 1, "no comparable checksum": 1}
    plan = w.read_plan()
    assert (plan["region"], plan["copies"]["target_region"]) == (SRC, DST)
    shown = " ".join(ok(w.cli(["show", w.plan_dir.as_posix()])).out.split())
    assert f"deletes from {w.store_url} in {SRC} after verifying copies in {w.target} in " \
           f"{DST}" in shown


def test_verify_content_hashes_what_checksums_cannot_compare(moto_server: S3Server,
                                                             tmp_path: Path,
                                                             keys_dir: Path) -> None:
    w = S3Retire(moto_server, tmp_path, keys_dir)
    big = _body(1, PART + 10)
    _multipart(w.src_c, w.src_bucket, "internal/multi.bin", big)
    w.dst_c.put_object(Bucket=w.dst_bucket, Key="internal/multi.bin", Body=big)
    other = _body(2, PART + 10)
    _multipart(w.src_c, w.src_bucket, "internal/multi-bad.bin", other)
    w.dst_c.put_object(Bucket=w.dst_bucket, Key="internal/multi-bad.bin",
                       Body=other[:-1] + b"!")
    w.put("internal/plain.bin", _body(3), copy=_body(3))
    out = json.loads(ok(w.plan("--verify-content")).out)["copies"]
    assert set(w.manifest()) == {"internal/multi.bin", "internal/plain.bin"}
    assert out["methods"] == {"content-sha256": 2}
    assert out["blocking_examples"] == [["internal/multi-bad.bin", "content differs"]]


def test_copy_rewritten_after_the_plan_halts_on_s3(moto_server: S3Server, tmp_path: Path,
                                                   keys_dir: Path) -> None:
    w = S3Retire(moto_server, tmp_path, keys_dir)
    keys = [f"internal/k{i}.bin" for i in range(5)]
    for i, k in enumerate(keys):
        w.put(k, _body(i), copy=_body(i))
    ok(w.plan())
    assert set(w.manifest()) == set(keys)
    w.dst_c.put_object(Bucket=w.dst_bucket, Key=keys[2], Body=b"?" * len(_body(2)))
    r = w.run_stage0()
    assert_one_line_error(r, 5, "I11 recoverable", keys[2])
    assert w.source_keys() == set(keys)  # nothing of the batch touched


def test_retire_on_s3_executes(moto_server: S3Server, tmp_path: Path, keys_dir: Path) -> None:
    w = S3Retire(moto_server, tmp_path, keys_dir)
    keys = [f"internal/k{i}.bin" for i in range(5)]
    for i, k in enumerate(keys):
        w.put(k, _body(i), copy=_body(i))
    w.put("internal/nocopy.bin", _body(9))
    ok(w.plan())
    res = json.loads(ok(w.run_stage0()).out)
    assert res["removed"] == 5
    assert w.source_keys() == {"internal/nocopy.bin"}


def test_retire_to_a_us_bucket_is_refused(moto_server: S3Server, tmp_path: Path,
                                          keys_dir: Path) -> None:
    w = S3Retire(moto_server, tmp_path, keys_dir, target_region="us-east-1")
    w.put("internal/a.bin", _body(1), copy=_body(1))
    r = w.plan()
    assert_one_line_error(r, 3, "I13 residency", "us-east-1")
    assert not w.plan_dir.exists() or not any(w.plan_dir.iterdir())


@pytest.mark.parametrize("strict", [False, True])
def test_require_copy_in_on_s3(moto_server: S3Server, tmp_path: Path, keys_dir: Path,
                               strict: bool) -> None:
    w = S3Retire(moto_server, tmp_path, keys_dir)
    w.put("internal/live.bin", _body(0), copy=_body(0))
    for i in range(1, 4):
        w.put(f"internal/orphan{i}.bin", _body(i), copy=_body(i))
    w.put("internal/orphan-nocopy.bin", _body(7))
    w.wait_old()
    w.snapshot_refs(["internal/live.bin"])
    r = w.plan(*(["--strict"] if strict else []), mode="--require-copy-in")
    if strict:
        assert_one_line_error(r, 3, "I11 recoverable", "orphan-nocopy.bin")
        return
    out = json.loads(ok(r).out)["copies"]
    assert set(w.manifest()) == {f"internal/orphan{i}.bin" for i in range(1, 4)}
    assert (out["verified"], out["blocking"]) == (3, 1)


def test_checksum_listed_compares_md5_etags_from_listings(moto_server: S3Server,
                                                          tmp_path: Path,
                                                          keys_dir: Path) -> None:
    """``--checksum listed``: pairs that both state SHA256 are compared by the MD5 ETags
    their listings state (no HEAD); a one-byte difference still blocks; the policy is
    signed with the plan, shown, and re-applied by execution's per-batch re-check."""
    w = S3Retire(moto_server, tmp_path, keys_dir)
    keys = [f"internal/k{i}.bin" for i in range(4)]
    for i, k in enumerate(keys):
        w.put(k, _body(i), copy=_body(i))
    w.put("internal/sum.bin", _body(11), copy=b"#" + _body(11)[1:])
    out = json.loads(ok(w.plan("--checksum", "listed")).out)["copies"]
    assert set(w.manifest()) == set(keys)
    assert out["methods"] == {"md5": 4}
    assert out["blocking_examples"] == [["internal/sum.bin", "checksum differs (md5)"]]
    assert w.read_plan()["copies"]["checksum"] == "listed"
    shown = " ".join(ok(w.cli(["show", w.plan_dir.as_posix()])).out.split())
    assert "copies compared by the checksums both listings state" in shown
    w.dst_c.put_object(Bucket=w.dst_bucket, Key=keys[1], Body=b"?" * len(_body(1)),
                       ChecksumAlgorithm="SHA256")
    r = w.run_stage0()
    assert_one_line_error(r, 5, "I11 recoverable", keys[1])
    assert w.source_keys() == {*keys, "internal/sum.bin"}  # nothing of the batch touched

