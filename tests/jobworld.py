"""A world for ``cleanup run`` tests: two layers (two moto_server buckets), references in
PostgreSQL, a runner principal ``ci`` and two people, bob and carol, each on their own
"machine" (a working directory of their own: their plan copies never meet the
runner's), and a local HTTP server that collects the job's notifications.

The runner is always a real process (it is SIGKILLed); the people's commands run in this
process (:mod:`tests.inproc`) with their own working directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import Run, make_key
from tests.inproc import run_cli
from tests.scenario import PERMISSIVE_FLOORS, allowed_signers_text, ok, wait_until
from tests.servers import S3Server

TENANTS = ("internal", "acme", "globex")
LAYERS = ("lake", "wh")
PEOPLE = ("bob", "carol")


def body(layer: str, key: str) -> bytes:
    return f"{layer}:{key}\n".encode() * (1 + len(key) % 4)


class Hooks:
    """A webhook receiver on 127.0.0.1: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        received = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length", "0"))
                try:
                    received.append(json.loads(self.rfile.read(n)))
                except ValueError:
                    received.append({"event": "?"})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kinds(self) -> set[str]:
        return {str(e.get("event")) for e in self.events}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Machine:
    """A person's own machine: a working directory and their plan copies in it."""

    name: str
    root: Path
    key: Path
    plans: dict[str, Path] = field(default_factory=dict)


@dataclass
class Layer:
    name: str
    bucket: str
    url: str
    trust_root: str = ""
    keys: list[str] = field(default_factory=list)
    referenced: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[str]:
        return sorted(k for k in self.keys if k not in self.referenced)


class JobWorld:
    def __init__(self, tmp: Path, keys_dir: Path, server: S3Server, pg_url: str,
                 objects: int = 12, hooks: Hooks | None = None,
                 layers: Sequence[str] = LAYERS) -> None:
        self.tmp, self.server, self.pg = tmp, server, pg_url
        self.client = server.client()
        self.env = server.env()
        self.keys = {n: make_key(keys_dir, f"job-{n}") for n in ("ci", *PEOPLE)}
        self.allowed = tmp / "allowed_signers"
        self.allowed.write_text(allowed_signers_text(self.keys))
        self.runner_dir = tmp / "runner"
        self.runner_dir.mkdir()
        self.people = {n: Machine(n, tmp / f"machine-{n}", self.keys[n]) for n in PEOPLE}
        for m in self.people.values():
            m.root.mkdir()
        self.hooks = hooks
        self.layers = {n: self._layer(n, objects) for n in layers}
        self.original = {n: self.data(n) for n in layers}
        self._references()

    # ------------------------------------------------------------------ setup

    def _layer(self, name: str, n: int) -> Layer:
        bucket = self.server.bucket()
        prefix = "data/" if name == "lake" else "warehouse/"
        layer = Layer(name, bucket, f"s3://{bucket}/{prefix}")
        for i in range(n):
            key = f"{TENANTS[i % len(TENANTS)]}/t/part-{i:03d}.parquet"
            self.client.put_object(Bucket=bucket, Key=prefix + key, Body=body(name, key))
            layer.keys.append(key)
            if i % 4 != 1:  # one in four an orphan, of every tenant in turn
                layer.referenced.append(key)
        r = ok(self.cli(["trust", "init", layer.url, "--from", str(self.allowed),
                         "--people-run", *PERMISSIVE_FLOORS, "--floor", "max_delete_fraction=0.5",
                         "--json"]))
        layer.trust_root = str(json.loads(r.out)["digest"])
        for who, key_path in self.keys.items():
            ok(self.cli(["trust", "sign", layer.url, "--version", "1", "--signer", who,
                         "--key", str(key_path)]))
        return layer

    def _references(self) -> None:
        import psycopg

        with psycopg.connect(self.pg, autocommit=True) as c:
            c.execute("CREATE TABLE refs (layer text, path text)")
            for la in self.layers.values():
                with c.cursor() as cur:
                    cur.executemany("INSERT INTO refs VALUES (%s, %s)",
                                    [(la.name, f"s3a://{la.bucket}/{la.url.split('/', 3)[3]}{k}")
                                     for k in la.referenced])

    def wait_old_enough(self) -> None:
        """Every object older than the cutoff (taken_at - 1s buffer, 1s precision)."""
        newest = max(o["LastModified"] for la in self.layers.values()
                     for o in self.client.list_objects_v2(Bucket=la.bucket).get("Contents", []))
        ready = newest + timedelta(seconds=2, milliseconds=100)
        wait_until(lambda: datetime.now(UTC) >= ready, timeout=30, what="old enough objects")

    def job_text(self, name: str = "nightly", layers: Sequence[str] | None = None,
                 webhooks: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
        lines = ['runner = "ci"', f'runner_key = "{self.keys["ci"]}"',
                 f'work_dir = "{self.runner_dir / ".cleanup" / name}"',
                 'internal = ["internal"]', 'stages = "100%"', 'buffer = "1s"', 'hold = "0s"',
                 "override_minimums = true", "batch_size = 2", *extra, "",
                 "[policy]", "min_approvals = 2", "max_delete_fraction = 0.5",
                 'retention = "0s"', "",
                 "[watchdog]", "watch_every_batches = 10", 'on_failure = "restore"', "",
                 "[notify]", f"webhooks = {json.dumps(list(webhooks))}", "stdout = true",
                 'link = "https://ci.example/plan.md"', ""]
        for n in layers or list(self.layers):
            la = self.layers[n]
            lines += ["[[layers]]", f'name = "{n}"', f'store = "{la.url}"',
                      f'trust_root = "{la.trust_root}"', "[layers.inventory]",
                      'kind = "listing"', "[[layers.references]]", f'source = "{self.pg}"',
                      f"query = \"SELECT path FROM refs WHERE layer = '{n}'\"", ""]
        return "\n".join(lines)

    def write_job(self, name: str = "nightly", layers: Sequence[str] | None = None,
                  webhooks: Sequence[str] = (), extra: Sequence[str] = ()) -> Path:
        jobs = self.runner_dir / "jobs"
        jobs.mkdir(exist_ok=True)
        path = jobs / f"{name}.toml"
        path.write_text(self.job_text(name, layers, webhooks, extra))
        return path

    # ------------------------------------------------------------------ commands

    def cli(self, args: Sequence[str], cwd: Path | None = None) -> Run:
        return run_cli(list(args), env=self.env, cwd=cwd)

    def runner(self, job: str = "nightly", *extra: str,
               kill_after: float | None = None) -> Run | None:
        """``cleanup run JOB --json`` as a real process in the runner's directory; with
        ``kill_after``, SIGKILLed after that many seconds (None: it was killed)."""
        env = {**os.environ, **self.env}
        env.pop("CLEANUP_DEBUG", None)
        p = subprocess.Popen([sys.executable, "-m", "cleanup", "run", job, "--json", *extra],
                             cwd=self.runner_dir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=kill_after if kill_after is not None else 120)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.communicate()
            return None
        return Run(p.returncode, out, err)

    def plan_copy(self, who: str, layer: str, plan_id: str) -> Path:
        m = self.people[who]
        if plan_id not in m.plans:
            target = m.root / f"{layer}-{plan_id[:12]}"
            ok(self.cli(["fetch", self.layers[layer].url, plan_id, "-o", str(target)],
                        cwd=m.root))
            m.plans[plan_id] = target
        return m.plans[plan_id]

    def approve(self, who: str, layer: str, plan_id: str) -> None:
        m = self.people[who]
        ok(self.cli(["approve", str(self.plan_copy(who, layer, plan_id)), "--signer", who,
                     "--key", str(m.key), "--yes"], cwd=m.root))

    def witness(self, who: str, layer: str, plan_id: str, stage: int, action: str) -> Run:
        m = self.people[who]
        return self.cli(["witness", str(self.plan_copy(who, layer, plan_id)), "--stage",
                         str(stage), "--action", action, "--signer", who, "--key", str(m.key)],
                        cwd=m.root)

    # ------------------------------------------------------------------ the store

    def prefix(self, layer: str) -> str:
        return self.layers[layer].url.split("/", 3)[3]

    def objects(self, layer: str, sub: str = "") -> dict[str, bytes]:
        la, pre = self.layers[layer], self.prefix(layer)
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=la.bucket, Prefix=pre + sub):
            for o in page.get("Contents", []):
                out[o["Key"][len(pre):]] = self.client.get_object(
                    Bucket=la.bucket, Key=o["Key"])["Body"].read()
        return out

    def data(self, layer: str) -> dict[str, bytes]:
        return {k: v for k, v in self.objects(layer).items() if not k.startswith("_cleanup/")}

    def batch_records(self, layer: str, plan_id: str) -> list[dict[str, Any]]:
        recs = self.objects(layer, f"_cleanup/plans/{plan_id}/stages/")
        return [json.loads(v) for k, v in sorted(recs.items()) if "/batches/" in k
                and k.endswith(".json")]


