"""What the program passes around: the plan, its parts, and the signed documents.

:meth:`Plan.to_json` and :meth:`Plan.from_json` are the only code that knows
plan.json's layout. ``canonical_json(plan.to_json())`` are plan.json's bytes and
their sha256 is the plan id. ``from_json`` is strict: a missing, unknown or
mistyped value is refused with a one-line :class:`UsageError` (the bundle turns
it into I6 plan-integrity), never a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cleanup.core.canonical import canonical_json, sha256_hex
from cleanup.core.policy import Policy
from cleanup.core.timeutil import format_duration, format_time, parse_duration, parse_time
from cleanup.errors import UsageError

PLAN_FORMAT = "cleanup-plan/1"
_T = TypeVar("_T")


class _Obj:
    """Strict reader of one JSON object of plan.json; ``where`` names it in errors."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise UsageError(f"plan.json: {where} must be an object, got {_kind(value)}")
        self.d: dict[str, Any] = value
        self.where = where
        self.used: set[str] = set()

    def _get(self, key: str) -> Any:
        if key not in self.d:
            raise UsageError(f"plan.json: {self._at(key)} is missing")
        self.used.add(key)
        return self.d[key]

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _bad(self, key: str, want: str, v: Any) -> UsageError:
        return UsageError(f"plan.json: {self._at(key)} must be {want}, got {_kind(v)}")

    def text(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise self._bad(key, "a string", v)
        return v

    def opt_text(self, key: str) -> str | None:
        return None if self._get(key) is None else self.text(key)

    def whole(self, key: str) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(key, "a whole number", v)
        return v

    def opt_whole(self, key: str) -> int | None:
        return None if self._get(key) is None else self.whole(key)

    def flag(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise self._bad(key, "true or false", v)
        return v

    def texts(self, key: str) -> tuple[str, ...]:
        v = self._get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self._bad(key, "a list of strings", v)
        return tuple(v)

    def array(self, key: str) -> list[Any]:
        v = self._get(key)
        if not isinstance(v, list):
            raise self._bad(key, "a list", v)
        return v

    def obj(self, key: str) -> _Obj:
        return _Obj(self._get(key), self._at(key))

    def time(self, key: str) -> datetime:
        return _parsed(parse_time, self.text(key), self._at(key))

    def opt_time(self, key: str) -> datetime | None:
        return None if self._get(key) is None else self.time(key)

    def duration(self, key: str) -> timedelta:
        return _parsed(parse_duration, self.text(key), self._at(key))

    def signed_duration(self, key: str) -> timedelta:
        """A duration that may be negative (a clock skew: ``-1111us``)."""
        text = self.text(key)
        if text.startswith("-"):
            return -_parsed(parse_duration, text[1:], self._at(key))
        return _parsed(parse_duration, text, self._at(key))

    def done(self) -> None:
        """Refuse keys this layout does not know: they would not survive a round trip."""
        extra = sorted(set(self.d) - self.used)
        if extra:
            raise UsageError(f"plan.json: unknown key {self._at(extra[0])!r}")


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _parsed(parse: Callable[[str], _T], text: str, where: str) -> _T:
    try:
        return parse(text)
    except UsageError as exc:
        raise UsageError(f"plan.json: {where}: {exc.message}") from None


@dataclass(frozen=True)
class Stamp:
    """A time and the clock it came from (I15)."""

    time: datetime
    clock: str

    def to_json(self) -> dict[str, Any]:
        return {"time": format_time(self.time), "clock": self.clock}

    @classmethod
    def read(cls, o: _Obj) -> Stamp:
        s = cls(o.time("time"), o.text("clock"))
        o.done()
        return s


@dataclass(frozen=True)
class Tool:
    name: str
    version: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class InventoryInfo:
    path: str
    sha256: str
    source: str | None
    rows: int
    listed_at: Stamp
    precision: timedelta
    time_source: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "source": self.source,
                "rows": self.rows, "listed_at": self.listed_at.to_json(),
                "precision": format_duration(self.precision), "time_source": self.time_source}

    @classmethod
    def read(cls, o: _Obj) -> InventoryInfo:
        v = cls(o.text("path"), o.text("sha256"), o.opt_text("source"), o.whole("rows"),
                Stamp.read(o.obj("listed_at")), o.duration("precision"), o.text("time_source"))
        o.done()
        return v


@dataclass(frozen=True)
class SnapshotInfo:
    path: str
    sha256: str
    source: str | None
    rows: int | None
    digest: str | None
    taken_at: Stamp

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "source": self.source,
                "rows": self.rows, "digest": self.digest, "taken_at": self.taken_at.to_json()}

    @classmethod
    def read(cls, o: _Obj) -> SnapshotInfo:
        v = cls(o.text("path"), o.text("sha256"), o.opt_text("source"), o.opt_whole("rows"),
                o.opt_text("digest"), Stamp.read(o.obj("taken_at")))
        o.done()
        return v


