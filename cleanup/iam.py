"""Least-privilege S3 bucket policies for runner separation (SPEC.md "Trust model").

People (principals) author, approve and witness plans: they read the store and
write only the tool's bookkeeping under ``_cleanup/``. The **runner**, an
automation identity (a CI job, a service account), alone runs ``execute``,
``restore`` and ``purge`` and alone may delete. :func:`bucket_policy` prints
that split as S3 bucket-policy JSON, one role at a time;
:func:`combined_bucket_policy` merges the three roles into the one policy a
bucket can hold.

Roles, for a store ``s3://BUCKET/PREFIX/`` (``R`` is the store's object ARN
``arn:aws:s3:::BUCKET/PREFIX``; ``_cleanup/`` sits at the root of the store):

``planner`` (``cleanup plan``)
    ``s3:ListBucket`` (limited to ``PREFIX*``), ``s3:GetBucketLocation`` (the plan
    is bound to the bucket's region, I13), ``s3:GetObject`` on ``R*``,
    ``s3:PutObject`` on ``R_cleanup/plans/*``, ``R_cleanup/audit/*`` and
    ``R_cleanup/clock/*`` (the plan is published there, appended to the audit
    log, and the store's clock is probed, I15). Explicitly denied
    ``s3:DeleteObject`` and ``s3:DeleteObjectVersion`` on ``R*``.
``approver`` (``cleanup approve``, ``cleanup witness``)
    The same reads; ``s3:PutObject`` on ``R_cleanup/plans/*`` and
    ``R_cleanup/audit/*`` only. The same explicit Deny on deletes.
    Both people's roles are explicitly denied ``s3:PutObject`` on
    ``R_cleanup/plans/*/stages/*`` and ``R_cleanup/plans/*/challenges/*.consumed``:
    stage records and consumed marks are the runner's (it signs the stage records
    too, and execution counts only those, I10).
``runner`` (``cleanup execute``, ``restore``, ``purge``)
    ``s3:ListBucket`` and ``s3:ListBucketVersions`` (limited to ``PREFIX*``),
    ``s3:GetBucketLocation``, ``s3:GetBucketVersioning``, and ``s3:GetObject``,
    ``s3:GetObjectVersion``, ``s3:PutObject``, ``s3:DeleteObject``,
    ``s3:DeleteObjectVersion`` on ``R*`` -- which covers the data, the
    quarantine ``_cleanup/quarantine/*``, the lock ``_cleanup/lock`` and the
    conditional-write probes. Explicitly denied writing or deleting the trust
    root ``R_cleanup/trust/*``, and deleting ``R_cleanup/audit/*`` and
    ``R_cleanup/plans/*`` (see :func:`bucket_policy` for why).

Why explicit Deny statements: in the bucket's own account, an action is
allowed when the caller's IAM policy *or* the bucket policy allows it. The Allow
statements here therefore only grant what each role needs; it is the Deny
statements that take delete rights away from people whose IAM policies are
broader (``s3:*`` for a data engineer), and trust-root writes from the runner.
No statement ever names ``*`` as principal, and every resource stays inside the
store's prefix: a bucket or prefix holding an IAM wildcard (``*``, ``?``) or a
policy variable (``$``) is refused rather than escaped.

Pure: no network, no AWS SDK. The caller applies the JSON
(``aws s3api put-bucket-policy``, Terraform, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cleanup.core.paths import RESERVED_PREFIX, parse_store
from cleanup.errors import UsageError

VERSION = "2012-10-17"
ROLES = ("planner", "approver", "runner")
NON_RUNNER_ROLES = ("planner", "approver")

# Bookkeeping areas under the reserved prefix (keys are ``_cleanup/<area>/...``).
PLANS, AUDIT, CLOCK, TRUST = "plans/", "audit/", "clock/", "trust/"
#: Where each role may create objects, relative to ``<prefix>_cleanup/`` (the runner:
#: everywhere under the prefix except ``trust/``).
WRITABLE_AREAS: dict[str, tuple[str, ...]] = {
    "planner": (PLANS, AUDIT, CLOCK),
    "approver": (PLANS, AUDIT),
}
#: Areas whose objects the runner never deletes: deleting them would roll back the
#: trust root, truncate the audit log or lift a halt (a stage record under plans/).
RUNNER_UNDELETABLE = (AUDIT, PLANS)

DELETE_ACTIONS = ("s3:DeleteObject", "s3:DeleteObjectVersion")
#: What only the runner writes under ``plans/<plan-id>/``: stage and batch records
#: (signed by the runner, I10) and the mark that a witnessed challenge was used (I8).
#: People are denied creating them even where their grant on ``plans/*`` would allow it.
RUNNER_RECORDS = ("stages/*", "challenges/*.consumed")

_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}")
# IAM wildcards and policy variables: in a Resource or StringLike value they would widen it.
_POLICY_SPECIAL = ("*", "?", "$")
_ARN_RE = re.compile(r"arn:aws:iam::[0-9]{12}:[A-Za-z0-9+=,.@_/-]{1,512}")


def _check_principal(principal_arn: str) -> str:
    if "*" in principal_arn:
        raise UsageError(f"principal {principal_arn!r} contains '*': a bucket policy for "
                         "runner separation names one IAM user or role, never a wildcard")
    if not _ARN_RE.fullmatch(principal_arn):
        raise UsageError(f"principal {principal_arn[:80]!r} is not an IAM ARN "
                         "(arn:aws:iam::ACCOUNT:role/NAME or arn:aws:iam::ACCOUNT:user/NAME)")
    return principal_arn


def _store_parts(store_url: str) -> tuple[str, str]:
    ref = parse_store(store_url)
    if ref.cloud != "s3":  # a local directory, or a GCS or Azure object store
        raise UsageError(f"store {store_url!r} is not an S3 store: bucket policies exist only "
                         "for s3://bucket/prefix/ stores")
    if not _BUCKET_RE.fullmatch(ref.bucket):
        raise UsageError(f"store {store_url!r}: bucket name {ref.bucket!r} is not a valid S3 "
                         "bucket name")
    bad = sorted({c for c in ref.prefix if c in _POLICY_SPECIAL or ord(c) < 0x20})
    if bad:
        raise UsageError(f"store {store_url!r}: its prefix holds {''.join(bad)!r}, which a "
                         "policy reads as a wildcard or variable; refusing to widen it")
    return ref.bucket, ref.prefix


def _statement(sid: str, effect: str, principal: str, actions: list[str],
               resources: list[str], condition: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    st: dict[str, Any] = {"Sid": sid, "Effect": effect, "Principal": {"AWS": principal},
                          "Action": actions, "Resource": resources}
    if condition:
        st["Condition"] = condition
    return st


def bucket_policy(store_url: str, role: str, principal_arn: str) -> dict[str, Any]:
    """The bucket-policy document granting ``principal_arn`` the role ``role``
    (``planner``, ``approver`` or ``runner``) on the S3 store ``store_url``.

    Sids are ``Cleanup<Role><What>``: unique across the three roles, so their
    statements can share the bucket's one policy (:func:`combined_bucket_policy`).

    The runner may write and delete anywhere in the store except:

    - ``_cleanup/trust/*``: no PutObject, no delete. The trust root
      (``root.N.json`` and its signatures) is what every signature check trusts
      (I17). It must be writable only by the principals, and only by conditional
      create (``If-None-Match: *``), so that at most one version N+1 can ever
      exist and only the threshold of version N can make it. An identity that
      can put objects there unconditionally could replace a version or fork the
      chain, and one that can delete there could remove the newest version and
      roll the chain back to one that still trusts a revoked key. The runner
      executes what principals signed; it never needs to change who they are.
      (These policies grant the principals no write there either: creating a
      root version is a separate, deliberate grant -- see the runbook.)
    - ``_cleanup/audit/*`` and ``_cleanup/plans/*``: no delete. The runner
      appends audit entries and stage records with conditional creates and
      never removes them; deleting would truncate the audit log (I14) or lift a
      halt (I10), which only a new signed plan may do.

    Raises :class:`UsageError` for a store that is not S3, an unknown role, or a
    principal that is not an IAM ARN (or contains ``*``).
    """
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    principal = _check_principal(principal_arn)
    bucket, prefix = _store_parts(store_url)
    bucket_arn = f"arn:aws:s3:::{bucket}"
    objects = f"{bucket_arn}/{prefix}"            # + key
    reserved = objects + RESERVED_PREFIX           # + area
    # Listing is limited to the store's prefix (the whole bucket for a prefix-less store).
    list_cond = {"StringLike": {"s3:prefix": [prefix + "*"]}} if prefix else None
    name = role.capitalize()
    sid = f"Cleanup{name}"

    if role == "runner":
        return {"Version": VERSION, "Statement": [
            _statement(sid + "List", "Allow", principal,
                       ["s3:ListBucket", "s3:ListBucketVersions"], [bucket_arn], list_cond),
            _statement(sid + "BucketInfo", "Allow", principal,
                       ["s3:GetBucketLocation", "s3:GetBucketVersioning"], [bucket_arn]),
            _statement(sid + "Objects", "Allow", principal,
                       ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
                        *DELETE_ACTIONS], [objects + "*"]),
            _statement(sid + "DenyTrustRootWrite", "Deny", principal,
                       ["s3:PutObject", *DELETE_ACTIONS], [reserved + TRUST + "*"]),
            _statement(sid + "DenyStateDelete", "Deny", principal, list(DELETE_ACTIONS),
                       [reserved + area + "*" for area in RUNNER_UNDELETABLE]),
        ]}
    return {"Version": VERSION, "Statement": [
        _statement(sid + "List", "Allow", principal, ["s3:ListBucket"], [bucket_arn],
                   list_cond),
        _statement(sid + "BucketLocation", "Allow", principal, ["s3:GetBucketLocation"],
                   [bucket_arn]),
        _statement(sid + "Read", "Allow", principal, ["s3:GetObject"], [objects + "*"]),
        _statement(sid + "WriteBookkeeping", "Allow", principal, ["s3:PutObject"],
                   [reserved + area + "*" for area in WRITABLE_AREAS[role]]),
        _statement(sid + "DenyDelete", "Deny", principal, list(DELETE_ACTIONS),
                   [objects + "*"]),
        _statement(sid + "DenyRunnerRecords", "Deny", principal, ["s3:PutObject"],
                   [reserved + PLANS + "*/" + tail for tail in RUNNER_RECORDS]),
    ]}


def combined_bucket_policy(store_url: str, principals: Mapping[str, str]) -> dict[str, Any]:
    """The one bucket policy holding the statements of each role in ``principals``
    (role -> principal ARN; ``runner`` required). A bucket has a single policy, so
    this is what gets applied.

    Refuses a runner principal that is also a planner or approver: the separation
    is the point, and the people's Deny on deletes would lock the runner out too.
    """
    unknown = sorted(set(principals) - set(ROLES))
    if unknown:
        raise UsageError(f"unknown role {unknown[0]!r}: one of {', '.join(ROLES)}")
    if "runner" not in principals:
        raise UsageError("no runner principal: runner separation needs the runner identity")
    runner = principals["runner"]
    for role in NON_RUNNER_ROLES:
        if principals.get(role) == runner:
            raise UsageError(f"the runner and the {role} are the same principal {runner!r}: "
                             "the runner must be a separate identity")
    statements: list[dict[str, Any]] = []
    for role in ROLES:
        if role in principals:
            statements += bucket_policy(store_url, role, principals[role])["Statement"]
    return {"Version": VERSION, "Statement": statements}
