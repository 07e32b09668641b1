"""The safety property of copy verification: over generated source/target worlds, no
object without a verified copy (the same bytes at its mapped key in the target) is ever
a candidate. Once on the verifier with stores that state arbitrary subsets of truthful
checksums (including none, and multipart-like objects that state no MD5), once end to
end through ``cleanup plan --retire-to`` on local stores."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.paths import parse_store
from cleanup.retire import KeyMap, Verifier
from cleanup.stores.base import Checksums
from tests.conftest import make_key
from tests.scenario import Scenario, ok

_SUMS = {"sha256": lambda b: hashlib.sha256(b).hexdigest(),
         "md5": lambda b: hashlib.md5(b).hexdigest(),  # noqa: S324
         "crc32": lambda b: f"{zlib.crc32(b):08x}"}


class FakeStore:
    """An in-memory ChecksumStore: ``objects`` key -> (content, algorithms it states)."""

    def __init__(self, url: str, objects: dict[str, tuple[bytes, frozenset[str]]]) -> None:
        self.ref = parse_store(url)
        self.objects = objects

    def checksums(self, key: str) -> Checksums | None:
        if key not in self.objects:
            return None
        data, algos = self.objects[key]
        return Checksums(key, len(data), {a: _SUMS[a](data) for a in sorted(algos)},
                         hashlib.md5(data).hexdigest(),  # noqa: S324
                         datetime(2026, 1, 1, tzinfo=UTC))

    def read_chunks(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        if key not in self.objects:
            return None
        data = self.objects[key][0]
        return iter([data[i:i + 3] for i in range(0, len(data), 3)] or [b""])


class FakeListedStore(FakeStore):
    """Also lists: sizes and MD5 (only where the object states MD5: a multipart-like
    object does not), the other algorithms only named, as an S3 listing does."""

    def list_checksums(self, keys: Any) -> dict[str, Checksums] | None:
        out = {}
        for k in keys:
            c = self.checksums(k)
            if c is not None:
                out[k] = Checksums(k, c.size, {a: v for a, v in c.sums.items() if a == "md5"},
                                   c.etag, c.last_modified,
                                   more=tuple(a for a in c.sums if a != "md5"))
        return out


contents = st.binary(min_size=0, max_size=12)
algos = st.frozensets(st.sampled_from(sorted(_SUMS)), max_size=3)
copy_state = st.sampled_from(["same", "missing", "other", "truncated", "appended"])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], KeyMap, bool]:
    n = draw(st.integers(1, 8))
    mapped = draw(st.booleans())
    keymap = KeyMap.parse(["a/=b/"]) if mapped else KeyMap()
    src: dict[str, tuple[bytes, frozenset[str]]] = {}
    dst: dict[str, tuple[bytes, frozenset[str]]] = {}
    for i in range(n):
        key = draw(st.sampled_from(["a/", "c/"])) + f"{i}"
        data = draw(contents)
        src[key] = (data, draw(algos))
        tkey = keymap.target_key(key)
        if tkey is None:
            continue
        state = draw(copy_state)
        copy = {"same": data, "missing": None, "other": draw(contents),
                "truncated": data[:-1], "appended": data + b"x"}[state]
        if copy is not None:
            dst[tkey] = (copy, draw(algos))
    return src, dst, keymap, draw(st.booleans())


@settings(max_examples=400, deadline=None)
@given(worlds(), st.booleans(), st.booleans())
def test_no_object_without_a_verified_copy_is_verified(
        world: tuple[dict[str, Any], dict[str, Any], KeyMap, bool], listed: bool,
        policy_listed: bool) -> None:
    """Whatever the stores state and list, and under either ``--checksum`` policy
    (``policy_listed``: MD5 from listings wherever both sides list one)."""
    src, dst, keymap, content = world
    kind = FakeListedStore if listed else FakeStore
    v = Verifier(cast(Any, kind("s3://src/", src)), cast(Any, kind("s3://dst/", dst)),
                 keymap, verify_content=content, workers=1, listed=policy_listed)
    keys = list(src)
    verdicts = v.many([(k, len(src[k][0]), hashlib.md5(src[k][0]).hexdigest())  # noqa: S324
                       for k in keys])
    for key, verdict in zip(keys, verdicts, strict=True):
        data = src[key][0]
        tkey = keymap.target_key(key)
        if verdict.ok:
            assert tkey is not None, verdict
            assert dst.get(tkey, (None,))[0] == data, verdict
            assert verdict.method in (*_SUMS, "content-sha256")
        # ...and an equal copy with a common checksum, or with content reading, is found
        elif tkey in dst and dst[tkey][0] == data and (content or src[key][1] & dst[tkey][1]):
            raise AssertionError(f"an equal copy was not verified: {verdict}")


OLD = time.time() - 3 * 86400


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(contents, copy_state), min_size=1, max_size=6),
       st.booleans())
def test_retire_plan_candidates_all_have_verified_copies(
        tmp_path_factory: Any, keys_dir: Path, objects: list[tuple[bytes, str]],
        content: bool) -> None:
    tmp = tmp_path_factory.mktemp("world")
    src, dst = tmp / "src", tmp / "dst"
    src.mkdir()
    dst.mkdir()
    truth = {}
    for i, (data, state) in enumerate(objects):
        key = f"internal/{i}.bin"
        copy = {"same": data, "missing": None, "other": data[::-1] + b"o",
                "truncated": data[:-1], "appended": data + b"x"}[state]
        for root, body in ((src, data), (dst, copy)):
            if body is None:
                continue
            p = root / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)
            os.utime(p, (OLD, OLD))
        truth[key] = copy == data
    sc = Scenario(tmp, str(src), signers={"alice": make_key(keys_dir, "alice"),
                                          "bob": make_key(keys_dir, "bob")})
    sc.list_store("--trust-mtime")  # no trust root: the plan is made, not executed
    r = ok(sc.cli(["plan", "--store", str(src), "--inventory", str(sc.inventory), "-o",
                   str(sc.plan_dir), "--author", "alice", "--key", str(sc.signer_key("alice")),
                   *sc.reconcile_args, "--internal", "internal", "--stages", "100%",
                   "--retire-to", str(dst), "--allowed-regions", f"{src}=local",
                   "--allowed-regions", f"{dst}=local", "--json",
                   *(["--verify-content"] if content else [])]))
    manifest = set(sc.manifest())
    assert all(truth[k] for k in manifest)
    assert manifest == {k for k, same in truth.items() if same}
    copies = json.loads(r.out)["copies"]
    assert copies["blocking"] == sum(not s for s in truth.values())
