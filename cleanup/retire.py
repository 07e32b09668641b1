"""Copy verification: retiring a store after a region migration (``plan --retire-to``)
and the recoverability guard of orphan cleanups (``plan --require-copy-in``).

A source object is *verified* when its copy in the target store (the same key, or the
key under a ``--map 'src-prefix/=dst-prefix/'`` rule) exists with the same size and the
same content: the strongest whole-content checksum both stores state
(:data:`cleanup.stores.base.CHECKSUM_ALGORITHMS`: S3 additional checksums, a
single-part MD5 ETag, local sha256/md5 computed by reading), or, with
``--verify-content``, the sha256 of both objects read in chunks (bounded memory, a
thread pool). A comparable checksum that differs blocks the object even with
``--verify-content``. Every other object is *blocking*, with its reason, and is never a
candidate: the planner passes the blocking keys to the engine as never-candidates.

Regions (I13 extended): a plan declares the regions each store's data may live in
(``--allowed-regions STORE=R1[,R2]``, or ``[residency]`` in cleanup.toml). A
retirement must declare them for the source and the target; the target must be in
its own declared regions and in the source's (so "retiring" the only EU copy to a US
bucket is refused). Quarantine stays in the source store, so in the source region.

Execution calls :func:`recheck_copies` for every batch after reconciliation (I9) and
before the store re-check: a copy missing or changed since the plan halts the stage
(exit 5) before the batch is touched. This module never imports the executor.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from datetime import datetime as datetime_cls
from typing import TYPE_CHECKING, Any

from cleanup.core import invariants as inv
from cleanup.core.names import I11, I13
from cleanup.errors import InvariantViolation, ReconciliationHalt, UsageError
from cleanup.stores.base import (
    CHECKSUM_ALGORITHMS,
    Checksums,
    ChecksumStore,
    ListedChecksumStore,
    capability,
    etag_md5,
)

if TYPE_CHECKING:
    from datetime import datetime

    from cleanup.engine import EngineInput, EngineResult
    from cleanup.journal import Journal
    from cleanup.model import CopiesInfo
    from cleanup.stores.base import ObjectInfo, Store

#: reads of ``--verify-content`` (per worker: memory is workers x chunk)
CHUNK = 1 << 20
WORKERS = 16
#: objects verified per round (bounded memory over any number of candidates)
ROUND = 10_000
EXAMPLES = 100

VERIFIED = "verified"
# Reasons a source object is blocking (never a candidate). The first group is about the
# copy; the second about the source object itself (changed since it was listed).
MISSING = "copy missing"
SIZE = "size differs"
CHECKSUM = "checksum differs"
CONTENT = "content differs"
NO_CHECKSUM = "no comparable checksum"
UNMAPPED = "no --map rule covers the key"
SOURCE_GONE = "source missing"
SOURCE_CHANGED = "source changed since listing"
COPY_REASONS = frozenset({MISSING, SIZE, CHECKSUM, CONTENT, NO_CHECKSUM, UNMAPPED})


@dataclass(frozen=True)
class KeyMap:
    """``--map 'src-prefix/=dst-prefix/'`` rules: a key's copy is at the key with its
    longest matching source prefix replaced. Without rules a copy has the same key;
    with rules a key no rule covers has no copy (blocking)."""

    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> KeyMap:
        rules = []
        for spec in specs:
            src, sep, dst = spec.partition("=")
            if not sep:
                raise UsageError(f"--map {spec!r} is not SRC-PREFIX=DST-PREFIX",
                                 hint="e.g. --map 'eu/=' or --map 'data/=archive/data/'")
            if src.startswith("/") or dst.startswith("/") or ".." in (src + "/" + dst).split("/"):
                raise UsageError(f"--map {spec!r}: prefixes are store-relative and confined")
            rules.append((src, dst))
        srcs = [s for s, _d in rules]
        if len(set(srcs)) != len(srcs):
            raise UsageError("--map names the same source prefix twice")
        return cls(tuple(sorted(rules, key=lambda r: (-len(r[0]), r[0]))))

    def target_key(self, key: str) -> str | None:
        if not self.rules:
            return key
        for src, dst in self.rules:  # longest source prefix first
            if key.startswith(src):
                return dst + key[len(src):]
        return None


@dataclass(frozen=True)
class Verdict:
    key: str
    size: int
    reason: str  # VERIFIED or a blocking reason
    method: str | None = None  # the checksum compared, or content-sha256
    target_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason == VERIFIED


def _checksummer(store: Store, role: str) -> ChecksumStore:
    cap = capability(store, ChecksumStore)
    if cap is None:
        raise UsageError(f"{role} store {store.ref.url} cannot state checksums or stream "
                         "reads (copy verification supports S3, GCS, Azure and local stores)")
    return cap


_ABOVE_MD5 = frozenset(CHECKSUM_ALGORITHMS[:CHECKSUM_ALGORITHMS.index("md5")])
_EPOCH = datetime_cls(1970, 1, 1, tzinfo=UTC)


def _strongest(a: Checksums, b: Checksums) -> str | None:
    """The strongest algorithm both objects may state (values known or only named)."""
    return next((x for x in CHECKSUM_ALGORITHMS
                 if (x in a.sums or x in a.more) and (x in b.sums or x in b.more)), None)


def _common(a: Checksums, b: Checksums) -> str | None:
    """The strongest algorithm both objects state."""
    return next((x for x in CHECKSUM_ALGORITHMS if x in a.sums and x in b.sums), None)


def _content_sha256(store: ChecksumStore, key: str, size: int) -> str | None:
    """sha256 of the object read in chunks; None if it is gone or not ``size`` long."""
    chunks = store.read_chunks(key, CHUNK)
    if chunks is None:
        return None
    h, n = hashlib.sha256(), 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return h.hexdigest() if n == size else None


@dataclass
class Verifier:
    """Compares source objects with their copies in ``target``."""

    source: Store
    target: Store
    keymap: KeyMap = field(default_factory=KeyMap)
    verify_content: bool = False
    workers: int = WORKERS
    #: ``plan --checksum listed``: where both listings state an MD5 (single-part ETags),
    #: compare it, even if the objects also state a stronger checksum that only a HEAD
    #: of each would show (rclone check's comparison). Default: the strongest stated.
    listed: bool = False

    def __post_init__(self) -> None:
        self._src = _checksummer(self.source, "source")
        self._tgt = _checksummer(self.target, "target")
        self._src_list = capability(self.source, ListedChecksumStore)
        self._tgt_list = capability(self.target, ListedChecksumStore)

    def one(self, key: str, size: int, etag: str | None) -> Verdict:
        """The verdict for one source object as planned (``size``, ``etag``)."""
        tkey = self.keymap.target_key(key)
        if tkey is None:
            return Verdict(key, size, UNMAPPED)
        t = self._tgt.checksums(tkey)
        if t is None:
            return Verdict(key, size, MISSING, target_key=tkey)
        if t.size != size:
            return Verdict(key, size, SIZE, target_key=tkey)
        s = self._src.checksums(key)
        if s is None:
            return Verdict(key, size, SOURCE_GONE, target_key=tkey)
        if s.size != size or (etag is not None and s.etag != etag):
            return Verdict(key, size, SOURCE_CHANGED, target_key=tkey)
        algo = _common(s, t)
        if algo is not None and s.sums[algo] != t.sums[algo]:
            return Verdict(key, size, f"{CHECKSUM} ({algo})", algo, tkey)
        if self.verify_content:
            return self.by_content(key, size, tkey)
        if algo is None:
            return Verdict(key, size, NO_CHECKSUM, target_key=tkey)
        return Verdict(key, size, VERIFIED, algo, tkey)

    def by_content(self, key: str, size: int, tkey: str) -> Verdict:
        """Both objects read and hashed (sha256), each in chunks."""
        ts = _content_sha256(self._tgt, tkey, size)
        if ts is None:
            return Verdict(key, size, MISSING if self._tgt.checksums(tkey) is None
                           else SIZE, target_key=tkey)
        ss = _content_sha256(self._src, key, size)
        if ss is None:
            return Verdict(key, size, SOURCE_CHANGED, target_key=tkey)
        if ss != ts:
            return Verdict(key, size, CONTENT, "content-sha256", tkey)
        return Verdict(key, size, VERIFIED, "content-sha256", tkey)

    def many(self, items: Sequence[tuple[str, int, str | None]]) -> list[Verdict]:
        """Verdicts for ``(key, size, etag)`` items, in order. Where both stores list
        checksums (S3), one listing of each side decides missing copies, sizes and, when
        MD5 is the strongest checksum both sides have, the comparison; the rest is
        asked object by object (:meth:`one`) on a thread pool."""
        out: list[Verdict | None] = [None] * len(items)
        # Items the listings passed to content hashing (--verify-content): index -> copy key
        read: dict[int, str] = {}
        if self._src_list is not None and self._tgt_list is not None:
            self._from_listings(items, out, read, self._src_list, self._tgt_list)
        rest = [i for i, v in enumerate(out) if v is None]

        def verdict(i: int) -> Verdict:
            key, size, etag = items[i]
            return self.by_content(key, size, read[i]) if i in read else self.one(key, size,
                                                                                  etag)

        if len(rest) <= 1 or self.workers <= 1:
            for i in rest:
                out[i] = verdict(i)
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(rest))) as pool:
                for i, v in zip(rest, pool.map(verdict, rest), strict=True):
                    out[i] = v
        return [v for v in out if v is not None]

    def _listed(self, store: ListedChecksumStore, keys: list[str],
                ) -> dict[str, Checksums] | None:
        """``list_checksums`` of sorted ``keys``, a page's worth of keys per call, the
        calls on the thread pool; None if any range would not list cheaply."""
        parts = [keys[i:i + 1000] for i in range(0, len(keys), 1000)] or [[]]
        if len(parts) == 1 or self.workers <= 1:
            answers = [store.list_checksums(p) for p in parts]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(parts))) as pool:
                answers = list(pool.map(store.list_checksums, parts))
        out: dict[str, Checksums] = {}
        for a in answers:
            if a is None:
                return None
            out.update(a)
        return out

    def _from_listings(self, items: Sequence[tuple[str, int, str | None]],
                       out: list[Verdict | None], read: dict[int, str],
                       src_list: ListedChecksumStore, tgt_list: ListedChecksumStore) -> None:
        """Fill ``out`` with the verdicts the two listings decide. Same rules as
        :meth:`one`: a listed MD5 is a single-part ETag (a multipart ``...-N`` never is);
        an algorithm a listing only names (SHA256, CRC...) is compared by :meth:`one`.
        With --verify-content, pairs that exist with the planned size are marked in
        ``read`` for hashing."""
        tkeys = {it[0]: self.keymap.target_key(it[0]) for it in items}
        tgt = self._listed(tgt_list, sorted({k for k in tkeys.values() if k is not None}))
        if tgt is None:
            return
        # The source as planned (its listed ETag) is enough when MD5 is the strongest
        # checksum the copies could share: no copy names one above it. Otherwise the
        # source is listed too. (A source rewritten since it was listed is skipped by
        # the executor's re-check, which compares that ETag.)
        if self.verify_content or (not self.listed and any(
                set(c.more) & _ABOVE_MD5 for c in tgt.values())) or not all(
                etag_md5(it[2]) is not None for it in items):
            src = self._listed(src_list, sorted(it[0] for it in items))
        else:
            src = {k: Checksums(k, size, {"md5": str(etag).lower()}, etag, _EPOCH)
                   for k, size, etag in items}
        if src is None:
            return
        for i, (key, size, etag) in enumerate(items):
            tkey = tkeys[key]
            if tkey is None:
                out[i] = Verdict(key, size, UNMAPPED)
                continue
            t, s = tgt.get(tkey), src.get(key)
            if t is None:
                out[i] = Verdict(key, size, MISSING, target_key=tkey)
            elif t.size != size:
                out[i] = Verdict(key, size, SIZE, target_key=tkey)
            elif s is None:
                out[i] = Verdict(key, size, SOURCE_GONE, target_key=tkey)
            elif s.size != size or (etag is not None and s.etag != etag):
                out[i] = Verdict(key, size, SOURCE_CHANGED, target_key=tkey)
            elif self.verify_content:
                # Hashed whatever the listed ETags say: an SSE-KMS ETag looks like an MD5
                # but is none, and reading is what --verify-content is for.
                read[i] = tkey
            else:
                algo = _common(s, t) if self.listed else _strongest(s, t)
                if algo is not None and algo in s.sums and algo in t.sums:
                    out[i] = (Verdict(key, size, VERIFIED, algo, tkey)
                              if s.sums[algo] == t.sums[algo]
                              else Verdict(key, size, f"{CHECKSUM} ({algo})", algo, tkey))


def base_reason(reason: str) -> str:
    """``checksum differs (sha256)`` -> ``checksum differs``."""
    return reason.split(" (", 1)[0]


# ---------------------------------------------------------------- regions (I13)


def parse_allowed(specs: Iterable[str], config: str | None) -> dict[str, tuple[str, ...]]:
    """Store URL -> allowed regions: ``[residency]`` of ``config`` (``"STORE" =
    ["R1", "R2"]`` or ``"R1,R2"``), then ``--allowed-regions STORE=R1[,R2]`` (which
    replaces the config's entry for that store)."""
    from cleanup.core.paths import parse_store

    out: dict[str, tuple[str, ...]] = {}
    entries: list[tuple[str, Any, str]] = []
    if config:
        from cleanup.core.policy import read_config

        table = read_config(config).get("residency", {})
        if not isinstance(table, dict):
            raise UsageError(f"config {config}: [residency] must be a table of "
                             "STORE = [REGION, ...]")
        entries += [(k, v, f"config {config} [residency]") for k, v in table.items()]
    for spec in specs:
        store, sep, names = spec.rpartition("=")
        if not sep or not store:
            raise UsageError(f"--allowed-regions {spec!r} is not STORE=REGION[,REGION]")
        entries.append((store, names, "--allowed-regions"))
    for store, value, where in entries:
        regions: tuple[str, ...]
        if isinstance(value, str):
            regions = tuple(r.strip() for r in value.split(",") if r.strip())
        elif isinstance(value, list) and all(isinstance(r, str) for r in value):
            regions = tuple(str(r).strip() for r in value if str(r).strip())
        else:
            raise UsageError(f"{where}: {store!r} must name a list of regions")
        if not regions:
            raise UsageError(f"{where}: {store!r} names no region")
        out[parse_store(store).url] = tuple(sorted(set(regions)))
    return out


def check_regions(mode: str, source: str, source_region: str, target: str,
                  target_region: str, allowed: Mapping[str, tuple[str, ...]]) -> str:
    """I13 for a plan with copies; returns the check's detail or raises. A retirement
    must declare both stores' regions; the target must be in its own declared regions
    and in the source's (the data may only live there)."""
    src_ok, tgt_ok = allowed.get(source), allowed.get(target)
    role = "retirement target" if mode == "retire" else "backup store"
    if mode == "retire":
        for url, regions in ((source, src_ok), (target, tgt_ok)):
            if regions is None:
                raise InvariantViolation(
                    I13, f"a retirement must declare the regions of {url}",
                    hint=f"--allowed-regions {url}=REGION[,REGION] (or [residency] in "
                         "cleanup.toml)")
    if src_ok is not None and source_region not in src_ok:
        raise InvariantViolation(I13, f"source {source} is in {source_region}, not in its "
                                      f"declared regions {', '.join(src_ok)}")
    if tgt_ok is not None and target_region not in tgt_ok:
        raise InvariantViolation(I13, f"{role} {target} is in {target_region}, not in its "
                                      f"declared destination region(s) {', '.join(tgt_ok)}")
    if src_ok is not None and target_region not in src_ok:
        raise InvariantViolation(
            I13, f"{role} {target} is in {target_region}: the data of {source} may live "
                 f"only in {', '.join(src_ok)}"
                 + (", so retiring to it would delete the last copy in an allowed region"
                    if mode == "retire" else ""),
            hint="copy to a store in an allowed region first")
    return (f"{source} in {source_region}; copies in {target} in {target_region}"
            + (f"; allowed: {source}: {', '.join(src_ok)}" if src_ok else "")
            + (f"; {target}: {', '.join(tgt_ok)}" if tgt_ok else ""))


def open_target(url: str, *, endpoint_url: str | None, region: str | None,
                role: str = "target") -> tuple[Store, str]:
    """The target (or backup) store and its region as the store reports it; a region
    given for an S3 target must agree (I13)."""
    from cleanup.core.paths import parse_store
    from cleanup.stores import open_store

    ref = parse_store(url)
    declared = region if (ref.kind == "local" or ref.provider == "azure") else None
    store = open_store(ref, endpoint_url=endpoint_url, region=declared)
    actual = str(store.region())
    if ref.kind == "s3" and ref.provider not in ("gcs", "azure"):
        # A client for the bucket's own region (no cross-region redirects per request).
        store = open_store(ref, endpoint_url=endpoint_url, region=actual)
    if region and actual != region:
        raise InvariantViolation(I13, f"--target-region {region} but {role} {ref.url} is in "
                                      f"{actual}")
    return store, actual


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class CopyOptions:
    """What ``plan --retire-to`` / ``--require-copy-in`` asks for."""

    mode: str  # retire | backup
    target: str
    maps: tuple[str, ...] = ()
    verify_content: bool = False
    strict: bool = False
    allowed_regions: tuple[str, ...] = ()
    target_region: str | None = None
    workers: int = WORKERS
    checksum: str = "strongest"  # or "listed" (cleanup.model.CHECKSUM_POLICIES)


@dataclass
class CopyTally:
    """What planning found: counts, reasons, examples, and the blocking keys' file."""

    checked: int = 0
    checked_bytes: int = 0
    verified: int = 0
    verified_bytes: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    blocking: int = 0
    blocking_bytes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)

    def add(self, v: Verdict) -> None:
        self.checked += 1
        self.checked_bytes += v.size
        if v.ok:
            self.verified += 1
            self.verified_bytes += v.size
            self.methods[v.method or "?"] += 1
        else:
            self.blocking += 1
            self.blocking_bytes += v.size
            self.reasons[base_reason(v.reason)] += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append((v.key, v.reason))