@dataclass(frozen=True)
class Inputs:
    inventory: InventoryInfo
    snapshot: SnapshotInfo

    def to_json(self) -> dict[str, Any]:
        return {"inventory": self.inventory.to_json(), "snapshot": self.snapshot.to_json()}

    def files(self) -> dict[str, tuple[str, str]]:
        """Each input's name -> (path, sha256) recorded at planning."""
        return {"inventory": (self.inventory.path, self.inventory.sha256),
                "snapshot": (self.snapshot.path, self.snapshot.sha256)}


@dataclass(frozen=True)
class Stage:
    stage: int
    selector: str
    objects: int
    bytes: int
    tenants: int

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "selector": self.selector, "objects": self.objects,
                "bytes": self.bytes, "tenants": self.tenants}

    @classmethod
    def read(cls, o: _Obj) -> Stage:
        v = cls(o.whole("stage"), o.text("selector"), o.whole("objects"), o.whole("bytes"),
                o.whole("tenants"))
        o.done()
        return v


@dataclass(frozen=True)
class Scope:
    objects: int
    bytes: int
    newest_last_modified: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "bytes": self.bytes,
                "newest_last_modified": _opt_time(self.newest_last_modified)}


@dataclass(frozen=True)
class ReferencesInfo:
    """How the snapshot's references resolved against the store (I4)."""

    rows: int
    in_scope: int
    out_of_scope: int
    missing: int
    encoding: str
    base: str | None
    folders: int
    implicit_folders: int
    protected_by_folder: int
    foreign: int
    foreign_acknowledged: int
    foreign_ok: tuple[str, ...]
    foreign_where: Mapping[str, int]
    near_misses: int
    near_miss_examples: tuple[tuple[str, str], ...]
    undecodable_names: int

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "in_scope": self.in_scope, "out_of_scope": self.out_of_scope,
                "missing": self.missing, "encoding": self.encoding, "base": self.base,
                "folders": self.folders, "implicit_folders": self.implicit_folders,
                "protected_by_folder": self.protected_by_folder, "foreign": self.foreign,
                "foreign_acknowledged": self.foreign_acknowledged,
                "foreign_ok": list(self.foreign_ok), "foreign_where": dict(self.foreign_where),
                "near_misses": self.near_misses,
                "near_miss_examples": [list(p) for p in self.near_miss_examples],
                "undecodable_names": self.undecodable_names}

    @classmethod
    def read(cls, o: _Obj) -> ReferencesInfo:
        where = o.obj("foreign_where")
        examples = o.array("near_miss_examples")
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                   for p in examples):
            raise UsageError("plan.json: references.near_miss_examples must be a list of "
                             "[reference, key] pairs")
        v = cls(o.whole("rows"), o.whole("in_scope"), o.whole("out_of_scope"), o.whole("missing"),
                o.text("encoding"), o.opt_text("base"), o.whole("folders"),
                o.whole("implicit_folders"), o.whole("protected_by_folder"), o.whole("foreign"),
                o.whole("foreign_acknowledged"), o.texts("foreign_ok"),
                {k: where.whole(k) for k in list(where.d)},
                o.whole("near_misses"), tuple((p[0], p[1]) for p in examples),
                o.whole("undecodable_names"))
        o.done()
        return v


@dataclass(frozen=True)
class ManifestInfo:
    path: str
    sha256: str
    objects: int
    bytes: int
    oldest_last_modified: datetime | None
    newest_last_modified: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "objects": self.objects,
                "bytes": self.bytes, "oldest_last_modified": _opt_time(self.oldest_last_modified),
                "newest_last_modified": _opt_time(self.newest_last_modified)}

    @classmethod
    def read(cls, o: _Obj) -> ManifestInfo:
        v = cls(o.text("path"), o.text("sha256"), o.whole("objects"), o.whole("bytes"),
                o.opt_time("oldest_last_modified"), o.opt_time("newest_last_modified"))
        o.done()
        return v


@dataclass(frozen=True)
class CheckRecord:
    """One invariant check as recorded in plan.json."""

    invariant: str
    ok: bool
    detail: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "ok": self.ok, "detail": self.detail,
                "facts": dict(self.facts)}

    @classmethod
    def read(cls, o: _Obj) -> CheckRecord:
        v = cls(o.text("invariant"), o.flag("ok"), o.text("detail"), o.obj("facts").d)
        o.done()
        return v


