"""What the trust model costs per command: the demo store, then the median wall time of

- ``cleanup verify PLAN --allowed-signers FILE`` (offline: I6, I7 from local files), the
  baseline;
- ``cleanup execute PLAN --stage 1 ...`` up to its refusal for want of a witness: the
  trust-root chain verified against the pin (I17), the plan fetched from the store into a
  private copy and checked (I6), approvals checked with the store's record times (I18),
  the runner's proof, the audit chain with referenced heads (I14), the stage gate, and a
  challenge published (I8);
- ``cleanup witness PLAN --stage 1 ...`` (sign the challenge and publish it);
- ``cleanup trust verify STORE`` alone.

Usage: python scripts/bench_trust.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(args: list[str], env: dict[str, str], cwd: Path, expect: int) -> float:
    start = time.perf_counter()
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if p.returncode != expect:
        raise SystemExit(f"{' '.join(args)} exited {p.returncode}: {p.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    exe = str(Path(sys.executable).parent / "cleanup")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "demo"
        out = subprocess.run([exe, "demo", str(root), "--json"], capture_output=True,
                             text=True, check=True)
        demo = json.loads(out.stdout[out.stdout.index("{"):])
        env = {**os.environ, "CLEANUP_TRUST_ROOT": demo["trust_root"]}
        plan, keys = str(root / "plan"), root / "keys"
        cases = {
            "verify (offline, allowed_signers)": ([exe, "verify", plan, "--allowed-signers",
                                                   str(root / "allowed_signers")], 0),
            "trust verify (chain against the pin)": ([exe, "trust", "verify",
                                                      str(root / "store")], 0),
            # stage 0 is done; the demo's hold (24h) refuses stage 1 after authorization
            "execute: authorize up to the stage gate": ([exe, "execute", plan, "--stage",
                                                         "1", "--executor", "alice", "--key",
                                                         str(keys / "alice")], 3),
        }
        rows = {}
        for name, (args, code) in cases.items():
            rows[name] = statistics.median(_time(args, env, root, code) for _ in range(runs))
        base = rows["verify (offline, allowed_signers)"]
        print(f"{'command':45} {'median':>9} {'vs offline verify':>18}")
        for name, t in rows.items():
            print(f"{name:45} {t * 1000:7.0f} ms {t / base:17.2f}x")
        print(f"(median of {runs}; demo plan with {demo['plan_id'][:12]}...)")


if __name__ == "__main__":
    main()