@dataclass
class CopyPlan:
    """A verification prepared at plan time: the opened target and the regions."""

    opts: CopyOptions
    source: Store
    source_url: str
    target_url: str
    target: Store
    target_region: str
    keymap: KeyMap
    allowed: dict[str, tuple[str, ...]]
    region_detail: str
    tally: CopyTally = field(default_factory=CopyTally)

    def info(self) -> CopiesInfo:
        from cleanup.model import CopiesInfo

        t = self.tally
        return CopiesInfo(
            mode=self.opts.mode, target=self.target_url, target_region=self.target_region,
            maps=tuple(sorted(self.keymap.rules)), verify_content=self.opts.verify_content,
            strict=self.opts.strict, allowed_regions=dict(sorted(self.allowed.items())),
            checked=t.checked, checked_bytes=t.checked_bytes, verified=t.verified,
            verified_bytes=t.verified_bytes, methods=dict(sorted(t.methods.items())),
            blocking=t.blocking, blocking_bytes=t.blocking_bytes,
            blocking_reasons=dict(sorted(t.reasons.items())),
            blocking_examples=tuple(sorted(t.examples)), checksum=self.opts.checksum)


def prepare(opts: CopyOptions, *, source: Store, source_url: str, source_region: str,
            endpoint_url: str | None, config: str | None) -> CopyPlan:
    """Open the target and check the regions (I13), refusing before any verification."""
    from cleanup.core.paths import parse_store

    if opts.mode not in ("retire", "backup"):
        raise UsageError(f"copy mode {opts.mode!r} is not retire or backup")
    keymap = KeyMap.parse(opts.maps)
    target_url = parse_store(opts.target).url
    if target_url == source_url:
        raise UsageError(f"the copies' store {target_url} is the store being cleaned",
                         hint="a copy must be in another store")
    allowed = parse_allowed(opts.allowed_regions, config)
    role = "target" if opts.mode == "retire" else "backup"
    target, region = open_target(target_url, endpoint_url=endpoint_url,
                                 region=opts.target_region, role=role)
    detail = check_regions(opts.mode, source_url, source_region, target_url, region, allowed)
    _checksummer(source, "source")
    _checksummer(target, role)
    return CopyPlan(opts, source, source_url, target_url, target, region, keymap, allowed,
                    detail)