def _opt_time(t: datetime | None) -> str | None:
    return format_time(t) if t is not None else None


@dataclass(frozen=True)
class TrustInfo:
    """The trust root a plan was made under (I17): version and digest, signed with the
    plan by its author and approvers."""

    version: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest}

    @classmethod
    def read(cls, o: _Obj) -> TrustInfo:
        out = cls(o.whole("version"), o.text("digest"))
        o.done()
        return out


@dataclass(frozen=True)
class ReconcileInfo:
    """Where execution reconciles each batch against live metadata (I9, I19): part of
    the signed plan, so the runner cannot pick a friendlier source."""

    source: str
    query: str | None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "query": self.query}

    @classmethod
    def read(cls, o: _Obj) -> ReconcileInfo:
        out = cls(o.text("source"), o.opt_text("query"))
        o.done()
        return out


@dataclass(frozen=True)
class TableInfo:
    """One table root declared by a table source (I5 per table, I20): its objects in the
    scope, those kept as its metadata (``_delta_log/``, ``metadata/``, hidden paths:
    never candidates), and its candidates. ``root`` is the store-relative prefix of the
    root; ``""`` when the store is the root or lies inside the table."""

    root: str
    objects: int
    bytes: int
    metadata_objects: int
    metadata_bytes: int
    candidates: int
    candidate_bytes: int

    @property
    def data_objects(self) -> int:
        return self.objects - self.metadata_objects

    @property
    def data_bytes(self) -> int:
        return self.bytes - self.metadata_bytes

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "objects": self.objects, "bytes": self.bytes,
                "metadata_objects": self.metadata_objects,
                "metadata_bytes": self.metadata_bytes, "candidates": self.candidates,
                "candidate_bytes": self.candidate_bytes}

    @classmethod
    def read(cls, o: _Obj) -> TableInfo:
        v = cls(o.text("root"), o.whole("objects"), o.whole("bytes"),
                o.whole("metadata_objects"), o.whole("metadata_bytes"), o.whole("candidates"),
                o.whole("candidate_bytes"))
        o.done()
        return v


#: how copies are compared (``plan --checksum``): the first is the default
CHECKSUM_POLICIES = ("strongest", "listed")


@dataclass(frozen=True)
class CopiesInfo:
    """A plan's copy verification (:mod:`cleanup.retire`): ``mode`` ``retire`` (candidates
    are source objects with a verified copy in ``target``, which the plan deletes after
    a region migration) or ``backup`` (``--require-copy-in``: every candidate of an
    orphan cleanup has a verified copy there). Both stores' regions and the regions
    declared for each store (I13) are signed with the plan; execution re-verifies each
    batch's copies before removing it."""

    mode: str
    target: str
    target_region: str
    maps: tuple[tuple[str, str], ...]
    verify_content: bool
    strict: bool
    allowed_regions: Mapping[str, tuple[str, ...]]
    checked: int
    checked_bytes: int
    verified: int
    verified_bytes: int
    methods: Mapping[str, int]
    blocking: int
    blocking_bytes: int
    blocking_reasons: Mapping[str, int]
    blocking_examples: tuple[tuple[str, str], ...]
    #: ``strongest`` (every checksum both objects state, a HEAD each where a listing only
    #: names it) or ``listed`` (the strongest both listings state; see cleanup.retire)
    checksum: str = "strongest"

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.checksum == "strongest" else {"checksum": self.checksum}
        return {**extra, "mode": self.mode, "target": self.target,
                "target_region": self.target_region,
                "maps": [list(m) for m in self.maps], "verify_content": self.verify_content,
                "strict": self.strict,
                "allowed_regions": {k: list(v) for k, v in self.allowed_regions.items()},
                "checked": self.checked, "checked_bytes": self.checked_bytes,
                "verified": self.verified, "verified_bytes": self.verified_bytes,
                "methods": dict(self.methods), "blocking": self.blocking,
                "blocking_bytes": self.blocking_bytes,
                "blocking_reasons": dict(self.blocking_reasons),
                "blocking_examples": [list(e) for e in self.blocking_examples]}

    @classmethod
    def read(cls, o: _Obj) -> CopiesInfo:
        def pairs(key: str) -> tuple[tuple[str, str], ...]:
            v = o.array(key)
            if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                       for p in v):
                raise UsageError(f"plan.json: copies.{key} must be a list of string pairs")
            return tuple((p[0], p[1]) for p in v)

        allowed, methods, reasons = o.obj("allowed_regions"), o.obj("methods"), \
            o.obj("blocking_reasons")
        out = cls(o.text("mode"), o.text("target"), o.text("target_region"), pairs("maps"),
                  o.flag("verify_content"), o.flag("strict"),
                  {k: allowed.texts(k) for k in list(allowed.d)},
                  o.whole("checked"), o.whole("checked_bytes"), o.whole("verified"),
                  o.whole("verified_bytes"), {k: methods.whole(k) for k in list(methods.d)},
                  o.whole("blocking"), o.whole("blocking_bytes"),
                  {k: reasons.whole(k) for k in list(reasons.d)},
                  pairs("blocking_examples"),
                  o.text("checksum") if "checksum" in o.d else "strongest")
        if out.checksum not in CHECKSUM_POLICIES:
            raise UsageError(f"plan.json: copies.checksum must be one of "
                             f"{', '.join(CHECKSUM_POLICIES)}, got {out.checksum!r}")
        if out.mode not in ("retire", "backup"):
            raise UsageError(f"plan.json: copies.mode must be retire or backup, got "
                             f"{out.mode!r}")
        for part in (o, allowed, methods, reasons):
            part.done()
        return out


