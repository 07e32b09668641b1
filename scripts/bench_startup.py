"""Time ``cleanup --help`` against a bare ``python -c pass`` on the same machine.

Usage: .venv/bin/python scripts/bench_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "cleanup")
    base = _median_seconds([sys.executable, "-c", "pass"], args.runs)
    helptime = _median_seconds([exe, "--help"], args.runs)
    plan_help = _median_seconds([exe, "plan", "--help"], args.runs)
    print(f"python -c pass        {base * 1000:7.1f} ms (median of {args.runs})")
    print(f"cleanup --help        {helptime * 1000:7.1f} ms  ({helptime / base:.2f}x baseline)")
    print(f"cleanup plan --help   {plan_help * 1000:7.1f} ms  ({plan_help / base:.2f}x baseline)")
    if helptime > 0.3:
        sys.exit("cleanup --help takes more than 0.3 s")


if __name__ == "__main__":
    main()