def no_snapshot_check(taken_at: datetime) -> inv.Check:
    """The I3 record of a retirement without a reference snapshot."""
    from cleanup.core.names import I3
    from cleanup.core.timeutil import format_time

    return inv.Check(I3, True, "retirement without a reference snapshot: an object is a "
                               "candidate only with a verified copy; taken_at is the store's "
                               f"clock {format_time(taken_at)}",
                     {"rows": None, "source": "retire", "taken_at": format_time(taken_at)})


def empty_snapshot(path: str) -> str:
    """An empty snapshot file for the engine (a retirement has no references)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cleanup.formats import snapshot_schema

    pq.write_table(pa.table({"key": pa.array([], pa.string())}, schema=snapshot_schema()),
                   path)
    return path


def verify_pass(cp: CopyPlan, inp: EngineInput, work: str) -> str:
    """The candidates as the engine computes them without copies, each verified; the
    blocking ones' keys (a Parquet file for :attr:`EngineInput.exclude`). Then the
    planner runs the engine again with them excluded, so every count, check and the
    manifest are of the verified candidates only."""
    from cleanup.engines import open_engine

    first = open_engine(inp)  # either engine: both honour EngineInput.exclude
    try:
        res = first.compute()
        candidates = os.path.join(work, "copies-candidates.parquet")
        first.write_manifest({t: 0 for t in res.tenants}, candidates)
    finally:
        first.close()
    out = verify_candidates(cp, cp.source, candidates,
                            os.path.join(work, "copies-blocking.parquet"))
    strict_refusal(cp)
    return out


def copy_checks(cp: CopyPlan, checks: list[inv.Check], res: EngineResult, *,
                snapshot: bool) -> list[inv.Check]:
    """The plan's checks with copies: I13 (regions) and I11 (copies verified) added. A
    retirement removes every object with a verified copy, so I5's fraction does not
    apply (the verified copies bound it); without a snapshot there are no references
    for I4 either."""
    from cleanup.core.names import I4, I5

    t = cp.tally
    out = []
    for c in checks:
        if cp.opts.mode == "retire" and c.invariant == I5:
            c = inv.Check(I5, True, f"retirement: {res.candidates} candidate(s), each with a "
                                    f"verified copy in {cp.target_url}",
                          {"candidates": res.candidates, "candidate_bytes": res.candidate_bytes,
                           "scope_objects": res.scope_objects})
        elif cp.opts.mode == "retire" and not snapshot and c.invariant == I4:
            c = inv.Check(I4, True, "retirement without references: nothing to resolve", {})
        out.append(c)
    out.append(inv.Check(I13, True, cp.region_detail,
                         {"target": cp.target_url, "target_region": cp.target_region,
                          "allowed_regions": {k: list(v) for k, v in cp.allowed.items()}}))
    out.append(inv.Check(I11, True, f"{t.verified} of {t.checked} object(s) have a verified "
                                    f"copy in {cp.target_url}; {t.blocking} blocking, never "
                                    "candidates",
                         {"verified": t.verified, "blocking": t.blocking,
                          "blocking_reasons": dict(t.reasons), "methods": dict(t.methods)}))
    return out


def verify_candidates(cp: CopyPlan, source: Store, candidates: str, out: str) -> str:
    """Verify every row of the candidate Parquet ``candidates`` (key, size, etag) in
    rounds of :data:`ROUND`; write the blocking keys to ``out`` (Parquet, column
    ``key``) and return it. Counts and examples go to ``cp.tally``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    verifier = Verifier(source, cp.target, cp.keymap, cp.opts.verify_content,
                        cp.opts.workers, listed=cp.opts.checksum == "listed")
    schema = pa.schema([("key", pa.string())])
    with pq.ParquetWriter(out, schema) as writer:
        pf = pq.ParquetFile(candidates)
        for batch in pf.iter_batches(batch_size=ROUND, columns=["key", "size", "etag"]):
            d = batch.to_pydict()
            items = list(zip(d["key"], (int(s) for s in d["size"]), d["etag"], strict=True))
            blocked = []
            for v in verifier.many(items):
                cp.tally.add(v)
                if not v.ok:
                    blocked.append(v.key)
            if blocked:
                writer.write_table(pa.table({"key": pa.array(blocked, pa.string())}))
    return out


