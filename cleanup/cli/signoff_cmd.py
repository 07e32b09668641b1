"""``cleanup approve``, ``cleanup verify`` and ``cleanup witness``: signing a plan and
checking its signatures (I6, I7, I8).

The library is imported inside each command: ``cleanup --help`` pays only for click.
"""

from __future__ import annotations

import sys

import click

from cleanup.cli.options import AUDIT_ENDPOINT_HELP, json_option, store_options
from cleanup.cli.output import TEXT, Output, warn
from cleanup.cli.render import plan_summary, verify_report
from cleanup.errors import InvariantViolation, SignoffError, UsageError


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--signer", required=True, help="Your principal name (as in allowed_signers).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="SSH key to sign with (private key, or .pub with the key in ssh-agent).")
@click.option("--comment", default="", help="A comment, signed with the approval.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@store_options(region=None, endpoint=AUDIT_ENDPOINT_HELP)
@json_option()
def approve(plan_dir: str, signer: str, key: str, comment: str, yes: bool,
            endpoint_url: str | None, output: Output) -> None:
    """Approve PLAN_DIR: sign {plan id, signer, signed_at, comment} with SSH.

    Shows the plan summary first and asks for confirmation on a terminal. The
    approval is bound to the exact plan.json (and through it the manifest);
    it expires after policy approval_ttl (7d), counted from the signed time.
    """
    from cleanup.show import summarize
    from cleanup.signoff import approve as do_approve
    from cleanup.signoff import audit_plan_event, check_integrity

    plan, _plan_id, integrity = check_integrity(plan_dir)
    integrity.raise_if_failed()
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not a terminal: cannot ask for confirmation",
                             hint="review with `cleanup show`, then pass --yes")
        TEXT.text(plan_summary(summarize(plan_dir)))
        click.confirm(f"Approve this plan as {signer}?", abort=True)
    from cleanup.errors import CleanupError
    from cleanup.signoff import publish

    plan_id, path = do_approve(plan_dir, signer, key, comment, endpoint_url=endpoint_url)
    try:
        publish(plan_dir, endpoint_url)
    except CleanupError as exc:
        warn(f"warning: the approval is not published in the plan's store yet ({exc.message}); "
             "it counts only from the moment the store records it: run `cleanup publish "
             f"{plan_dir}`")
    problem = audit_plan_event(plan, "approval", plan_id=plan_id, principal=signer,
                               details={"comment": comment}, endpoint_url=endpoint_url,
                               key=key)
    if problem:
        warn(problem)
    output.result({"plan_id": plan_id, "signer": signer, "approval": path},
                  f"approved plan {plan_id} as {signer} -> {path}")


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--allowed-signers", "allowed", required=True, type=click.Path(dir_okay=False),
              help="OpenSSH allowed_signers file naming the principals.")
@json_option("Print every signature's state as JSON.")
def verify(plan_dir: str, allowed: str, output: Output) -> None:
    """Check plan integrity (I6) and two-person sign-off (I7).

    Every signature is verified with `ssh-keygen -Y verify -n cleanup-plan` at
    its signed time, and reported as valid, expired, self-approval, unknown-key,
    signer-mismatch, wrong-namespace, key-expired, plan-changed, ... Exits 3 if
    the plan changed, 4 unless the author and enough other principals signed.
    """
    from cleanup.signoff import verify_plan

    rep = verify_plan(plan_dir, allowed)
    output.result(rep.to_json, lambda: verify_report(rep))
    if not rep.integrity.ok:
        raise InvariantViolation(rep.integrity.invariant, rep.integrity.detail,
                                 hint=rep.integrity.hint)
    if not rep.two_person.ok:
        raise SignoffError(f"{rep.two_person.invariant}: {rep.two_person.detail}",
                           hint=rep.two_person.hint)


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--stage", required=True, type=click.IntRange(0), help="The stage you witness.")
@click.option("--action", type=click.Choice(["execute", "purge"]), default="execute",
              show_default=True, help="What the runner is about to do.")
@click.option("--signer", required=True, help="Your principal name (witness role).")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="SSH key to sign with.")
@store_options(region=None, endpoint=AUDIT_ENDPOINT_HELP)
@json_option()
def witness(plan_dir: str, stage: int, action: str, signer: str, key: str,
            endpoint_url: str | None, output: Output) -> None:
    """Witness the runner's ACTION of STAGE, now (I8): sign the challenge it published in
    the store when it started (nonce, plan id, stage, action, audit head).

    The runner accepts your signature once, for that action, stage and run, if the
    store recorded it within policy witness_ttl (60m) and you are not the runner.
    """
    from cleanup.signoff import audit_plan_event
    from cleanup.signoff import witness as do_witness

    plan_id, challenge, doc = do_witness(plan_dir, stage, signer, key, action, endpoint_url)
    from cleanup.bundle import PlanBundle

    with PlanBundle.open(plan_dir) as bundle:
        plan = bundle.plan
    problem = audit_plan_event(plan, "witness", plan_id=plan_id, principal=signer,
                               details={"stage": stage, "action": action,
                                        "challenge": challenge}, endpoint_url=endpoint_url,
                               key=key)
    if problem:
        warn(problem)
    output.result({"plan_id": plan_id, "stage": stage, "action": action, "signer": signer,
                   "challenge": challenge, "runner": doc.get("executor")},
                  f"witnessed {action} of stage {stage} of plan {plan_id} by "
                  f"{doc.get('executor')} as {signer} (challenge {challenge})")


@click.command()
@click.argument("plan_dir", type=click.Path(file_okay=False))
@store_options(region=None, endpoint=AUDIT_ENDPOINT_HELP)
@json_option()
def publish(plan_dir: str, endpoint_url: str | None, output: Output) -> None:
    """Publish PLAN_DIR's plan, manifest and signatures to the plan's store
    (_cleanup/plans/<plan-id>/; `cleanup plan` and `cleanup approve` do it). Nothing
    published is ever replaced."""
    from cleanup.signoff import publish as do_publish

    plan_id, new = do_publish(plan_dir, endpoint_url)
    output.result({"plan_id": plan_id, "published": new},
                  f"plan {plan_id}: published {len(new)} new file(s)")


@click.command()
@click.argument("store")
@click.argument("plan_id")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Local directory to create (the reviewer's copy).")
@store_options(region="S3 region.")
@json_option()
def fetch(store: str, plan_id: str, out: str, endpoint_url: str | None, region: str | None,
          output: Output) -> None:
    """Copy the plan PLAN_ID published in STORE into a new local directory, verified
    (plan.json hashes to PLAN_ID, the manifest matches it): review and approve it on any
    machine that can read the store."""
    from cleanup.signoff import fetch as do_fetch

    path = do_fetch(store, plan_id, out, endpoint_url, region)
    output.result({"plan_id": plan_id, "plan_dir": path}, f"plan {plan_id} -> {path}")
