"""Key length limits (cleanup.core.limits): bytes, not characters; the SQL twin agrees."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.limits import (
    NAME_MAX,
    PATH_MAX,
    QUARANTINE_DIR,
    S3_MAX_KEY_BYTES,
    key_fits,
    max_key_bytes,
    quarantine_key_fits,
    too_long,
    too_long_sql,
)
from cleanup.core.paths import StoreRef
from cleanup.stores.base import quarantine_key

PLAN = "f" * 64
S3 = StoreRef("s3", bucket="b", prefix="pre/")
S3_ROOT = StoreRef("s3", bucket="b", prefix="")
LOCAL = StoreRef("local", root="/srv/data")
LOCAL_SLASH = StoreRef("local", root="/")


def test_max_key_bytes() -> None:
    assert max_key_bytes("s3") == S3_MAX_KEY_BYTES == 1024
    assert max_key_bytes("local") == PATH_MAX - 1 == 4095
    with pytest.raises(ValueError, match="unknown store kind"):
        max_key_bytes("gcs")


def test_quarantine_dir_matches_the_stores() -> None:
    assert quarantine_key(PLAN, "k") == f"{QUARANTINE_DIR}{PLAN}/k"


def test_s3_limit_counts_prefix_and_utf8_bytes() -> None:
    assert key_fits("s3", "", "a" * 1024)
    assert not key_fits("s3", "", "a" * 1025)
    assert key_fits("s3", "pre/", "a" * 1020)
    assert not key_fits("s3", "pre/", "a" * 1021)
    assert key_fits("s3", "", "é" * 512)  # 1024 bytes, 512 characters
    assert not key_fits("s3", "", "é" * 512 + "a")
    assert key_fits("s3", "", "x/" + "a" * 1000)  # no per-segment limit in S3


def test_local_limits_name_max_and_path_max() -> None:
    assert key_fits("local", "/srv", "a" * NAME_MAX)
    assert not key_fits("local", "/srv", "a" * (NAME_MAX + 1))
    assert not key_fits("local", "/srv", "d/" + "é" * 128)  # 256 bytes in one component
    assert key_fits("local", "/srv", "d/" + "é" * 127)
    many = "/".join(["a" * 200] * 21)  # components fit, the path (4225 bytes) does not
    assert not key_fits("local", "/srv", many)
    # /srv/ + key <= 4095 bytes
    exact = "/".join(["a" * 254] * 16 + ["b" * 10])
    assert len(exact) == 4090
    assert key_fits("local", "/srv", exact)
    assert not key_fits("local", "/srv", exact + "b")
    assert key_fits("local", "/", "a" * 255)


def test_quarantine_location_is_85_bytes_longer() -> None:
    extra = len(quarantine_key(PLAN, "x")) - 1
    assert extra == 85
    assert quarantine_key_fits("s3", "", "a" * (1024 - extra))
    assert not quarantine_key_fits("s3", "", "a" * (1024 - extra + 1))
    assert key_fits("s3", "", "a" * (1024 - extra + 1))
    assert too_long(S3_ROOT, "a" * (1024 - extra + 1))
    assert not too_long(S3_ROOT, "a" * (1024 - extra + 1), quarantine=False)
    assert quarantine_key_fits("s3", "", "a" * (1024 - 20 - 17 - 1), plan_id_len=17)


def _sql_flags(keys: list[str], ref: StoreRef, **kw: object) -> list[bool]:
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE k (i INTEGER, key VARCHAR)")
        con.executemany("INSERT INTO k VALUES (?, ?)", list(enumerate(keys)))
        expr = too_long_sql("key", ref, **kw)  # type: ignore[arg-type]
        return [bool(r[0]) for r in con.execute(f"SELECT {expr} FROM k ORDER BY i").fetchall()]
    finally:
        con.close()


def test_too_long_sql_examples() -> None:
    keys = ["a" * 255, "a" * 256, "d/" + "é" * 127, "d/" + "é" * 128, "😀" * 63 + "abc",
            "😀" * 63 + "abcd", "\u0800" * 85, "\u0800" * 86, "/".join(["a" * 250] * 16)]
    for ref in (LOCAL, LOCAL_SLASH, S3, S3_ROOT):
        for quarantine in (True, False):
            assert _sql_flags(keys, ref, quarantine=quarantine) == [
                too_long(ref, k, quarantine=quarantine) for k in keys], (ref, quarantine)


def test_too_long_sql_null_key_is_false() -> None:
    con = duckdb.connect()
    assert con.execute(f"SELECT {too_long_sql('k', LOCAL)} FROM (SELECT NULL::VARCHAR AS k)"
                       ).fetchone() == (False,)
    con.close()


# Keys mixing 1-, 2-, 3- and 4-byte characters and slashes, near the limits.
_chars = st.sampled_from(["a", "/", "é", "\u0800", "日", "😀", " ", "%"])
_piece = st.builds(lambda c, n: c * n, _chars, st.integers(0, 300))
_keys = st.lists(_piece, min_size=1, max_size=8).map("".join)
_refs = st.sampled_from([
    LOCAL, LOCAL_SLASH, StoreRef("local", root="/" + "r" * 3000),
    S3, S3_ROOT, StoreRef("s3", bucket="b", prefix="p" * 900 + "/"),
])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.lists(_keys, min_size=1, max_size=20), ref=_refs, quarantine=st.booleans())
def test_too_long_sql_agrees_with_python(keys: list[str], ref: StoreRef,
                                         quarantine: bool) -> None:
    assert _sql_flags(keys, ref, quarantine=quarantine) == [
        too_long(ref, k, quarantine=quarantine) for k in keys]
