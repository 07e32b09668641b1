"""The victim of tests/test_attacks.py: a store (a local directory or a moto_server
bucket) with a few tenants' objects, planned by alice with a short (overridden) buffer,
and the raw object access an insider with write rights has, bypassing cleanup.

Keys here are store-relative (``acme/t/0.parquet``, ``_cleanup/plans/...``) on both
kinds of store; :meth:`Victim.data` and :meth:`Victim.quarantined` show what a test
compares byte for byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cleanup.core.timeutil import format_time
from tests.conftest import Run, make_key
from tests.scenario import PERMISSIVE_FLOORS, Scenario, ok, wait_until
from tests.servers import S3Server

STORE_KINDS = ("local", "moto")
BUFFER = timedelta(seconds=1)
INTERNAL = [f"internal/t/{i}.parquet" for i in range(3)]
ACME = [f"acme/t/{i}.parquet" for i in range(8)]
GLOBEX = [f"globex/t/{i}.parquet" for i in range(4)]
OBJECTS = INTERNAL + ACME + GLOBEX
#: unreferenced and old enough: stage 0 (internal) and stage 1 (the rest)
STAGE0 = ["internal/t/0.parquet", "internal/t/1.parquet"]
STAGE1 = ["acme/t/0.parquet", "globex/t/0.parquet"]
ORPHANS = STAGE0 + STAGE1
REFERENCED = [k for k in OBJECTS if k not in ORPHANS]
#: written after the plan's snapshot, referenced by nothing: must survive everything
FRESH = "internal/t/fresh.parquet"


def run_here(args: Sequence[str], *, env: dict[str, str] | None = None,
             cwd: Path | None = None, timeout: float = 300) -> Run:
    """:func:`tests.inproc.run_cli` that keeps boto3's default session between commands
    (all of a victim's commands talk to one server with one set of credentials): a new
    session per command re-reads botocore's service models, seconds per test on S3."""
    import contextlib
    import io

    from cleanup.cli.main import main

    del timeout
    assert cwd is None
    saved = dict(os.environ)
    os.environ.update(env or {})
    os.environ.pop("CLEANUP_DEBUG", None)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Run(code, out.getvalue(), err.getvalue())


def body(key: str) -> bytes:
    return f"bytes of {key}\n".encode() * (1 + len(key) % 5)


class Victim(Scenario):
    """One store of ``kind`` ("local" or "moto"), its objects, and alice's plan on it."""

    def __init__(self, kind: str, tmp: Path, keys_dir: Path, server: S3Server | None = None,
                 *, signers: Sequence[str] = ("alice", "bob"),
                 floors: Sequence[str] = (), trust_mtime: bool = False) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        # "carol" in the session's keys_dir is tests/test_signoff.py's ECDSA key: the first
        # maker of a name decides its type, so the attacks use files of their own.
        keys = {n: make_key(keys_dir, f"attack-{n}") for n in signers}
        self.kind = kind
        self.keys_dir = keys_dir
        self.floors = list(floors)
        self.trust_mtime = trust_mtime
        if kind == "local":
            self.root = tmp / "store"
            self.root.mkdir()
            url, env = str(self.root), {}
            self.server = None
        else:
            assert server is not None
            self.server = server
            self.bucket = server.bucket()
            self.client = server.client()
            url, env = f"s3://{self.bucket}/data/", server.env()
        super().__init__(tmp, url, signers=keys, env=env, run=run_here)
        for k in OBJECTS:
            self.put(k, body(k))
        if trust_mtime:  # old enough at once (a listing that trusts mtime, as the demo's)
            old = datetime.now(UTC).timestamp() - 3 * 86400
            for k in OBJECTS:
                os.utime(self.root / k, (old, old))

    # ------------------------------------------------------------------ raw access

    def _s3(self, key: str) -> str:
        return "data/" + key

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "local":
            p = self.root / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=self._s3(key), Body=data)

    def get(self, key: str) -> bytes | None:
        if self.kind == "local":
            p = self.root / key
            return p.read_bytes() if p.is_file() else None
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._s3(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def delete(self, key: str) -> None:
        if self.kind == "local":
            (self.root / key).unlink(missing_ok=True)
        else:
            self.client.delete_object(Bucket=self.bucket, Key=self._s3(key))

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (store-relative), sorted; no temp files."""
        out = []
        if self.kind == "local":
            for p in self.root.rglob("*"):
                rel = p.relative_to(self.root).as_posix()
                if p.is_file() and rel.startswith(prefix) and not p.name.startswith("."):
                    out.append(rel)
        else:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self._s3(prefix)):
                out += [o["Key"][len("data/"):] for o in page.get("Contents", [])]
        return sorted(out)

    def objects(self, prefix: str) -> dict[str, bytes]:
        return {k: self.get(k) or b"" for k in self.keys(prefix)}

    def data(self) -> dict[str, bytes]:
        """The data objects (everything outside ``_cleanup/``) and their bytes."""
        return {k: v for k, v in self.objects("").items() if not k.startswith("_cleanup/")}

    def quarantined(self) -> dict[str, bytes]:
        """Quarantined objects of the plan, by their original key."""
        pre = f"_cleanup/quarantine/{self.plan_id}/"
        return {k[len(pre):]: v for k, v in self.objects(pre).items()}

    def ref(self, key: str) -> str:
        if self.kind == "local":
            return f"file://{self.root}/{key}"
        return f"s3a://{self.bucket}/data/{key}"

    # ------------------------------------------------------------------ plan and flow

    @property
    def plan_id(self) -> str:
        return self.current_plan_id()

    def pub(self, *parts: str, plan_id: str | None = None) -> str:
        """Store-relative key of a published record of the plan."""
        return "/".join(("_cleanup/plans", plan_id or self.plan_id, *parts))

    @contextmanager
    def environ(self) -> Iterator[None]:
        """The runner's environment for a library call in this process."""
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def open_store(self) -> Any:
        from cleanup.stores import open_store

        with self.environ():
            return open_store(self.store_url)

    def ensure_trust(self) -> str | None:
        """As :meth:`Scenario.ensure_trust`, with this victim's extra ``floors``."""
        if self.trust_root is not None:
            return self.trust_root
        r = ok(self.cli(["trust", "init", self.store_url, "--from", str(self.allowed_file),
                         "--people-run", *PERMISSIVE_FLOORS, *self.floors, "--json"]))
        digest = str(json.loads(r.out)["digest"])
        for name, key in self.signers.items():
            ok(self.cli(["trust", "sign", self.store_url, "--version", "1", "--signer", name,
                         "--key", str(key)]))
        self.trust_root = digest
        self.env["CLEANUP_TRUST_ROOT"] = digest
        return digest

    def wait_until_old_enough(self) -> None:
        """Every object older than taken_at - buffer + precision, by its own time."""
        if self.trust_mtime:
            return
        if self.kind == "local":
            newest = max(max(p.stat().st_mtime, p.stat().st_ctime)
                         for p in self.root.rglob("*") if p.is_file())
            newest_t = datetime.fromtimestamp(newest, UTC)
        else:
            newest_t = max(o["LastModified"] for page in self.client.get_paginator(
                "list_objects_v2").paginate(Bucket=self.bucket) for o in page.get("Contents", []))
        ready = newest_t + BUFFER + timedelta(seconds=1, milliseconds=50)
        wait_until(lambda: datetime.now(UTC) >= ready, timeout=60,
                   what="the objects to be older than the cutoff")

    def make_plan(self, *extra: str, out: str | None = None) -> Run:
        """List the store, snapshot the references (taken now) and plan: stage 0 holds the
        internal orphans, stage 1 the others."""
        if not self.inventory.exists():
            self.wait_until_old_enough()
            self.list_store(*(["--trust-mtime"] if self.trust_mtime else []))
            self.snapshot_refs(self.ref(k) for k in REFERENCED)
        return self.create_plan("--buffer", "1s", "--override-minimums", "--internal",
                                "internal", "--stages", "100%", "--max-delete-fraction", "0.5",
                                *extra, out=out)

    def ready(self, stage: int = 0) -> None:
        """bob approves, the live metadata is read, bob witnesses ``stage``'s execution."""
        self.approve_and_witness(stage)

    def stage0(self) -> None:
        """Stage 0 executed honestly: exactly its orphans moved to quarantine."""
        self.ready(0)
        res = json.loads(ok(self.execute(0)).out)
        assert res["removed"] == len(STAGE0), res
        assert sorted(self.quarantined()) == STAGE0

    def journal(self, stage: int) -> Path:
        return self.plan_dir / "journal" / f"stage-{stage}.jsonl"

    def backdate_journal(self, stage: int, delta: timedelta) -> None:
        """Every time in the local journal moved back by ``delta``, and a forged one-line
        journal of a complete stage beside it (the insider's edit)."""
        path = self.journal(stage)
        lines = []
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            doc["time"] = format_time(datetime.fromisoformat(doc["time"]) - delta)
            lines.append(json.dumps(doc, sort_keys=True, separators=(",", ":")))
        lines.append(json.dumps({"event": "stage-complete", "moved": len(STAGE0), "skipped": {},
                                 "time": format_time(datetime.now(UTC) - delta)},
                                sort_keys=True, separators=(",", ":")))
        path.write_text("\n".join(lines) + "\n")

    def purge(self, stage: int = 0, executor: str = "alice") -> Run:
        return self.cli(["purge", str(self.plan_dir), "--stage", str(stage), "--executor",
                         executor, "--key", str(self.signer_key(executor))])

    def audit_verify(self) -> Run:
        return self.cli(["audit", "verify", self.store_url])

    def wait_store_time(self, record: str, after: timedelta) -> None:
        """Until ``after`` has passed since the store recorded ``record`` (by our clock,
        which agrees with the store's on loopback)."""
        from cleanup.published import Published

        store = self.open_store()
        rec = Published(store, self.plan_id).get(*record.split("/"))
        assert rec is not None, record
        when = rec.recorded_at + after + timedelta(milliseconds=200)
        wait_until(lambda: datetime.now(UTC) >= when, timeout=60, what=f"{record} + {after}")
