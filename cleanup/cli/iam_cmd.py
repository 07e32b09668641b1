"""``cleanup trust iam-policy``: least-privilege S3 bucket-policy JSON for runner
separation (people plan, approve and witness; the runner identity alone deletes).

The library is imported inside the command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

import click

from cleanup.cli.output import emit_json

#: The roles of :data:`cleanup.iam.ROLES` (not imported here: see the module docstring).
ROLES = ("planner", "approver", "runner")


@click.command("iam-policy")
@click.option("--store", required=True, metavar="s3://BUCKET/PREFIX/",
              help="The S3 store the policy is for.")
@click.option("--role", required=True, type=click.Choice(ROLES),
              help="planner (cleanup plan), approver (approve, witness) or runner "
                   "(execute, restore, purge: the only role that may delete).")
@click.option("--principal", required=True, metavar="ARN",
              help="IAM role or user ARN that gets the role (arn:aws:iam::ACCOUNT:role/NAME).")
def iam_policy(store: str, role: str, principal: str) -> None:
    """Print the S3 bucket-policy JSON that grants PRINCIPAL the ROLE on STORE.

    \b
    planner   read the store; write only _cleanup/plans/, audit/ and clock/
    approver  read the store; write only _cleanup/plans/ and audit/
    runner    read, write and delete in the store, except: no write or delete
              under _cleanup/trust/, no delete under _cleanup/audit/ and plans/
    Planner and approver are explicitly denied every delete. A bucket holds one
    policy: merge the Statement lists of the three roles (their Sids differ).
    """
    from cleanup.iam import bucket_policy

    emit_json(bucket_policy(store, role, principal))