@dataclass(frozen=True)
class Plan:
    """plan.json, typed. Build it with :func:`cleanup.planner.compute_plan`."""

    tool: Tool
    store: str
    region: str
    created_at: Stamp
    author: str
    author_key: str
    inputs: Inputs
    buffer: timedelta
    cutoff: Stamp
    hold: timedelta
    quarantine: str
    policy: Policy
    overrides: tuple[str, ...]
    tenant_pattern: str
    internal: tuple[str, ...]
    stages: tuple[Stage, ...]
    scope: Scope
    references: ReferencesInfo
    manifest: ManifestInfo
    sentinels: tuple[str, ...]
    unsafe_store_without_conditional_writes: bool
    clocks: Mapping[str, timedelta]
    invariants: tuple[CheckRecord, ...]
    format: str = PLAN_FORMAT
    trust: TrustInfo | None = None
    reconcile: ReconcileInfo | None = None
    #: the table roots of the snapshot's table sources (absent from plans without)
    tables: tuple[TableInfo, ...] = ()
    #: copy verification: a retirement, or --require-copy-in (absent from other plans)
    copies: CopiesInfo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "tool": self.tool.to_json(),
            "store": self.store,
            "region": self.region,
            "created_at": self.created_at.to_json(),
            "author": self.author,
            "author_key": self.author_key,
            "inputs": self.inputs.to_json(),
            "buffer": format_duration(self.buffer),
            "cutoff": self.cutoff.to_json(),
            "hold": format_duration(self.hold),
            "quarantine": self.quarantine,
            "policy": self.policy.to_json(),
            "overrides": list(self.overrides),
            "tenant_pattern": self.tenant_pattern,
            "internal": list(self.internal),
            "stages": [s.to_json() for s in self.stages],
            "scope": self.scope.to_json(),
            "references": self.references.to_json(),
            "manifest": self.manifest.to_json(),
            "sentinels": list(self.sentinels),
            "unsafe_store_without_conditional_writes":
                self.unsafe_store_without_conditional_writes,
            "clocks": {k: format_duration(v) for k, v in self.clocks.items()},
            "invariants": [c.to_json() for c in self.invariants],
            **({"trust": self.trust.to_json()} if self.trust else {}),
            **({"reconcile": self.reconcile.to_json()} if self.reconcile else {}),
            **({"tables": [t.to_json() for t in self.tables]} if self.tables else {}),
            **({"copies": self.copies.to_json()} if self.copies else {}),
        }

    def to_bytes(self) -> bytes:
        """plan.json's bytes (canonical JSON)."""
        return canonical_json(self.to_json())

    @property
    def plan_id(self) -> str:
        return sha256_hex(self.to_bytes())

    def stage(self, n: int) -> Stage | None:
        return next((s for s in self.stages if s.stage == n), None)

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """Read a parsed plan.json; refuse anything else with a one-line UsageError."""
        o = _Obj(data, "")
        fmt = o.text("format")
        if fmt != PLAN_FORMAT:
            raise UsageError(f"plan.json: format {fmt!r} is not {PLAN_FORMAT!r}")
        tool, inputs = o.obj("tool"), o.obj("inputs")
        scope, clocks = o.obj("scope"), o.obj("clocks")
        plan = cls(
            format=fmt,
            tool=Tool(tool.text("name"), tool.text("version")),
            store=o.text("store"), region=o.text("region"),
            created_at=Stamp.read(o.obj("created_at")),
            author=o.text("author"), author_key=o.text("author_key"),
            inputs=Inputs(InventoryInfo.read(inputs.obj("inventory")),
                          SnapshotInfo.read(inputs.obj("snapshot"))),
            buffer=o.duration("buffer"), cutoff=Stamp.read(o.obj("cutoff")),
            hold=o.duration("hold"), quarantine=o.text("quarantine"),
            policy=_policy(o.obj("policy")),
            overrides=o.texts("overrides"), tenant_pattern=o.text("tenant_pattern"),
            internal=o.texts("internal"),
            stages=tuple(Stage.read(_Obj(s, f"stages[{i}]"))
                         for i, s in enumerate(o.array("stages"))),
            scope=Scope(scope.whole("objects"), scope.whole("bytes"),
                        scope.opt_time("newest_last_modified")),
            references=ReferencesInfo.read(o.obj("references")),
            manifest=ManifestInfo.read(o.obj("manifest")),
            sentinels=o.texts("sentinels"),
            unsafe_store_without_conditional_writes=o.flag(
                "unsafe_store_without_conditional_writes"),
            clocks={k: clocks.signed_duration(k) for k in list(clocks.d)},
            invariants=tuple(CheckRecord.read(_Obj(c, f"invariants[{i}]"))
                             for i, c in enumerate(o.array("invariants"))),
            trust=TrustInfo.read(o.obj("trust")) if "trust" in o.d else None,
            reconcile=ReconcileInfo.read(o.obj("reconcile")) if "reconcile" in o.d else None,
            tables=tuple(TableInfo.read(_Obj(t, f"tables[{i}]"))
                         for i, t in enumerate(o.array("tables"))) if "tables" in o.d else (),
            copies=CopiesInfo.read(o.obj("copies")) if "copies" in o.d else None,
        )
        for part in (o, tool, inputs, scope, clocks):
            part.done()
        return plan


