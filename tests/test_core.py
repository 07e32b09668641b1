"""Unit and property tests of the pure core: times, paths, stages, policy, canonical JSON."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup.core.canonical import canonical_json
from cleanup.core.paths import (
    StoreRef,
    fast_key_select,
    normalize_ref,
    parse_store,
    resolve_ref,
    sql_literal,
)
from cleanup.core.policy import Policy
from cleanup.core.stages import (
    DEFAULT_TENANT_PATTERN,
    assign_stage,
    compile_tenant_pattern,
    extract_tenant,
    parse_stages,
)
from cleanup.core.timeutil import format_duration, format_time, parse_duration, parse_time
from cleanup.errors import InvariantViolation, UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("45m", timedelta(minutes=45)),
     ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
     ("500ms", timedelta(milliseconds=500))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "24", "h", "-1h", "1.5h", "1w", "24 hours"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**12))
def test_duration_round_trip(us: int) -> None:
    d = timedelta(microseconds=us)
    assert parse_duration(format_duration(d)) == d


def test_format_duration_prefers_hours_for_a_day() -> None:
    assert format_duration(timedelta(hours=24)) == "24h"
    assert format_duration(timedelta(days=7)) == "7d"


def test_parse_time_requires_zone() -> None:
    with pytest.raises(UsageError, match="has no zone"):
        parse_time("2026-05-14T21:30:00")
    assert parse_time("2026-05-14T23:30:00+02:00") == datetime(2026, 5, 14, 21, 30, tzinfo=UTC)
    assert format_time(parse_time("2026-05-14T21:30:00Z")) == "2026-05-14T21:30:00Z"


@pytest.mark.parametrize(
    ("url", "ref"),
    [("s3://b/p", StoreRef("s3", bucket="b", prefix="p/")),
     ("s3a://b/", StoreRef("s3", bucket="b", prefix="")),
     ("s3://b", StoreRef("s3", bucket="b", prefix="")),
     ("file:///data/x/", StoreRef("local", root="/data/x")),
     ("/data/x/../y", StoreRef("local", root="/data/y"))],
)
def test_parse_store(url: str, ref: StoreRef) -> None:
    assert parse_store(url) == ref


@pytest.mark.parametrize("bad", ["hdfs://b/p", "s3:///p", "/", "", "s3://b//p"])
def test_parse_store_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_store(bad)


S3_STORE = StoreRef("s3", bucket="bkt", prefix="data/")
LOCAL_STORE = StoreRef("local", root="/srv/store")


@pytest.mark.parametrize(
    ("ref", "store", "key"),
    [("s3://bkt/data/t/x.parquet", S3_STORE, "t/x.parquet"),
     ("s3a://bkt/data/t/x.parquet", S3_STORE, "t/x.parquet"),
     ("s3n://bkt/data/t/x.parquet", S3_STORE, "t/x.parquet"),
     ("s3://other/data/t/x.parquet", S3_STORE, None),
     ("s3://bkt/elsewhere/x", S3_STORE, None),
     ("t/x.parquet", S3_STORE, "t/x.parquet"),
     ("/srv/store/t/x", S3_STORE, None),
     ("/srv/store/t/x", LOCAL_STORE, "t/x"),
     ("file:///srv/store/t/x", LOCAL_STORE, "t/x"),
     ("/srv/storeX/t/x", LOCAL_STORE, None),
     ("hdfs://nn/t/x", LOCAL_STORE, None),
     ("", LOCAL_STORE, None),
     ("s3://bkt/data/", S3_STORE, None)],
)
def test_normalize_ref(ref: str, store: StoreRef, key: str | None) -> None:
    assert normalize_ref(ref, store) == key


_ref_text = st.one_of(
    st.text(max_size=30),
    st.builds(lambda scheme, rest: f"{scheme}://bkt/{rest}",
              st.sampled_from(["s3", "s3a", "s3n", "gs", "S3"]),
              st.text(max_size=20)),
    st.builds(lambda rest: f"s3://bkt/data/{rest}", st.text(max_size=20)),
    st.builds(lambda rest: f"/srv/store/{rest}", st.text(max_size=20)),
    st.builds(lambda rest: f"file:///srv/store/{rest}", st.text(max_size=20)),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_ref_text, min_size=1, max_size=20))
def test_i4_sql_fast_path_agrees_with_resolver(refs: list[str]) -> None:
    """I4 paths-agree: wherever the SQL fast path answers, it equals the one resolver."""
    refs = [r.replace("\x00", "") for r in refs]
    con = duckdb.connect()
    values = ", ".join(f"({i}, {sql_literal(r)})" for i, r in enumerate(refs))
    for store in (S3_STORE, LOCAL_STORE, StoreRef("s3", bucket="bkt", prefix="")):
        for enc in ("literal", "uri"):
            sel = fast_key_select(f"(SELECT r AS key, i FROM (VALUES {values}) v(i, r))",
                                  store, enc)
            rows = con.execute(f"SELECT fk, ref FROM ({sel})").fetchall()
            assert sorted(r for _f, r in rows) == sorted(refs)
            for fast, ref in rows:
                if fast is not None:
                    res = resolve_ref(ref, store, encoding=enc)
                    assert (res.cls, res.key) == ("key", fast), ref


def test_parse_stages() -> None:
    assert parse_stages("10%,100%") == [10.0, 100.0]
    for bad in ("10%,50%", "50%,10%,100%", "10,100", "0%,100%", ""):
        with pytest.raises(UsageError):
            parse_stages(bad)


def test_tenant_pattern_needs_named_group() -> None:
    assert compile_tenant_pattern(DEFAULT_TENANT_PATTERN) == 1
    with pytest.raises(UsageError, match="named group 'tenant'"):
        compile_tenant_pattern(r"^([^/]+)/")
    with pytest.raises(UsageError, match="invalid --tenant-pattern"):
        compile_tenant_pattern(r"^(?P<tenant>[")


@settings(deadline=None)  # DuckDB per example: wall time depends on the machine's load
@given(st.text(min_size=1, max_size=12).filter(lambda t: "/" not in t and "\n" not in t),
       st.text(max_size=12))
def test_tenant_extraction_agrees_with_duckdb(tenant: str, rest: str) -> None:
    key = f"{tenant}/{rest}".replace("\x00", "")
    con = duckdb.connect()
    row = con.execute("SELECT regexp_extract(?, ?, 1)", [key, DEFAULT_TENANT_PATTERN]).fetchone()
    assert row is not None
    assert row[0] == extract_tenant(key, DEFAULT_TENANT_PATTERN)


@given(st.lists(st.text(max_size=8), min_size=1, max_size=50, unique=True),
       st.lists(st.text(max_size=8), max_size=5))
def test_stage_assignment_is_deterministic_and_widening(tenants: list[str],
                                                        internal: list[str]) -> None:
    """Internal tenants are stage 0; widening the stages never moves a tenant later."""
    internal_set = frozenset(internal)
    narrow = [assign_stage(t, internal_set, [10.0, 100.0]) for t in tenants]
    again = [assign_stage(t, internal_set, [10.0, 100.0]) for t in tenants]
    assert narrow == again
    for t, s in zip(tenants, narrow, strict=True):
        assert (s == 0) == (t in internal_set)
        assert s in (0, 1, 2)
    wide = [assign_stage(t, internal_set, [50.0, 100.0]) for t in tenants]
    for a, b in zip(narrow, wide, strict=True):
        assert b <= a or a == 0


def test_tenant_hash_is_md5_based_and_stable() -> None:
    # Pinned: a change here would silently reshuffle stages across versions.
    assert int(hashlib.md5(b"acme").hexdigest()[:8], 16) % 10_000 == 8305  # noqa: S324
    assert assign_stage("acme", frozenset(), [10.0, 100.0]) == 2


def test_policy_validation_and_floors() -> None:
    p = Policy().with_values({"max_delete_fraction": "0.2", "min_hold": "48h"})
    assert p.max_delete_fraction == 0.2
    assert p.min_hold == timedelta(hours=48)
    with pytest.raises(UsageError, match="unknown policy value"):
        Policy().with_values({"max_delete": 1})
    with pytest.raises(UsageError, match="between 0 and 1"):
        Policy().with_values({"max_delete_fraction": 2})
    low = Policy().with_values({"min_buffer": "1h"})
    with pytest.raises(InvariantViolation, match="I1 strict-cutoff"):
        low.check_floors(override_minimums=False)
    assert low.check_floors(override_minimums=True)
    assert Policy.from_json(Policy().to_json()) == Policy()


def test_canonical_json_is_sorted_and_stable() -> None:
    a = canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]})
    assert a == b'{"a":[1,{"c":null,"d":"\xc3\xa9"}],"b":1}\n'
    assert json.loads(a) == {"b": 1, "a": [1, {"d": "é", "c": None}]}


def test_names_table_is_the_one_source() -> None:
    """Exit codes in errors.py equal the names table; invariant names are unique and
    every one is written 'I<n> <slug>'."""
    from cleanup import errors
    from cleanup.core import names

    assert errors.UsageError.exit_code == names.EXIT_USAGE
    assert errors.InvariantViolation.exit_code == names.EXIT_INVARIANT
    assert errors.SignoffError.exit_code == names.EXIT_SIGNOFF
    assert errors.ReconciliationHalt.exit_code == names.EXIT_HALT
    assert errors.LockHeld.exit_code == names.EXIT_LOCKED
    assert errors.CleanupError.exit_code == names.EXIT_BUG
    assert len(set(names.INVARIANTS)) == 20
    for i, name in enumerate(names.INVARIANTS, start=1):
        assert name.startswith(f"I{i} ")
