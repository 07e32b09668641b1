"""``cleanup runbook``: runbooks as code (the checks live in :mod:`cleanup.runbook`).

Registered on the command tree with ``cli.add_command(runbook_group)``.
"""

from __future__ import annotations

import os

import click

from cleanup.cli.options import json_option
from cleanup.cli.output import Output, warn
from cleanup.cli.render import runbook_report

RUNBOOK_EXIT_CODES = """\b
Exit codes:
  0 every runbook passed
  2 usage error (e.g. no such file or directory)
  3 refused: at least one finding (one line each, prefixed `runbook:`)"""


@click.group("runbook")
def runbook_group() -> None:
    """Runbooks as code: markdown runbooks (runbooks/*.md) whose front matter says
    whether they remove files and who reviewed them, and whose commands sit in
    ```console blocks that are checked against this very command tree.

    \b
    Front matter:   destructive: true|false, owner, reviewed_by, last_reviewed
    Commands:       `$ cleanup ...` lines in ```console blocks (`\\` continues)
    Annotation:     `# expect exit N` directly before a command that must refuse
    """


@runbook_group.command("check", epilog=RUNBOOK_EXIT_CODES)
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--max-review-age", type=click.IntRange(1), metavar="DAYS",
              help="Also fail a runbook whose last_reviewed is more than DAYS days ago.")
@json_option("Print runbooks and findings as JSON.")
@click.pass_context
def check(ctx: click.Context, paths: tuple[str, ...], max_review_age: int | None,
          output: Output) -> None:
    """Check the runbooks in PATHS (markdown files or directories) [default: runbooks/].

    \b
    A runbook fails when:
      - a destructive runbook lacks owner, reviewed_by (someone other than the
        owner: two-person rule) or last_reviewed (an ISO date, not in the
        future), or a runbook that runs `cleanup execute` (not --dry-run) or
        `cleanup purge` says destructive: false;
      - a `cleanup` command is not a valid invocation of the real command tree:
        unknown subcommand or option, missing required option or argument, a
        badly typed value, or --help/--version. Nothing is executed: commands
        are only parsed. Shell variables ("$PLAN") are placeholders for paths
        and strings;
      - any fenced block holds a raw deletion outside the tool: aws s3 rm,
        aws s3api delete-object(s), s5cmd rm, gsutil rm, gcloud storage rm,
        rclone delete/purge, mc rm, rm, rm -r/-rf, find -delete, DELETE FROM,
        TRUNCATE TABLE;
      - commands sit in a bash/sh block, where they would not be checked.

    Each finding is one line `runbook: FILE:LINE: message`; then the command
    exits 3. README.md files in a directory are documentation and skipped.
    """
    from cleanup.runbook import check_paths

    if not paths:
        if not os.path.isdir("runbooks"):
            raise click.BadParameter("no PATHS given and no runbooks/ directory here",
                                     param_hint="PATHS")
        paths = ("runbooks",)
    report = check_paths(paths, ctx.find_root().command, max_review_age=max_review_age)
    if report.findings:
        # Findings go to stderr, one line each, then a count; or all of it as JSON.
        if output.as_json:
            output.result(report.to_json, ())
        else:
            for f in report.findings:
                warn(f"runbook: {f}")
            bad = len({f.path for f in report.findings})
            warn(f"runbook: {len(report.findings)} finding(s) in {bad} of "
                 f"{len(report.runbooks)} runbook(s)")
        ctx.exit(3)
    output.result(report.to_json, lambda: runbook_report(report))