#: policy values added after plan format 1 was fixed: a plan made before them (which
#: does not record them) still reads, with the default
_LATER_POLICY = frozenset({"max_table_delete_fraction"})


def _policy(o: _Obj) -> Policy:
    known = set(Policy().to_json()) - _LATER_POLICY
    missing = sorted(known - set(o.d))
    if missing:
        raise UsageError(f"plan.json: policy.{missing[0]} is missing")
    try:
        return Policy.from_json(o.d)
    except UsageError as exc:
        raise UsageError(f"plan.json: policy: {exc.message}") from None


@dataclass(frozen=True)
class Signature:
    """An author's or approver's signed document (signatures/*.json)."""

    plan_id: str
    signer: str
    signed_at: datetime
    role: str  # author | approver
    comment: str = ""
    #: the store's audit head (``SEQ:SHA256``) the signer saw, where the store could be
    #: read (I14: a log cut below it is detected)
    audit_head: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "signer": self.signer,
                "signed_at": format_time(self.signed_at), "role": self.role,
                "comment": self.comment,
                **({"audit_head": self.audit_head} if self.audit_head else {})}


@dataclass(frozen=True)
class Witness:
    """A witness's (role ``witness``, witness/) or executor's (role ``executor``,
    journal/) signed presence for one stage."""

    plan_id: str
    stage: int
    signer: str
    signed_at: datetime
    role: str = "witness"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"plan_id": self.plan_id, "stage": self.stage,
                               "signer": self.signer, "signed_at": format_time(self.signed_at),
                               "role": self.role}
        if self.role == "witness":
            doc["time"] = format_time(self.signed_at)
        return doc


__all__ = ["PLAN_FORMAT", "CheckRecord", "CopiesInfo", "Inputs", "InventoryInfo",
           "ManifestInfo", "Plan", "ReferencesInfo", "Scope", "Signature", "SnapshotInfo",
           "Stage", "Stamp", "TableInfo", "Tool", "Witness"]


@dataclass
class StageState:
    stage: int
    state: str = "not-started"  # not-started | running | halted | complete
    started_at: str | None = None
    finished_at: str | None = None
    batches_done: int = 0
    moved: int = 0
    moved_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    halt: dict[str, Any] | None = None
    executor: str | None = None
    restored: int = 0
    done_batches: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "state": self.state, "started_at": self.started_at,
                "finished_at": self.finished_at, "batches_done": self.batches_done,
                "moved": self.moved, "moved_bytes": self.moved_bytes,
                "skipped": dict(self.skipped), "halt": self.halt, "executor": self.executor,
                "restored": self.restored}
