"""``cleanup``: the command group, its entry point and the one error-to-exit-code map.

The commands live in verb modules (``store_cmd``, ``plan_cmd``, ``signoff_cmd``,
``execute_cmd``, ``demo_cmd``, ``runbook_cmd``) and are registered here. They import
the library inside the command, so ``cleanup --help`` only pays for click.
"""

from __future__ import annotations

import os
import sys

import click

from cleanup import __version__
from cleanup.cli.demo_cmd import demo
from cleanup.cli.execute_cmd import execute, purge, restore, status
from cleanup.cli.job_cmd import job_group, run
from cleanup.cli.output import error_line
from cleanup.cli.plan_cmd import plan, review, show
from cleanup.cli.runbook_cmd import runbook_group
from cleanup.cli.signoff_cmd import approve, fetch, publish, verify, witness
from cleanup.cli.store_cmd import audit, inventory, snapshot
from cleanup.cli.trust_cmd import trust_group
from cleanup.core.names import (
    EXIT_BUG,
    EXIT_CODES,
    EXIT_HALT,
    EXIT_INVARIANT,
    EXIT_LOCKED,
    EXIT_SIGNOFF,
    EXIT_USAGE,
)
from cleanup.errors import (
    CleanupError,
    InvariantViolation,
    LockHeld,
    ReconciliationHalt,
    SignoffError,
    UsageError,
)

#: The one map from error classes to exit codes (SPEC.md "Exit codes"); anything else is 1.
EXIT_FOR_ERROR: tuple[tuple[type[CleanupError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (InvariantViolation, EXIT_INVARIANT),
    (SignoffError, EXIT_SIGNOFF),
    (ReconciliationHalt, EXIT_HALT),
    (LockHeld, EXIT_LOCKED),
)
EXIT_INTERRUPTED = 130


def exit_code_for(exc: CleanupError) -> int:
    return next((code for cls, code in EXIT_FOR_ERROR if isinstance(exc, cls)), EXIT_BUG)


def exit_codes_epilog() -> str:
    """The group's epilog, from :data:`cleanup.core.names.EXIT_CODES`."""
    width = max(len(str(code)) for code in EXIT_CODES)
    return "\n".join(["\b", "Exit codes:"] + [f"  {code:>{width}}  {meaning}"
                                             for code, meaning in sorted(EXIT_CODES.items())])


@click.group(epilog=exit_codes_epilog(),
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cleanup")
def cli() -> None:
    """Guarded storage cleanup: compute the unreferenced files, check the safety
    invariants, write a signed plan for review; only signed plans are executed.

    \b
    Typical flow:
      cleanup inventory STORE -o inv.parquet
      cleanup snapshot SOURCE --query ... -o snap.parquet
      cleanup plan --store STORE --inventory inv.parquet --snapshot snap.parquet \\
                   -o PLAN --author you --key ~/.ssh/id_ed25519
      cleanup show PLAN
    """


for _command in (inventory, snapshot, plan, show, review, publish, fetch, approve, verify,
                 witness, execute, status, restore, purge, audit, trust_group, demo,
                 runbook_group, job_group, run):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to the documented exit codes."""
    try:
        rv = cli.main(args=argv, prog_name="cleanup", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cleanup: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as exc:
        # One line, like every other error; the hint points at the command's help.
        path = exc.ctx.command_path if exc.ctx is not None else "cleanup"
        click.echo(f"cleanup: error: {exc.format_message()}\n  hint: see '{path} --help'",
                   err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CleanupError as exc:
        click.echo(error_line(exc), err=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        click.echo("cleanup: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if os.environ.get("CLEANUP_DEBUG"):
            raise
        click.echo(error_line(exc), err=True)
        sys.exit(EXIT_BUG)
    sys.exit(rv if isinstance(rv, int) else 0)