@contextmanager
def hooks_server() -> Iterator[Hooks]:
    h = Hooks()
    try:
        yield h
    finally:
        h.close()


def drive(world: JobWorld, *, kills: dict[int, float] | None = None, limit: int = 40,
          on_status: Any = None, before_purge: Any = None) -> dict[str, Any]:
    """Run the job to completion: each runner invocation either reports a status (the
    people then approve or witness what it waits for) or, the ``n``th invocation, is
    SIGKILLed after ``kills[n]`` seconds (if it has not finished by then).
    ``before_purge(layer, plan_id)`` is called before the first purge witness of each
    layer (nothing of it can be purged before). Returns the final status."""
    purge_seen: set[str] = set()
    turn = 0
    for n in range(limit):
        kill = (kills or {}).get(n)
        t0 = time.monotonic()
        r = world.runner(kill_after=kill)
        if os.environ.get("JOBWORLD_TRACE"):
            print(f"runner {n} {time.monotonic() - t0:.1f}s", kill,
                  None if r is None else r.out[-300:])
        if r is None:
            continue
        assert r.code == 0, (r.code, r.out[-2000:], r.err[-2000:])
        status = _status(r.out)
        if on_status is not None:
            on_status(status)
        if status["state"] == "done":
            return status
        for w in status["waiting"]:
            if w["kind"] == "approvals":
                for who in PEOPLE:
                    copy = world.plan_copy(who, w["layer"], w["plan_id"])
                    if not list((copy / "signatures" / "approvals").glob(f"{who}.json")):
                        world.approve(who, w["layer"], w["plan_id"])
            elif w["kind"] == "witness":
                if w["action"] == "purge" and w["layer"] not in purge_seen:
                    purge_seen.add(w["layer"])
                    if before_purge is not None:
                        before_purge(w["layer"], w["plan_id"])
                who = PEOPLE[turn % 2]
                turn += 1
                ok(world.witness(who, w["layer"], w["plan_id"], w["stage"], w["action"]))
            else:
                time.sleep(0.2)  # a hold or retention of 0s: the store clock moves on
    raise AssertionError(f"the job did not finish in {limit} runs")


def _status(out: str) -> dict[str, Any]:
    """The JSON status ``--json`` prints (nothing else goes to stdout with it)."""
    doc = json.loads(out)
    assert isinstance(doc, dict), out
    assert "state" in doc, out
    return doc
