"""Store conformance: every method's written contract (cleanup/stores/base.py), run
against every store kind the factories in tests/contract/conftest.py build (local
directory, moto_server, rclone serve s3, fake-gcs-server, Azurite). Where a kind does not
honour something, its row in the capability table says so and the test asserts the
documented fallback."""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta

from cleanup.lock import probe_conditional_writes
from cleanup.stores.base import ObjectInfo, quarantine_key
from tests.contract.conftest import StoreUnderTest

NFC = unicodedata.normalize("NFC", "caf\u00e9")
NFD = unicodedata.normalize("NFD", "caf\u00e9")
# Keys whose exact bytes matter: spaces, both Unicode normalization forms of one name
# (two different keys), percent signs that look encoded, plus signs that look like spaces.
AWKWARD = [
    "t/plain.parquet",
    "t/with space.parquet",
    " leading and trailing ",
    f"u/{NFC}.bin",
    f"u/{NFD}.bin",
    "p/p%41.bin",
    "p/100%.bin",
    "p/a+b.bin",
    "p/a b.bin",
    "deep/a/b/c/d/e.txt",
]


def body(key: str) -> bytes:
    return f"content of {key!r}\n".encode()


def seed_all(sut: StoreUnderTest) -> tuple[datetime, datetime]:
    before = datetime.now(UTC)
    for k in AWKWARD:
        sut.seed(k, body(k))
    sut.seed("_cleanup/audit/000000000001.json", b"{}")  # reserved: never listed
    return before, datetime.now(UTC)


def test_nfc_and_nfd_are_different_keys() -> None:
    assert NFC != NFD
    assert NFC.encode() != NFD.encode()


def test_listing_is_exactly_once_with_metadata_and_exact_keys(sut: StoreUnderTest) -> None:
    before, after = seed_all(sut)
    listed = list(sut.store.iter_objects())
    counts = Counter(o.key for o in listed)
    assert all(n == 1 for n in counts.values()), counts
    assert {k.encode() for k in counts} == {k.encode() for k in AWKWARD}  # byte for byte
    precision = sut.store.precision
    for o in listed:
        assert o.size == len(body(o.key))
        assert o.etag
        if sut.name != "local" and sut.caps.md5_etag:
            assert o.etag == hashlib.md5(body(o.key)).hexdigest()  # noqa: S324
        assert o.last_modified.tzinfo is not None
        # Never earlier than the write: the write is in [lm, lm + precision).
        assert o.last_modified + precision >= before - timedelta(seconds=1), o
        assert o.last_modified <= after + timedelta(seconds=1), o


def test_get_bytes_and_current_agree_with_the_listing(sut: StoreUnderTest) -> None:
    seed_all(sut)
    listed = {o.key: o for o in sut.store.iter_objects()}
    for k in AWKWARD:
        assert sut.store.get_bytes(k) == body(k)
    assert sut.store.get_bytes("t/absent.parquet") is None
    cur = sut.store.current([*AWKWARD, "t/absent.parquet"])
    assert set(cur) == set(AWKWARD)  # absent keys are left out
    for k, info in cur.items():
        assert (info.key, info.size, info.etag) == (k, listed[k].size, listed[k].etag)
        assert info.last_modified == listed[k].last_modified
    assert sut.store.current([]) == {}


def test_put_get_list_and_delete_keys(sut: StoreUnderTest) -> None:
    s = sut.store
    s.put("_cleanup/x/b", b"2")
    s.put("_cleanup/x/a", b"1")
    s.put("_cleanup/x/a", b"1 replaced")  # create or replace
    s.put("_cleanup/y/c", b"3")
    assert s.get_bytes("_cleanup/x/a") == b"1 replaced"
    assert s.list_keys("_cleanup/x/") == ["_cleanup/x/a", "_cleanup/x/b"]  # sorted, relative
    assert s.list_keys("_cleanup/nothing/") == []
    s.delete_key("_cleanup/x/a")
    s.delete_key("_cleanup/x/a")  # absent: not an error
    assert s.get_bytes("_cleanup/x/a") is None
    assert s.list_keys("_cleanup/x/") == ["_cleanup/x/b"]
    assert [o.key for o in s.iter_objects()] == []  # the reserved prefix is never listed


