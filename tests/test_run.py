"""``cleanup run JOB``: a job over two layers (two moto_server buckets), references in
PostgreSQL, advanced by repeated runner processes, some SIGKILLed at seeded random
moments, with approvals and witnesses by two people on machines of their own.

Nothing may be lost or done twice: every candidate removed exactly once (one batch
record, quarantined with its bytes until the purge), every other object byte-identical.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_one_line_error
from tests.jobworld import LAYERS, JobWorld, drive, hooks_server
from tests.scenario import ok, wait_until
from tests.servers import S3Server
from tests.support import scratch_database

pytestmark = [pytest.mark.s3, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def _check_world(world: JobWorld, status: dict[str, Any],
                 quarantined: dict[str, dict[str, bytes]]) -> None:
    for layer in LAYERS:
        la = world.layers[layer]
        plan_id = next(x["plan_id"] for x in status["layers"] if x["name"] == layer)
        assert la.candidates
        assert any(k.startswith("internal/") for k in la.candidates)
        # every other object byte-identical; every candidate gone
        expected = {k: v for k, v in world.original[layer].items() if k not in la.candidates}
        assert world.data(layer) == expected
        # each candidate removed exactly once: in one batch record, never twice
        removed: list[str] = []
        for rec in world.batch_records(layer, plan_id):
            removed += list(rec["removed"])
        assert sorted(removed) == la.candidates, (layer, sorted(removed), la.candidates)
        # quarantined with its own bytes until the purge; nothing left after it
        assert quarantined[layer] == {k: world.original[layer][k] for k in la.candidates}
        assert world.objects(layer, f"_cleanup/quarantine/{plan_id}/") == {}
        assert world.objects(layer, "_cleanup/lock") == {}  # every lock released
        ok(world.cli(["audit", "verify", la.url]))


@pytest.mark.parametrize("seed", [5])
def test_two_layer_job_survives_sigkill_and_notifies(
        tmp_path: Path, keys_dir: Path, moto_server: S3Server, pg_url: str,
        seed: int) -> None:
    """The whole job through repeated `cleanup run` processes, three of them SIGKILLed at
    seeded random moments (a few examples only: each run of the job takes a minute); bob
    and carol approve and witness from their own machines."""
    with hooks_server() as hooks:
        world = JobWorld(tmp_path, keys_dir, moto_server, pg_url, hooks=hooks)
        # a webhook nobody answers (connection refused) never blocks the job
        world.write_job(webhooks=[hooks.url, "http://127.0.0.1:9/dead"])
        world.wait_old_enough()
        rng = random.Random(seed)  # noqa: S311 - kill times, not secrets
        kills = {n: rng.uniform(0.5, 6.0) for n in rng.sample(range(7), 3)}
        quarantined: dict[str, dict[str, bytes]] = {}
        seen: list[dict[str, Any]] = []

        def before_purge(layer: str, plan_id: str) -> None:
            pre = f"_cleanup/quarantine/{plan_id}/"
            quarantined[layer] = {k[len(pre):]: v for k, v in
                                  world.objects(layer, pre).items()}

        final = drive(world, kills=kills, on_status=seen.append, before_purge=before_purge)
        assert final["state"] == "done"
        texts = [w for st in seen for w in st["waiting_for"]]
        assert any(t.startswith("approvals by 2 more principals") for t in texts), texts
        assert any(t.startswith("a witness of stage 0") for t in texts), texts
        # stage 1 never started on a layer before stage 0 finished on both
        for st in seen:
            states = {la["name"]: [s["state"] for s in la["stages"]] for la in st["layers"]}
            if any(s[1:2] and s[1] != "not-started" for s in states.values()):
                assert all(s[0] == "complete" for s in states.values()), states
        _check_world(world, final, quarantined)
        # a run after completion is idempotent
        again = world.runner()
        assert again is not None
        assert again.code == 0
        assert json.loads(again.out)["state"] == "done"
        kinds = hooks.kinds()
        for event in ("plan-published", "approval-received", "waiting-for-witness",
                      "stage-started", "stage-finished", "purged"):
            assert event in kinds, (event, kinds)
        assert all(e.get("job") == "nightly" and e.get("link") == "https://ci.example/plan.md"
                   for e in hooks.events)


def test_overlapping_jobs_one_refused_with_exit_6(
        tmp_path: Path, keys_dir: Path, moto_server: S3Server, pg_url: str) -> None:
    """Job "a" over lake and wh runs; job "b" over wh alone, started while "a" holds
    the locks, is refused with exit 6 naming the holder."""
    world = JobWorld(tmp_path, keys_dir, moto_server, pg_url, objects=6)
    world.write_job("a", LAYERS)
    world.write_job("b", ("wh",))
    wh = world.layers["wh"]
    env = {**os.environ, **world.env}
    for _attempt in range(5):
        p = subprocess.Popen([sys.executable, "-m", "cleanup", "run", "a", "--json"],
                             cwd=world.runner_dir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            def locked(p: subprocess.Popen[str] = p) -> bool:
                if p.poll() is not None:
                    return True
                return "Contents" in world.client.list_objects_v2(
                    Bucket=wh.bucket, Prefix=world.prefix("wh") + "_cleanup/lock")
            wait_until(locked, timeout=60, interval=0.01, what="job a to take its locks")
            if p.poll() is not None:
                continue  # it finished first: try again
            p.send_signal(signal.SIGSTOP)
            try:
                r = world.runner("b")
            finally:
                p.send_signal(signal.SIGCONT)
            assert r is not None
            assert_one_line_error(r, 6, "job b", "locked by ci", f"pid {p.pid}")
            return
        finally:
            p.communicate(timeout=120)
    raise AssertionError("job a never held its locks long enough to be seen")


def test_a_watchdog_halt_halts_the_job_until_a_new_run(
        tmp_path: Path, keys_dir: Path, moto_server: S3Server, pg_url: str) -> None:
    """A health check that fails during stage 0: the watchdog halts the stage and restores
    it; the job reports halted (exit 5) on every run, notifies, and only --new-run starts
    again, with new plans."""
    with hooks_server() as hooks:
        world = JobWorld(tmp_path, keys_dir, moto_server, pg_url, objects=8, hooks=hooks,
                         layers=("lake",))
        # passes once (the stage starts), then fails: the service broke during the stage
        check = tmp_path / "health.sh"
        check.write_text(f'n=$(cat {tmp_path}/calls 2>/dev/null || echo 0)\n'
                         f'echo $((n + 1)) > {tmp_path}/calls\n[ "$n" -lt 1 ]\n')
        world.write_job(webhooks=[hooks.url], extra=[f'health_checks = ["sh {check}"]'])
        world.wait_old_enough()
        halted = None
        for _ in range(8):
            r = world.runner()
            assert r is not None
            assert r.out, (r.code, r.err)
            status = json.loads(r.out)
            if r.code == 5:
                halted = status
                break
            assert r.code == 0, (r.code, r.err)
            for w in status["waiting"]:
                if w["kind"] == "approvals":
                    for who in ("bob", "carol"):
                        world.approve(who, w["layer"], w["plan_id"])
                elif w["kind"] == "witness":
                    ok(world.witness("bob", w["layer"], w["plan_id"], w["stage"], w["action"]))
        assert halted is not None
        assert halted["state"] == "halted"
        assert r is not None
        assert "halted" in r.err
        assert "--new-run" in r.err
        # restored: every object where it was, with its bytes
        assert world.data("lake") == world.original["lake"]
        again = world.runner()
        assert again is not None
        assert again.code == 5
        assert {"halted", "restored"} <= hooks.kinds(), hooks.kinds()
        fresh = world.runner("nightly", "--new-run")
        assert fresh is not None
        assert fresh.code == 0, fresh.err
        doc = json.loads(fresh.out)
        assert doc["run"] == 2
        assert doc["state"] == "waiting"
        old = {la["plan_id"] for la in halted["layers"]}
        assert all(la["plan_id"] and la["plan_id"] not in old for la in doc["layers"])
