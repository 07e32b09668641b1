#!/usr/bin/env python3
"""Mutation probe: does the test suite notice when a safety rule is broken?

Each mutant is one textual change to the library that breaks one rule (the
strict cutoff, the reconciliation halt, self-approval, path resolution, ...).
For each, the repository is copied to a temporary directory, the change is
applied (the script fails if the text to change is not found, so a mutant cannot
silently become a no-op), and the tests named for it run against the copy. A
mutant is *killed* when those tests fail, *survived* when they pass.

Usage (from the repository root)::

    .venv/bin/python scripts/mutation_probe.py            # every mutant
    .venv/bin/python scripts/mutation_probe.py --only cutoff-strict --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("cutoff-strict", "engine: last_modified <= cutoff - precision becomes <",
           "cleanup/engine.py",
           'f"AND i.last_modified <= {latest_ok}::TIMESTAMPTZ"',
           'f"AND i.last_modified < {latest_ok}::TIMESTAMPTZ"',
           ("tests/test_invariants.py", "tests/test_precision_property.py")),
    Mutant("cutoff-lenient", "engine: precision forgotten (last_modified <= cutoff)",
           "cleanup/engine.py",
           "t = self.inp.cutoff - self.inp.precision",
           "t = self.inp.cutoff",
           ("tests/test_invariants.py", "tests/test_precision_property.py")),
    Mutant("no-reconcile-halt", "executor: a referenced key in a batch no longer halts",
           "cleanup/executor.py", "        if hits:", "        if False:",
           ("tests/test_execute_local.py", "tests/test_path_soundness.py")),
    Mutant("reconcile-exact-only", "reconcile: folders and near-misses ignored",
           "cleanup/reconcile.py",
           "for p in [k, *ancestors(k), *(a[:-1] for a in ancestors(k)[1:])]:",
           "for p in [k]:",
           ("tests/test_path_soundness.py", "tests/test_execution_properties.py")),
    Mutant("self-approval", "sign-off: the author's own approval counts",
           "cleanup/core/signoff.py",
           'if sig.role == "approver" and (sig.signer == author or (',
           'if False and (sig.signer == author or (',
           ("tests/test_signoff_property.py", "tests/test_signoff.py")),
    Mutant("no-dot-segments", "resolver: '..' segments no longer resolved for local stores",
           "cleanup/core/paths.py",
           '        if seg == "..":\n            if parts:\n                parts.pop()\n'
           "            continue\n",
           "",
           ("tests/test_path_soundness.py",)),
    Mutant("no-near-miss", "I4: near-misses pass silently",
           "cleanup/core/invariants.py",
           "    if near_misses and not near_misses_accepted:",
           "    if False:",
           ("tests/test_path_soundness.py",)),
    Mutant("no-folder-protection", "engine: folder references protect nothing",
           "cleanup/engine.py",
           '"CREATE TEMP VIEW protect_dirs AS SELECT key FROM refs WHERE cls = \'folder\' "\n'
           '            "UNION ALL SELECT key || \'/\' FROM missing")',
           '"CREATE TEMP VIEW protect_dirs AS SELECT key FROM refs WHERE false")',
           ("tests/test_path_soundness.py", "tests/test_invariants.py")),
    Mutant("no-confinement", "I19: the one join lets '..' through",
           "cleanup/core/paths.py",
           '    if any(s in (".", "..") for s in segs):\n'
           '        return "\'.\' or \'..\' segment"\n',
           "",
           ("tests/test_confinement.py",)),
)


def run(m: Mutant, python: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as td:
        dst = Path(td) / "repo"
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", ".hypothesis", ".mypy_cache", ".ruff_cache"))
        target = dst / m.path
        text = target.read_text()
        if text.count(m.old) < 1:
            raise SystemExit(f"{m.name}: text to mutate not found in {m.path}")
        target.write_text(text.replace(m.old, m.new))
        env = {**os.environ, "PYTHONPATH": str(dst), "CI": "true"}
        t0 = time.perf_counter()
        p = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            *m.tests], cwd=dst, env=env, capture_output=True, text=True,
                           check=False)
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
        return {"mutant": m.name, "what": m.what, "killed": p.returncode != 0,
                "tests": list(m.tests), "seconds": round(time.perf_counter() - t0, 1),
                "summary": lines[-1] if lines else p.stderr.strip()[-200:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="run only this mutant (repeatable)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    python = str(ROOT / ".venv" / "bin" / "python")
    results = []
    for m in chosen:
        r = run(m, python)
        results.append(r)
        print(f"{'KILLED  ' if r['killed'] else 'SURVIVED'} {m.name:22} {r['seconds']:>6}s  "
              f"{m.what}  [{r['summary']}]", flush=True)
    killed = sum(1 for r in results if r["killed"])
    print(f"\n{killed} of {len(results)} mutants killed")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(0 if killed == len(results) else 1)


if __name__ == "__main__":
    main()
