"""`cleanup demo`: README's first command runs the whole guarded flow on a local store."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process


def test_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    r = run_cli(["demo", str(tmp_path / "d")])
    assert r.code == 0, r.err
    for step in ("cleanup inventory", "cleanup snapshot", "cleanup plan", "cleanup review",
                 "cleanup approve", "cleanup verify", "cleanup witness", "cleanup execute",
                 "cleanup show", "cleanup status"):
        assert step in r.out, step
    assert (tmp_path / "d" / "report.html").exists()
    st = json.loads(run_cli(["status", str(tmp_path / "d" / "plan"), "--json"]).out)
    assert st["stages"][0]["state"] == "complete"
    assert st["stages"][0]["moved"] == st["stages"][0]["planned_objects"] > 0
    assert run_cli(["audit", "verify", str(tmp_path / "d" / "store")]).code == 0
    # A second demo into the same directory refuses instead of mixing stores.
    assert_one_line_error(run_cli(["demo", str(tmp_path / "d")]), 2, "already holds a demo")
