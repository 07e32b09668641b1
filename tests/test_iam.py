"""Runner separation (issue 12, item 7): the bucket policies of :mod:`cleanup.iam`.

- each role's statements, exactly;
- a property, with a small evaluator written here (explicit Deny wins; Allow by action
  and resource wildcard match; conditions it does not know fail the test): over any key
  under the store's prefix and any action, people never delete, the runner never
  writes the trust root, people write only their bookkeeping areas;
- real components: moto_server stores the policies verbatim, moto's IAM validator
  accepts the same statements, and an IAM-enforcing moto refuses what they deny;
- ``cleanup trust iam-policy`` through the CLI's real error-to-exit-code map.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import click
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup.cli.iam_cmd import ROLES as CLI_ROLES
from cleanup.cli.iam_cmd import iam_policy
from cleanup.errors import UsageError
from cleanup.iam import ROLES, bucket_policy, combined_bucket_policy
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli
from tests.servers import S3Server, start_moto

ACCOUNT = "111122223333"
ARN = {role: f"arn:aws:iam::{ACCOUNT}:role/cleanup-{role}" for role in ROLES}
STORE = "s3://lake/warehouse/"
B = "arn:aws:s3:::lake"
O = "arn:aws:s3:::lake/warehouse/"  # noqa: E741 - the store's object ARN prefix
C = O + "_cleanup/"
DELETES = ["s3:DeleteObject", "s3:DeleteObjectVersion"]


# --- a tiny, honest evaluator ----------------------------------------------------------------


def _like(pattern: str, value: str, *, fold: bool = False) -> bool:
    """IAM wildcard match: ``*`` any run of characters, ``?`` one; all else literal."""
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, re.DOTALL | (re.IGNORECASE if fold else 0)) is not None


def _as_list(v: str | list[str]) -> list[str]:
    return [v] if isinstance(v, str) else v


def _conditions_hold(cond: Mapping[str, Mapping[str, Any]], ctx: Mapping[str, str]) -> bool:
    for op, keys in cond.items():
        if op != "StringLike":
            raise AssertionError(f"the test evaluator does not know condition operator {op}")
        for key, patterns in keys.items():
            if key not in ctx or not any(_like(p, ctx[key]) for p in _as_list(patterns)):
                return False
    return True


def decide(policy: Mapping[str, Any], principal: str, action: str, resource: str,
           ctx: Mapping[str, str] | None = None) -> str:
    """``allow``, ``deny`` (an explicit Deny) or ``implicit`` (nothing allows it)."""
    assert policy["Version"] == "2012-10-17"
    allowed = False
    for stmt in policy["Statement"]:
        assert set(stmt) <= {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
        if stmt["Principal"] != {"AWS": principal}:
            continue
        if not any(_like(a, action, fold=True) for a in _as_list(stmt["Action"])):
            continue
        if not any(_like(r, resource) for r in _as_list(stmt["Resource"])):
            continue
        if not _conditions_hold(stmt.get("Condition", {}), ctx or {}):
            continue
        if stmt["Effect"] == "Deny":
            return "deny"
        assert stmt["Effect"] == "Allow"
        allowed = True
    return "allow" if allowed else "implicit"


def test_evaluator_itself() -> None:
    pol = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "p"}, "Action": ["s3:Get*"],
         "Resource": ["arn:aws:s3:::b/a?c/*"]},
        {"Effect": "Deny", "Principal": {"AWS": "p"}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::b/abc/secret"}]}
    assert decide(pol, "p", "s3:getobject", "arn:aws:s3:::b/axc/k") == "allow"
    assert decide(pol, "p", "s3:GetObject", "arn:aws:s3:::b/abc/secret") == "deny"
    assert decide(pol, "q", "s3:GetObject", "arn:aws:s3:::b/axc/k") == "implicit"
    assert decide(pol, "p", "s3:GetObject", "arn:aws:s3:::b/a.c.d/k") == "implicit"
    assert decide(pol, "p", "s3:PutObject", "arn:aws:s3:::b/axc/k") == "implicit"
    assert not _like("a.c", "abc")  # '.' is literal, not a regex


# --- each role, exactly -----------------------------------------------------------------------

#: stage/batch records and consumed marks: the runner's alone (I10, I8)
RUNNER_RECORDS = [C + "plans/*/stages/*", C + "plans/*/challenges/*.consumed"]
LIST_COND = {"StringLike": {"s3:prefix": ["warehouse/*"]}}
EXPECTED: dict[str, list[tuple[str, str, list[str], list[str], dict[str, Any] | None]]] = {
    "planner": [
        ("CleanupPlannerList", "Allow", ["s3:ListBucket"], [B], LIST_COND),
        ("CleanupPlannerBucketLocation", "Allow", ["s3:GetBucketLocation"], [B], None),
        ("CleanupPlannerRead", "Allow", ["s3:GetObject"], [O + "*"], None),
        ("CleanupPlannerWriteBookkeeping", "Allow", ["s3:PutObject"],
         [C + "plans/*", C + "audit/*", C + "clock/*"], None),
        ("CleanupPlannerDenyDelete", "Deny", DELETES, [O + "*"], None),
        ("CleanupPlannerDenyRunnerRecords", "Deny", ["s3:PutObject"], RUNNER_RECORDS, None),
    ],
    "approver": [
        ("CleanupApproverList", "Allow", ["s3:ListBucket"], [B], LIST_COND),
        ("CleanupApproverBucketLocation", "Allow", ["s3:GetBucketLocation"], [B], None),
        ("CleanupApproverRead", "Allow", ["s3:GetObject"], [O + "*"], None),
        ("CleanupApproverWriteBookkeeping", "Allow", ["s3:PutObject"],
         [C + "plans/*", C + "audit/*"], None),
        ("CleanupApproverDenyDelete", "Deny", DELETES, [O + "*"], None),
        ("CleanupApproverDenyRunnerRecords", "Deny", ["s3:PutObject"], RUNNER_RECORDS, None),
    ],
    "runner": [
        ("CleanupRunnerList", "Allow", ["s3:ListBucket", "s3:ListBucketVersions"], [B],
         LIST_COND),
        ("CleanupRunnerBucketInfo", "Allow", ["s3:GetBucketLocation", "s3:GetBucketVersioning"],
         [B], None),
        ("CleanupRunnerObjects", "Allow", ["s3:GetObject", "s3:GetObjectVersion",
                                           "s3:PutObject", *DELETES], [O + "*"], None),
        ("CleanupRunnerDenyTrustRootWrite", "Deny", ["s3:PutObject", *DELETES],
         [C + "trust/*"], None),
        ("CleanupRunnerDenyStateDelete", "Deny", DELETES, [C + "audit/*", C + "plans/*"], None),
    ],
}


def _shape(policy: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return [(s["Sid"], s["Effect"], s["Action"], s["Resource"], s.get("Condition"))
            for s in policy["Statement"]]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_exactly(role: str) -> None:
    pol = bucket_policy(STORE, role, ARN[role])
    assert set(pol) == {"Version", "Statement"}
    assert pol["Version"] == "2012-10-17"
    assert _shape(pol) == EXPECTED[role]
    assert all(s["Principal"] == {"AWS": ARN[role]} for s in pol["Statement"])
    assert json.loads(json.dumps(pol)) == pol  # plain JSON, nothing else


def test_prefixless_store_is_the_whole_bucket() -> None:
    pol = bucket_policy("s3://lake", "planner", ARN["planner"])
    by_sid = {s["Sid"]: s for s in pol["Statement"]}
    assert "Condition" not in by_sid["CleanupPlannerList"]
    assert by_sid["CleanupPlannerRead"]["Resource"] == ["arn:aws:s3:::lake/*"]
    assert by_sid["CleanupPlannerWriteBookkeeping"]["Resource"] == [
        "arn:aws:s3:::lake/_cleanup/plans/*", "arn:aws:s3:::lake/_cleanup/audit/*",
        "arn:aws:s3:::lake/_cleanup/clock/*"]
    # s3a:// and a prefix without its trailing slash name the same store (I4).
    assert bucket_policy("S3A://lake/warehouse", "runner", ARN["runner"]) == bucket_policy(
        STORE, "runner", ARN["runner"])


def test_sids_are_unique_across_roles() -> None:
    sids = [s["Sid"] for r in ROLES for s in bucket_policy(STORE, r, ARN[r])["Statement"]]
    assert len(sids) == len(set(sids))
    assert all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)  # valid in IAM policies too


REFUSALS = {
    "local directory": ("/data/lake", "planner", ARN["planner"], "is not an S3 store"),
    "file URL": ("file:///data/lake", "runner", ARN["runner"], "is not an S3 store"),
    "unknown role": (STORE, "admin", ARN["planner"], "unknown role 'admin'"),
    "principal *": (STORE, "runner", "*", "contains '*'"),
    "wildcard principal": (STORE, "planner", f"arn:aws:iam::{ACCOUNT}:role/*", "contains '*'"),
    "not an IAM ARN": (STORE, "planner", "alice", "is not an IAM ARN"),
    "STS ARN": (STORE, "planner", f"arn:aws:sts::{ACCOUNT}:assumed-role/x/y",
                "is not an IAM ARN"),
    "short account": (STORE, "planner", "arn:aws:iam::1234:role/x", "is not an IAM ARN"),
    "wildcard bucket": ("s3://la*ke/warehouse/", "runner", ARN["runner"],
                        "is not a valid S3 bucket name"),
    "wildcard prefix": ("s3://lake/ware*/", "runner", ARN["runner"], "wildcard or variable"),
    "? in prefix": ("s3://lake/ware?house/", "planner", ARN["planner"], "wildcard or variable"),
    "policy variable in prefix": ("s3://lake/${aws:username}/", "planner", ARN["planner"],
                                  "wildcard or variable"),
    "GCS store": ("gs://lake/warehouse/", "runner", ARN["runner"], "is not an S3 store"),
    "Azure store": ("az://lake@acct/warehouse/", "runner", ARN["runner"], "is not an S3 store"),
    "unsupported scheme": ("ftp://lake/warehouse/", "runner", ARN["runner"], "unsupported"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(case: str) -> None:
    store, role, principal, needle = REFUSALS[case]
    with pytest.raises(UsageError) as exc:
        bucket_policy(store, role, principal)
    assert needle in exc.value.message
    assert "\n" not in exc.value.message


def test_combined_policy_and_its_refusals() -> None:
    pol = combined_bucket_policy(STORE, ARN)
    assert [s["Sid"] for s in pol["Statement"]] == [
        sid for r in ROLES for sid, *_rest in EXPECTED[r]]
    assert combined_bucket_policy(STORE, {"runner": ARN["runner"]}) == bucket_policy(
        STORE, "runner", ARN["runner"])
    # one person's role may plan and approve; it may never also be the runner
    both = combined_bucket_policy(STORE, {"planner": ARN["planner"], "approver": ARN["planner"],
                                          "runner": ARN["runner"]})
    assert len(both["Statement"]) == 17
    for bad, needle in (({**ARN, "runner": ARN["approver"]}, "the runner and the approver"),
                        ({**ARN, "runner": ARN["planner"]}, "the runner and the planner"),
                        ({"planner": ARN["planner"]}, "no runner principal"),
                        ({**ARN, "admin": ARN["runner"]}, "unknown role 'admin'")):
        with pytest.raises(UsageError, match=needle):
            combined_bucket_policy(STORE, bad)


# --- the property ---------------------------------------------------------------------------

OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
                  "s3:GetObjectVersion", "s3:PutObjectAcl", "s3:PutObjectTagging",
                  "s3:PutObjectRetention", "s3:BypassGovernanceRetention", "s3:RestoreObject",
                  "s3:AbortMultipartUpload"]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation",
                  "s3:GetBucketVersioning", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration",
                  "s3:DeleteBucket", "s3:PutBucketVersioning"]

AREAS = ["plans", "audit", "clock", "trust", "quarantine", "probe"]
segment = st.one_of(
    st.sampled_from(["_cleanup", *AREAS, "lock", "_cleanup_", "plans.", "trustx", "..", ".",
                     "", "data", "part-0001.parquet", "root.2.json", "*", "?", "PLANS",
                     "_Cleanup"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/"),
            max_size=8))
rest = st.lists(segment, max_size=4).map("/".join)
keys = st.one_of(
    # inside a bookkeeping area of the reserved prefix
    st.builds("_cleanup/{}/{}".format, st.sampled_from(AREAS), rest),
    # near misses of one: no slash, another case, doubled slash, deeper, a lookalike
    st.builds("{}{}".format, st.sampled_from(
        ["_cleanup/plans", "_cleanup/trustx/", "_cleanup//trust/", "_Cleanup/trust/",
         "data/_cleanup/trust/", "_cleanup/", "_cleanup/lock", "_cleanup/audit.", " _cleanup/"]),
        rest),
    # anything
    st.lists(segment, min_size=1, max_size=5).map("/".join))
# One representative of each kind of key, for the exhaustive table.
SAMPLE_KEYS = ["t/part-0001.parquet", "_cleanup/plans/p1/plan.json", "_cleanup/plans/",
               "_cleanup/audit/000000000001.json", "_cleanup/clock/probe-1",
               "_cleanup/trust/root.2.json", "_cleanup/trust/root.1.json.sig",
               "_cleanup/quarantine/p1/t/x", "_cleanup/lock", "_cleanup/probe/conditional-1",
               "_cleanup/plans", "_cleanup/trustx/y", "_cleanup//trust/z", "x/_cleanup/trust/a",
               "_cleanup/plans/p1/stages/0/finished.json",
               "_cleanup/plans/p1/stages/1/batches/00000000.json",
               "_cleanup/plans/p1/challenges/execute.0.ab.consumed",
               "_cleanup/plans/p1/challenges/execute.0.ab.json",
               "_cleanup/plans/p1/stagesx/0", "_cleanup/plans/p1/challenges/x.consumedx"]
prefixes = st.sampled_from(["", "warehouse/", "a/b.c/", "lake-1/", "x_/y/"])


def expected(role: str, action: str, key: str) -> str:
    """The design, written out independently of cleanup.iam: what ``role`` may do to
    ``key`` (store-relative, so under the prefix)."""
    area = next((a for a in ("plans", "audit", "clock", "trust")
                 if key.startswith(f"_cleanup/{a}/")), None)
    if action == "s3:GetObject":
        return "allow"
    if role == "runner":
        if action == "s3:GetObjectVersion":
            return "allow"
        if action == "s3:PutObject":
            return "deny" if area == "trust" else "allow"
        if action in DELETES:
            return "deny" if area in ("trust", "audit", "plans") else "allow"
        return "implicit"
    if action in DELETES:
        return "deny"
    writable = ("plans", "audit", "clock") if role == "planner" else ("plans", "audit")
    # IAM's '*' matches across '/': plans/*/stages/* is any key with /stages/ after plans/
    if action == "s3:PutObject" and re.fullmatch(
            r"_cleanup/plans/.*/(stages/.*|challenges/.*\.consumed)", key, re.DOTALL):
        return "deny"
    if action == "s3:PutObject" and area in writable:
        return "allow"
    return "implicit"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_action_and_kind_of_key(role: str) -> None:
    """The whole table for the representative keys, in both store layouts."""
    for prefix in ("", "warehouse/"):
        pol = bucket_policy(f"s3://lake/{prefix}", role, ARN[role])
        for key in SAMPLE_KEYS:
            for action in OBJECT_ACTIONS:
                got = decide(pol, ARN[role], action, f"arn:aws:s3:::lake/{prefix}{key}")
                assert got == expected(role, action, key), (prefix, key, action, got)


@settings(max_examples=400, deadline=None)
@given(prefix=prefixes, key=keys, action=st.sampled_from(OBJECT_ACTIONS),
       role=st.sampled_from(ROLES))
def test_property_object_actions(prefix: str, key: str, action: str, role: str) -> None:
    store = f"s3://lake/{prefix}"
    resource = f"arn:aws:s3:::lake/{prefix}{key}"
    own = bucket_policy(store, role, ARN[role])
    got = decide(own, ARN[role], action, resource)
    assert got == expected(role, action, key), (role, action, key, got)
    # the headline guarantees, stated on their own
    if action in DELETES and role != "runner":
        assert got == "deny"  # explicit: binds people whose IAM policies allow s3:*
    if action == "s3:PutObject" and key.startswith("_cleanup/trust/"):
        assert got != "allow"
        if role == "runner":
            assert got == "deny"
    if action == "s3:PutObject" and role != "runner" and got == "allow":
        allowed = ["_cleanup/plans/", "_cleanup/audit/"]
        allowed += ["_cleanup/clock/"] if role == "planner" else []
        assert key.startswith(tuple(allowed))
    # the same decisions hold in the one bucket policy that holds all three roles, and
    # one role's statements never decide for another principal
    merged = combined_bucket_policy(store, ARN)
    assert decide(merged, ARN[role], action, resource) == got
    assert decide(own, f"arn:aws:iam::{ACCOUNT}:role/someone-else", action, resource) == (
        "implicit")


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes, other=keys, action=st.sampled_from(OBJECT_ACTIONS),
       role=st.sampled_from(ROLES))
def test_property_nothing_outside_the_prefix(prefix: str, other: str, action: str,
                                            role: str) -> None:
    if prefix:  # another prefix of the same bucket
        assert decide(bucket_policy(f"s3://lake/{prefix}", role, ARN[role]), ARN[role], action,
                      f"arn:aws:s3:::lake/zz-other/{other}") == "implicit"
    # and another bucket is never touched, whatever the prefix
    assert decide(bucket_policy(f"s3://lake/{prefix}", role, ARN[role]), ARN[role], action,
                  f"arn:aws:s3:::lake2/{prefix}{other}") == "implicit"


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes, listed=st.one_of(st.just(None), keys),
       action=st.sampled_from(BUCKET_ACTIONS), role=st.sampled_from(ROLES))
def test_property_bucket_actions(prefix: str, listed: str | None, action: str,
                                 role: str) -> None:
    """Listing only inside the prefix; bucket metadata the tool reads; no bucket changes."""
    pol = bucket_policy(f"s3://lake/{prefix}", role, ARN[role])
    ctx = {} if listed is None else {"s3:prefix": prefix + listed}
    got = decide(pol, ARN[role], action, "arn:aws:s3:::lake", ctx)
    want = {"s3:ListBucket": "allow" if not prefix or listed is not None else "implicit",
            "s3:GetBucketLocation": "allow"}
    if role == "runner":
        want["s3:ListBucketVersions"] = want["s3:ListBucket"]
        want["s3:GetBucketVersioning"] = "allow"
    assert got == want.get(action, "implicit"), (role, action, listed, got)
    if prefix and listed is not None:  # a listing of another prefix
        assert decide(pol, ARN[role], "s3:ListBucket", "arn:aws:s3:::lake",
                      {"s3:prefix": "zz-other/" + listed}) == "implicit"


# --- real components: moto ----------------------------------------------------------------------


def _iam(server: S3Server) -> Any:
    return boto3.client("iam", endpoint_url=server.endpoint_url,
                        aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name=server.region)


def _identity_document(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The same statements as an IAM identity policy (no Principal element)."""
    return {"Version": policy["Version"],
            "Statement": [{k: v for k, v in s.items() if k != "Principal"}
                          for s in policy["Statement"]]}


