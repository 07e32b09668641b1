"""``cleanup job check`` and ``cleanup run``: a cleanup described once in a job file and
advanced by a scheduler (cron, a Kubernetes CronJob, a CI schedule).

The library is imported inside each command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

import click

from cleanup.cli.options import json_option
from cleanup.cli.output import Output


@click.group("job")
def job_group() -> None:
    """Job files: `jobs/NAME.toml` or `[job.NAME]` in cleanup.toml (see `cleanup run`)."""


@job_group.command("check")
@click.argument("job")
@click.option("--config", type=click.Path(dir_okay=False),
              help="The cleanup.toml holding [job.NAME] [default: ./cleanup.toml].")
@click.option("--floors", is_flag=True,
              help="Also read each layer's trust root and check the job's policy against "
                   "its floors (I17).")
@json_option("Print the job's summary as JSON.")
def check(job: str, config: str | None, floors: bool, output: Output) -> None:
    """Validate JOB (a name or a file): one line naming the file and line of the first
    problem (exit 2; a policy looser than the floors exits 3)."""
    from cleanup.jobs import load_job

    j = load_job(job, config)
    if floors:
        from cleanup import trust
        from cleanup.jobs import check_floors, floors_error
        from cleanup.stores import open_store

        for la in j.layers:
            store = open_store(la.store, endpoint_url=la.endpoint_url, region=la.region)
            root = trust.current(store, la.trust_root, j.config)
            problems = check_floors(j, root.root.floors)
            if problems:
                raise floors_error(j, la.store, problems)
    output.result(j.summary(), lambda: [
        f"job {j.name} ({j.path}): ok",
        *(f"  layer {la.name}: {la.store} (references: "
          f"{', '.join(r.source for r in la.references)})" for la in j.layers),
        f"  runner {j.runner}; stages {j.stages}; quarantine {j.quarantine}"])


@click.command("run")
@click.argument("job")
@click.option("--config", type=click.Path(dir_okay=False),
              help="The cleanup.toml holding [job.NAME] and the runner's trust_root "
                   "[default: ./cleanup.toml].")
@click.option("--once", is_flag=True, help="Take at most one step, then report.")
@click.option("--new-run", is_flag=True,
              help="Start a new run of the job (after the last one is done or halted).")
@json_option("Print the job's status as JSON (for orchestrators).")
def run(job: str, config: str | None, once: bool, new_run: bool, output: Output) -> None:
    """Advance JOB as far as it may, then stop and say what it waits for.

    Resumable and idempotent: run it again at any time (cron, CronJob, CI schedule); it
    resumes from the stores' records. It plans every layer as the job's runner
    principal, waits for approvals and witnesses by people (never asks, never signs for
    them), executes stage k on every layer before stage k+1 anywhere, holding every
    layer's lock (exit 6 if another job or person holds one), and purges after the
    retention. Exit 0 when it advanced or waits; 5 when the job is halted.
    """
    from cleanup.errors import ReconciliationHalt
    from cleanup.jobs import load_job
    from cleanup.runner import RunOptions, run_job

    status = run_job(load_job(job, config),
                     RunOptions(once=once, new_run=new_run, stdout_events=not output.as_json))
    output.result(status.to_json, status.lines)
    if status.state == "halted":
        raise ReconciliationHalt(f"job {status.job} run {status.run} is halted: "
                                 + "; ".join(status.waiting_for),
                                 hint="investigate, then `cleanup run JOB --new-run`")