def strict_refusal(cp: CopyPlan) -> None:
    """``--require-copy-in --strict``: a candidate without a verified copy refuses the
    plan (I11: nothing is removed whose last good copy it could be)."""
    t = cp.tally
    if cp.opts.strict and t.blocking:
        first = t.examples[0] if t.examples else ("?", "?")
        raise InvariantViolation(
            I11, f"{t.blocking} candidate(s) have no verified copy in {cp.target_url} "
                 f"({', '.join(f'{r}: {n}' for r, n in sorted(t.reasons.items()))}), e.g. "
                 f"{first[0]!r}: {first[1]}",
            hint="copy them first, or plan without --strict to exclude them")


def describe(copies: CopiesInfo, store: str, region: str) -> str:
    """The plan's stores and regions in words (``cleanup show``, the review)."""
    if copies.verify_content:
        how = "copies compared by reading and hashing both objects"
    elif copies.checksum == "listed":
        how = ("copies compared by the checksums both listings state (single-part MD5 "
               "ETags), the strongest stated only where listings do not decide")
    else:
        how = "copies compared by the strongest checksum both objects state"
    if copies.mode == "retire":
        return (f"deletes from {store} in {region} after verifying copies in "
                f"{copies.target} in {copies.target_region}; quarantine stays in {store} "
                f"({region}); {how}")
    return (f"deletes from {store} in {region} only objects with a verified backup copy in "
            f"{copies.target} in {copies.target_region}; {how}")