def test_moto_stores_the_bucket_policy_verbatim(moto_server: S3Server) -> None:
    """put_bucket_policy / get_bucket_policy round-trip on moto_server. moto 5 stores a
    bucket policy without validating it, so the same statements also go through
    moto's IAM policy validator (put_user_policy), which checks the document's
    grammar: Version, Effect, Action and Resource forms, condition operators, Sids."""
    c = moto_server.client()
    bucket = moto_server.bucket()
    store = f"s3://{bucket}/warehouse/"
    iam = _iam(moto_server)
    docs = {r: bucket_policy(store, r, ARN[r]) for r in ROLES}
    docs["combined"] = combined_bucket_policy(store, ARN)
    for name, doc in docs.items():
        c.put_bucket_policy(Bucket=bucket, Policy=json.dumps(doc))
        assert json.loads(c.get_bucket_policy(Bucket=bucket)["Policy"]) == doc, name
        user = f"cleanup-{name}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="cleanup",
                            PolicyDocument=json.dumps(_identity_document(doc)))
        got = iam.get_user_policy(UserName=user, PolicyName="cleanup")["PolicyDocument"]
        got = json.loads(got) if isinstance(got, str) else got
        assert got == _identity_document(doc), name
    c.delete_bucket_policy(Bucket=bucket)
    # and the validator is not a rubber stamp: a broken statement is refused
    broken = _identity_document(docs["runner"])
    broken["Statement"][0]["Effect"] = "Maybe"
    user = f"cleanup-broken-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    with pytest.raises(ClientError, match="MalformedPolicyDocument"):
        iam.put_user_policy(UserName=user, PolicyName="x", PolicyDocument=json.dumps(broken))


