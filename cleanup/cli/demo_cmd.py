"""``cleanup demo``: the guarded flow on a local demo store, end to end.

The library is imported inside the command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from cleanup.cli.options import json_option
from cleanup.cli.output import Output, Rich
from cleanup.cli.render import plan_summary


@click.command()
@click.argument("directory", required=False, default="cleanup-demo",
                type=click.Path(file_okay=False))
@json_option("Print the artefacts' paths as JSON.")
def demo(directory: str, output: Output) -> None:
    """Build a local demo store (tenants, a DuckDB metadata database, SSH keys for
    two principals and an allowed_signers file) in DIRECTORY [default ./cleanup-demo]
    and run the guarded flow on it: inventory, snapshot, plan, review report,
    trust root, approve, verify, execute (refused until witnessed), witness, execute
    stage 0 (into quarantine), show, status.
    No service is needed."""
    from cleanup.demo import run

    out = run(Path(directory).absolute(), output.text)
    output.result(out, lambda: _report(out))


def _report(out: dict[str, str]) -> Iterator[str | Rich]:
    """Steps 11 and 12 of the flow: the plan summary and each stage's state (from the
    store's stage records)."""
    from cleanup.published import Published, stage_state
    from cleanup.show import summarize
    from cleanup.stores import open_store

    summary = summarize(out["plan"])
    yield f"11. cleanup show {out['plan']}"
    yield plan_summary(summary)
    yield f"12. cleanup status {out['plan']}"
    pub = Published(open_store(out["store"]), out["plan_id"])
    for s in summary["plan"]["stages"]:
        st = stage_state(pub, int(s["stage"]))
        yield f"   stage {st.stage}: {st.state}, removed {st.moved}/{s['objects']}"
    yield f"Undo with: cleanup restore {out['plan']} --stage 0"
    yield f"Review report: {out['report']}"