def test_put_if_absent_or_the_lock_probe_detects_it(sut: StoreUnderTest) -> None:
    s = sut.store
    assert s.put_if_absent("_cleanup/lock-test", b"first") is True
    second = s.put_if_absent("_cleanup/lock-test", b"second")
    if sut.caps.conditional_create:
        assert second is False
        assert s.get_bytes("_cleanup/lock-test") == b"first"  # nothing written
        assert probe_conditional_writes(s) is True
    else:
        assert second is True  # the server ignored If-None-Match and overwrote
        assert s.get_bytes("_cleanup/lock-test") == b"second"
        assert probe_conditional_writes(s) is False  # ... which is what I12 checks first
    assert s.list_keys("_cleanup/probe/") == []  # the probe cleans up after itself
    # A store that states the capability (ConditionalStore) must state it truthfully.
    declared = getattr(s, "conditional_writes_honoured", None)
    if declared is not None:
        assert declared() is sut.caps.conditional_create


def test_lookups_of_one_unicode_form_never_find_the_other(sut: StoreUnderTest,
                                                          plan_id: str) -> None:
    nfc, nfd = f"u/{NFC}.bin", f"u/{NFD}.bin"
    sut.seed(nfc, b"nfc")
    sut.seed(nfd, b"nfd")
    assert (sut.store.get_bytes(nfc), sut.store.get_bytes(nfd)) == (b"nfc", b"nfd")
    [obj] = [o for o in sut.store.iter_objects() if o.key == nfd]
    assert sut.store.quarantine(plan_id, [obj]) == {nfd: None}
    assert [o.key for o in sut.store.iter_objects()] == [nfc]  # listings are exact
    if sut.caps.exact_unicode_lookup:
        assert sut.store.get_bytes(nfd) is None
        assert set(sut.store.current([nfc, nfd])) == {nfc}
        assert sut.store.restore(plan_id, nfd) == "restored"
        assert sut.store.get_bytes(nfd) == b"nfd"
    else:  # the absent NFD name is answered with the NFC object ...
        assert sut.store.get_bytes(nfd) == b"nfc"
        # ... so restore sees "something at the key" and refuses: safe, never overwritten
        assert sut.store.restore(plan_id, nfd) == "exists"
        assert sut.raw(quarantine_key(plan_id, nfd)) == b"nfd"
    assert sut.raw(nfc) == b"nfc"


def test_quarantine_then_restore_round_trips_byte_for_byte(sut: StoreUnderTest,
                                                          plan_id: str) -> None:
    """Every awkward key (one Unicode form of the shared name where lookups are not exact:
    see the test above) moves to quarantine and back, byte for byte."""
    keys = AWKWARD if sut.caps.exact_unicode_lookup else [
        k for k in AWKWARD if k != f"u/{NFD}.bin"]
    for k in keys:
        sut.seed(k, body(k))
    objs = list(sut.store.iter_objects())
    assert sut.store.quarantine(plan_id, objs) == {o.key: None for o in objs}
    assert list(sut.store.iter_objects()) == []
    for k in keys:
        assert sut.raw(k) is None
        assert sut.raw(quarantine_key(plan_id, k)) == body(k)
    assert sorted(sut.store.list_keys(f"_cleanup/quarantine/{plan_id}/")) == sorted(
        quarantine_key(plan_id, k) for k in keys)
    for k in keys:
        assert sut.store.restore(plan_id, k) == "restored"
        assert sut.store.restore(plan_id, k) == "not-quarantined"
    for k in keys:
        assert sut.store.get_bytes(k) == body(k)
        assert sut.raw(quarantine_key(plan_id, k)) is None
    assert {o.key for o in sut.store.iter_objects()} == set(keys)


def test_restore_never_overwrites_a_new_object(sut: StoreUnderTest, plan_id: str) -> None:
    sut.seed("t/k.bin", b"old")
    [obj] = list(sut.store.iter_objects())
    assert sut.store.quarantine(plan_id, [obj]) == {"t/k.bin": None}
    sut.seed("t/k.bin", b"written since")
    assert sut.store.restore(plan_id, "t/k.bin") == "exists"
    assert sut.raw("t/k.bin") == b"written since"
    assert sut.raw(quarantine_key(plan_id, "t/k.bin")) == b"old"  # still recoverable