# ---------------------------------------------------------------- execution


@dataclass
class CopyCheck:
    """The signed plan's copies section and a verifier against its target."""

    info: CopiesInfo
    verifier: Verifier


def open_copy_check(copies: CopiesInfo | None, store: Store,
                    endpoint_url: str | None) -> CopyCheck | None:
    """What execution re-verifies each batch against: the copies of the verified plan
    (the bytes that were checked are the bytes used), the target opened in the region
    the plan verified it in (I13). None for a plan without copies."""
    if copies is None:
        return None
    try:
        target, region = open_target(copies.target, endpoint_url=endpoint_url,
                                     region=copies.target_region)
    except InvariantViolation as exc:
        raise ReconciliationHalt(f"{I13}: {exc.detail}; nothing in this batch was "
                                 "touched and the stage is halted") from None
    if region != copies.target_region:
        raise ReconciliationHalt(
            f"{I13}: copies' store {copies.target} is in {region}, the plan verified "
            f"them in {copies.target_region}; nothing in this batch was touched")
    return CopyCheck(copies, Verifier(store, target, KeyMap(copies.maps),
                                      copies.verify_content,
                                      listed=copies.checksum == "listed"))


def recheck_copies(check: CopyCheck | None, batch: Sequence[ObjectInfo], b: int,
                   journal: Journal) -> None:
    """Right before batch ``b`` is removed: every object's copy must still be verified,
    as at planning (I11). A copy missing or changed halts the stage (exit 5) with
    nothing of the batch touched. Objects that themselves changed or vanished are left
    to the executor's re-check (skipped, never removed). Plans without copies: no-op."""
    if check is None or not batch:
        return
    verdicts = check.verifier.many([(o.key, o.size, o.etag) for o in batch])
    bad = [v for v in verdicts if base_reason(v.reason) in COPY_REASONS]
    journal.write("batch-copies-verified", batch=b, verified=sum(v.ok for v in verdicts),
                  bad=len(bad))
    if bad:
        journal.write("halt", batch=b, copies=[[v.key, v.reason] for v in bad[:1000]],
                      count=len(bad))
        target = check.info.target
        raise ReconciliationHalt(
            f"{I11}: {len(bad)} object(s) of batch {b} no longer have a verified copy in "
            f"{target}, e.g. {bad[0].key!r}: {bad[0].reason}; nothing in this batch was "
            "touched and the stage is halted",
            hint="check the copies, then make a new plan")


def iter_verdicts(verifier: Verifier, items: Iterable[tuple[str, int, str | None]],
                  ) -> Iterator[Verdict]:
    """Verdicts for any number of items, :data:`ROUND` at a time (benchmarks, tools)."""
    buf: list[tuple[str, int, str | None]] = []
    for it in items:
        buf.append(it)
        if len(buf) >= ROUND:
            yield from verifier.many(buf)
            buf = []
    if buf:
        yield from verifier.many(buf)


__all__ = ["CopyCheck", "CopyOptions", "CopyPlan", "KeyMap", "Verdict", "Verifier",
           "check_regions", "describe", "iter_verdicts", "open_copy_check", "open_target",
           "parse_allowed", "prepare", "recheck_copies", "verify_candidates"]