def _reset_auth(server: S3Server, count: str) -> None:
    req = urllib.request.Request(f"{server.endpoint_url}/moto-api/reset-auth",  # noqa: S310
                                 data=count.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        assert resp.status == 200


@pytest.fixture
def enforcing_moto() -> Iterator[S3Server]:
    """A moto_server of this test's own (the session one must stay open) that enforces
    IAM identity policies once setup is done."""
    with start_moto() as server:
        yield server


def test_an_enforcing_s3_refuses_what_the_policies_deny(enforcing_moto: S3Server) -> None:
    """moto authorizes S3 requests against IAM identity policies (not against bucket
    policies that name principals, and without conditions), so each role becomes an IAM
    user holding its statements; then real S3 calls are made with each user's keys."""
    srv = enforcing_moto
    admin, iam = srv.client(), _iam(srv)
    admin.create_bucket(Bucket="lake")
    data, trust = "warehouse/t/part-0001.parquet", "warehouse/_cleanup/trust/root.1.json"
    audit_entry = "warehouse/_cleanup/audit/000000000001.json"
    for k in (data, trust, audit_entry, "warehouse/t/part-0002.parquet", "other/x"):
        admin.put_object(Bucket="lake", Key=k, Body=b"v1")
    clients = {}
    for role in ROLES:
        iam.create_user(UserName=role)
        arn = iam.get_user(UserName=role)["User"]["Arn"]
        doc = _identity_document(bucket_policy("s3://lake/warehouse/", role, arn))
        iam.put_user_policy(UserName=role, PolicyName="cleanup", PolicyDocument=json.dumps(doc))
        key = iam.create_access_key(UserName=role)["AccessKey"]
        clients[role] = boto3.client(
            "s3", endpoint_url=srv.endpoint_url, aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"], region_name=srv.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    _reset_auth(srv, "0")  # from now on every request is authorized

    def ok(role: str, op: str, **kw: Any) -> bool:
        """True if allowed, False if refused with AccessDenied (any other error fails)."""
        code = ""
        try:
            getattr(clients[role], op)(Bucket="lake", **kw)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
        assert code in ("", "AccessDenied"), (role, op, kw, code)
        return code == ""

    try:
        for role in ROLES:
            assert ok(role, "get_object", Key=data)
            assert ok(role, "head_object", Key=trust)
            assert ok(role, "list_objects_v2", Prefix="warehouse/")
            assert ok(role, "get_bucket_location")
            assert ok(role, "put_object", Key="warehouse/_cleanup/plans/p1/plan.json", Body=b"p")
            assert ok(role, "put_object", Key=f"warehouse/_cleanup/audit/{role}.json", Body=b"a")
            assert not ok(role, "put_object", Key=trust, Body=b"forged")
            assert not ok(role, "delete_object", Key=trust)
            assert not ok(role, "delete_object", Key=audit_entry)
            assert not ok(role, "get_object", Key="other/x")  # outside the store
            assert not ok(role, "put_object", Key="other/y", Body=b"x")
            assert not ok(role, "delete_bucket_policy")
        for role in ("planner", "approver"):
            assert not ok(role, "delete_object", Key=data)
            assert not ok(role, "put_object", Key=data, Body=b"overwrite")
            assert not ok(role, "put_object", Key="warehouse/_cleanup/quarantine/p/x",
                          Body=b"q")
            assert not ok(role, "get_bucket_versioning")
            # stage records and consumed marks are the runner's alone (I10, I8)
            assert not ok(role, "put_object", Key="warehouse/_cleanup/plans/p1/stages/0/"
                          "finished.json", Body=b"forged")
            assert not ok(role, "put_object", Key="warehouse/_cleanup/plans/p1/challenges/"
                          "execute.0.ab.consumed", Body=b"forged")
        assert ok("runner", "put_object", Key="warehouse/_cleanup/plans/p1/stages/0/"
                  "finished.json", Body=b"signed")
        assert ok("planner", "put_object", Key="warehouse/_cleanup/clock/probe-1", Body=b"c")
        assert not ok("approver", "put_object", Key="warehouse/_cleanup/clock/probe-2",
                      Body=b"c")
        # the runner: quarantine (copy + delete), restore, lock, versioning reads
        assert ok("runner", "copy_object", Key="warehouse/_cleanup/quarantine/p1/t/part-0001",
                  CopySource={"Bucket": "lake", "Key": data})
        assert ok("runner", "delete_object", Key=data)
        assert ok("runner", "put_object", Key="warehouse/_cleanup/lock", Body=b"l")
        assert ok("runner", "delete_object", Key="warehouse/_cleanup/lock")
        assert ok("runner", "get_bucket_versioning")
        assert ok("runner", "list_object_versions", Prefix="warehouse/t/")
        assert ok("runner", "delete_object", Key="warehouse/_cleanup/clock/probe-1")
    finally:
        _reset_auth(srv, "inf")
    # what was denied did not happen
    assert admin.get_object(Bucket="lake", Key=trust)["Body"].read() == b"v1"
    assert admin.get_object(Bucket="lake", Key=audit_entry)["Body"].read() == b"v1"
    assert admin.get_object(Bucket="lake", Key="warehouse/t/part-0002.parquet")[
        "Body"].read() == b"v1"


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def trust_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cleanup trust iam-policy`` on the real root command, for this test only (the
    command is registered in cleanup/cli/main.py separately)."""
    from cleanup.cli.main import cli

    group = click.Group("trust")
    group.add_command(iam_policy)
    monkeypatch.setitem(cli.commands, "trust", group)


def test_cli_roles_are_the_library_roles() -> None:
    assert CLI_ROLES == ROLES
    assert iam_policy.name == "iam-policy"


@pytest.mark.usefixtures("trust_group")
@pytest.mark.parametrize("role", ROLES)
def test_cli_prints_the_policy(role: str) -> None:
    r = run_cli(["trust", "iam-policy", "--store", STORE, "--role", role,
                 "--principal", ARN[role]])
    assert r.code == 0, r.err
    assert r.err == ""
    want = bucket_policy(STORE, role, ARN[role])
    assert json.loads(r.out) == want
    assert r.out == json.dumps(want, indent=2, sort_keys=True) + "\n"


@pytest.mark.usefixtures("trust_group")
def test_cli_one_line_errors(tmp_path: Any) -> None:
    r = run_cli(["trust", "iam-policy", "--store", str(tmp_path), "--role", "runner",
                 "--principal", ARN["runner"]])
    assert_one_line_error(r, 2, "is not an S3 store")
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert r.out == ""
    r = run_cli(["trust", "iam-policy", "--store", STORE, "--role", "runner",
                 "--principal", "*"])
    assert_one_line_error(r, 2, "contains '*'")
    assert len(r.err.strip().splitlines()) == 1, r.err
    r = run_cli(["trust", "iam-policy", "--store", STORE, "--role", "admin",
                 "--principal", ARN["runner"]])
    assert_one_line_error(r, 2, "Invalid value for '--role'")
    r = run_cli(["trust", "iam-policy", "--store", STORE, "--principal", ARN["runner"]])
    assert_one_line_error(r, 2, "Missing option '--role'")