def test_quarantine_of_a_changed_object_is_refused(sut: StoreUnderTest, plan_id: str) -> None:
    sut.seed("t/k.bin", b"planned content")
    [obj] = list(sut.store.iter_objects())
    sut.seed("t/k.bin", b"rewritten after the listing")
    out = sut.store.quarantine(plan_id, [obj])
    if sut.caps.conditional_copy:
        assert out == {"t/k.bin": "changed"}
        assert sut.raw("t/k.bin") == b"rewritten after the listing"
        assert sut.raw(quarantine_key(plan_id, "t/k.bin")) is None
    else:
        # The server copies whatever is there now and the delete is not conditional
        # either: the rewritten object is quarantined, not refused. Nothing is lost (it
        # restores byte for byte); the executor's re-check just before is the guard.
        assert out == {"t/k.bin": None}
        assert sut.raw("t/k.bin") is None
        assert sut.raw(quarantine_key(plan_id, "t/k.bin")) == b"rewritten after the listing"
        assert sut.store.restore(plan_id, "t/k.bin") == "restored"
        assert sut.raw("t/k.bin") == b"rewritten after the listing"


def test_quarantine_of_a_missing_object(sut: StoreUnderTest, plan_id: str) -> None:
    ghost = ObjectInfo("t/ghost.bin", 5, datetime.now(UTC), "0" * 32)
    assert sut.store.quarantine(plan_id, [ghost]) == {"t/ghost.bin": "missing"}
    assert sut.raw(quarantine_key(plan_id, "t/ghost.bin")) is None


def test_delete_removes_exactly_the_unchanged_objects(sut: StoreUnderTest) -> None:
    sut.seed("t/a.bin", b"a")
    sut.seed("t/b.bin", b"b")
    sut.seed("t/keep.bin", b"keep")
    objs = {o.key: o for o in sut.store.iter_objects()}
    sut.seed("t/b.bin", b"b rewritten")
    ghost = ObjectInfo("t/ghost.bin", 1, datetime.now(UTC), "0" * 32)
    out = sut.store.delete([objs["t/a.bin"], objs["t/b.bin"], ghost])
    assert out["t/a.bin"] is None
    assert sut.raw("t/a.bin") is None
    assert sut.raw("t/keep.bin") == b"keep"
    if sut.caps.conditional_delete:
        assert out["t/b.bin"] == "changed"
        assert sut.raw("t/b.bin") == b"b rewritten"
    else:  # the server ignores the ETag on DeleteObjects: the executor's re-check guards
        assert out["t/b.bin"] is None
        assert sut.raw("t/b.bin") is None
    assert out["t/ghost.bin"] == ("missing" if sut.caps.reports_missing else None)


def test_purge_removes_only_quarantined_copies(sut: StoreUnderTest, plan_id: str) -> None:
    seed_all(sut)
    objs = [o for o in sut.store.iter_objects() if o.key.startswith("p/")]
    assert sut.store.quarantine(plan_id, objs) == {o.key: None for o in objs}
    keys = [o.key for o in objs]
    assert sut.store.purge(plan_id, keys) == len(keys)
    assert sut.store.list_keys(f"_cleanup/quarantine/{plan_id}/") == []
    assert {o.key for o in sut.store.iter_objects()} == set(AWKWARD) - set(keys)
    again = sut.store.purge(plan_id, keys)
    assert again == (0 if sut.caps.reports_missing else len(keys))
    for k in keys:
        assert sut.store.restore(plan_id, k) == "not-quarantined"


def test_region(sut: StoreUnderTest) -> None:
    assert sut.store.region() == sut.caps.region


def test_clock_probe_brackets_the_store_clock(sut: StoreUnderTest) -> None:
    probe = sut.store.probe_clock()
    assert probe.local_before <= probe.local_after
    assert abs(probe.skew()) <= timedelta(seconds=2)  # same host
    # At most the one probe object (S3 overwrites it and never deletes: principals may not).
    assert sut.store.list_keys("_cleanup/clock/") in ([], ["_cleanup/clock/probe"])


def test_versioning_is_reported_as_the_server_keeps_it(sut: StoreUnderTest) -> None:
    """Quarantine mode ``versioning`` needs a server that keeps versions; the store reports
    the bucket's real status, so a server that ignores the setting is refused (I11)."""
    if sut.enable_versioning is None:
        assert not sut.caps.versioning
        assert not hasattr(sut.store, "versioning_status")
        return
    try:
        sut.enable_versioning()
    except Exception:  # a server without the API at all  # noqa: S110
        pass
    status = sut.store.versioning_status()  # type: ignore[attr-defined]
    assert status == ("Enabled" if sut.caps.versioning else "")
