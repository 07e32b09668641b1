"""The in-stage watchdog: time from an injected fault to the halt and to the stage fully
restored, for a stage of N objects (default 100,000) on a local store.

The world: N objects of 64 bytes under ``bench/dNNNN/`` (1,000 per directory) plus one
referenced object per directory (the canary's sample comes from those), backdated an
hour; listed, planned (one stage of every candidate, quarantine copy), approved and
witnessed through the CLI in this process. The stage then runs through the library with
a ``--health-check`` that tests for a flag file; the bench creates the flag half-way
through the stage, right after a batch the watchdog checked (t_fault): the worst case
for the batch trigger (``every_batches - 1`` more batches run unless the time trigger
comes first). Times come from the watchdog's own
notifications (``halted`` after the halt is recorded in the store, ``restored`` after
the last object is back), taken with ``time.perf_counter`` in this process.

Each configuration (watch settings) gets a fresh world: a halted stage stays halted.

Usage: .venv/bin/python scripts/bench_watchdog.py [--objects 100000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cleanup import notify  # noqa: E402
from cleanup.executor import ExecuteOptions, execute  # noqa: E402
from cleanup.watchdog import WatchdogHalt  # noqa: E402
from tests.conftest import make_key  # noqa: E402
from tests.inproc import _environment  # noqa: E402
from tests.scenario import Scenario, ok  # noqa: E402

TENANT = "bench"
PER_DIR = 1000
#: (label, watch_every_batches, watch_every_seconds)
CONFIGS = [("defaults (10 batches / 30 s)", 10, 30.0), ("every batch", 1, 30.0)]


def fill(store: Path, n: int) -> list[str]:
    """n candidate objects and one referenced object per directory; the referenced keys."""
    old = time.time() - 3600
    refs = []
    for i in range(n):
        d = store / TENANT / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
            ref = d / "ref.bin"
            ref.write_bytes(b"r" * (100 + i // PER_DIR))
            os.utime(ref, (old, old))
            refs.append(ref.relative_to(store).as_posix())
        p = d / f"part-{i:07d}.bin"
        p.write_bytes(b"x" * 64)
        os.utime(p, (old, old))
    return refs


def user_objects(store: Path) -> int:
    return sum(len(files) for d, _dirs, files in os.walk(store)
               if not Path(d).relative_to(store).as_posix().startswith("_cleanup"))


def prepare(work: Path, n: int, keys: dict[str, Path]) -> tuple[Scenario, float]:
    t0 = time.perf_counter()
    store = work / "store"
    refs = fill(store, n)
    sc = Scenario(work, str(store), signers=keys)
    sc.list_store("--trust-mtime")
    sc.snapshot_refs(f"file://{store}/{k}" for k in refs)
    ok(sc.create_plan("--buffer", "1s", "--override-minimums", "--internal", TENANT,
                      "--stages", "100%", "--max-delete-fraction", "1.0"))
    sc.approve_and_witness()
    return sc, time.perf_counter() - t0


def run(sc: Scenario, n: int, every_batches: int, every_seconds: float) -> dict[str, Any]:
    flag = sc.tmp / "unhealthy"
    marks: dict[str, float] = {}
    state = {"batches": 0, "fault_batch": -1, "moved_at_fault": 0}
    real_emit = notify.emit

    def emit(event: str, **fields: Any) -> None:
        marks.setdefault(event, time.perf_counter())
        real_emit(event, **fields)

    # The worst case for the batch trigger: the fault comes right after a check, half-way
    # through the stage (the first batch index >= half with b % every_batches == 0).
    batches = -(-n // 1000)
    fault_batch = min(-(-(batches // 2) // every_batches) * every_batches, batches - 1)

    def progress(moved: int, _bytes: int) -> None:
        if "first_batch" not in marks:
            marks["first_batch"] = time.perf_counter()
        if state["batches"] == fault_batch and "fault" not in marks:
            flag.touch()
            marks["fault"] = time.perf_counter()
            state["fault_batch"], state["moved_at_fault"] = state["batches"], moved
        state["batches"] += 1

    opts = ExecuteOptions(plan_dir=str(sc.plan_dir), stage=0, executor="alice",
                          key=str(sc.signer_key("alice")), trust_root=sc.trust_root,
                          health_checks=(f"test ! -e {flag}",),
                          watch_every_batches=every_batches, watch_every_seconds=every_seconds,
                          progress=progress)
    notify.emit = emit
    try:
        with _environment(sc.env, None):
            marks["start"] = time.perf_counter()
            try:
                execute(opts)
                raise SystemExit("the stage was not halted")
            except WatchdogHalt as exc:
                marks["end"] = time.perf_counter()
                restored = dict(exc.restored or {})
    finally:
        notify.emit = real_emit
    journal = [json.loads(line) for line in
               (sc.plan_dir / "journal" / "stage-0.jsonl").read_text().splitlines()]
    checks = [r for r in journal if r["event"] == "watchdog-check"]
    removed = sum(r.get("moved", 0) for r in journal if r["event"] == "batch-done")
    batches = sum(1 for r in journal if r["event"] == "batch-done")
    left = user_objects(Path(sc.store_url))
    expected = n + -(-n // PER_DIR)
    if left != expected or restored.get("restored") != removed:
        raise SystemExit(f"not fully restored: {left} of {expected} objects, {restored}")
    removing_s = marks["halted"] - marks["first_batch"]
    restore_s = marks["restored"] - marks["halted"]
    return {
        "config": {"watch_every_batches": every_batches, "watch_every_seconds": every_seconds},
        "objects": n, "batches_run": batches, "removed_before_halt": removed,
        "moved_at_fault": state["moved_at_fault"],
        "batches_after_fault": batches - 1 - state["fault_batch"],
        "fault_to_halt_s": marks["halted"] - marks["fault"],
        "fault_to_restored_s": marks["restored"] - marks["fault"],
        "halt_to_restored_s": restore_s,
        "stage_ran_s": marks["halted"] - marks["start"],
        "removing_s": removing_s,
        "remove_rate": removed / removing_s,
        "restore_rate": restored["restored"] / restore_s,
        "checks": len(checks),
        "check_s_median": statistics.median(c["seconds"] for c in checks),
        "restored": restored,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-watchdog-") as td:
        base = Path(td)
        kd = base / "keys"
        kd.mkdir()
        keys = {name: make_key(kd, name) for name in ("alice", "bob")}
        for i, (label, every_b, every_s) in enumerate(CONFIGS):
            work = base / f"w{i}"
            work.mkdir()
            sc, prep = prepare(work, args.objects, keys)
            r = {"label": label, "prepare_s": prep, **run(sc, args.objects, every_b, every_s)}
            results.append(r)
            print(f"{label}: {r['objects']:,} objects; the fault after "
                  f"{r['moved_at_fault']:,} removed; {r['batches_after_fault']} batches ran "
                  f"after it; fault->halt {r['fault_to_halt_s']:.2f}s, halt->restored "
                  f"{r['halt_to_restored_s']:.2f}s ({r['restore_rate']:,.0f} objects/s), "
                  f"stage ran {r['stage_ran_s']:.2f}s (removing {r['remove_rate']:,.0f} "
                  f"objects/s); {r['checks']} checks, median "
                  f"{r['check_s_median'] * 1000:.0f} ms (setup {prep:.0f}s)", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
