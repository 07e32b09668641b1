"""Job files: a cleanup described once, run by ``cleanup run`` (issue 16).

A job lives in ``jobs/NAME.toml`` (the whole file is the job) or under ``[job.NAME]`` in
``cleanup.toml``. It names the layers (stores) to clean, where each one's inventory and
references come from, how tenants are staged, the policy (never looser than the trust
root's floors), the quarantine mode, health checks, the in-stage watchdog, the runner
identity and the notification targets::

    runner = "ci"                      # principal with the author and runner roles
    runner_key = "keys/ci"             # its SSH key (relative to the job file)
    trust_root = "sha256:..."          # optional: else CLEANUP_TRUST_ROOT / cleanup.toml
    internal = ["internal"]            # stage 0
    stages = "10%,100%"
    quarantine = "copy"                # copy | versioning | none
    buffer = "24h"
    hold = "24h"
    health_checks = ["./check-error-rate.sh"]

    [policy]
    min_approvals = 2

    [watchdog]
    watch_every_batches = 10
    watch_every_seconds = 30
    on_failure = "restore"             # restore | halt

    [notify]
    webhooks = ["https://hooks.example/cleanup"]
    slack = true
    stdout = true
    link = "https://ci.example/cleanup/plan.md"

    [[references]]                     # every layer's, unless it has its own
    source = "postgresql://db/meta"
    query = "SELECT path FROM files"

    [[layers]]
    name = "lake"
    store = "s3://lake/data/"
    [layers.inventory]
    kind = "listing"

Every error is one line naming the file and the line of the offending key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cleanup.core.names import I7, I17
from cleanup.core.policy import Policy
from cleanup.core.timeutil import format_duration, parse_duration
from cleanup.errors import CleanupError, InvariantViolation, UsageError

JOB_DIR = "jobs"
CONFIG_FILE = "cleanup.toml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
QUARANTINE_MODES = ("copy", "versioning", "none")
ON_FAILURE = ("restore", "halt")
INVENTORY_KINDS = ("listing",)

_TOP_KEYS = frozenset({
    "description", "runner", "runner_key", "trust_root", "work_dir", "tenant_pattern",
    "internal", "stages", "quarantine", "buffer", "hold", "override_minimums",
    "health_checks", "health_timeout", "batch_size", "endpoint_url", "policy", "watchdog",
    "notify", "references", "reconcile", "layers", "foreign_refs_ok", "sentinels",
    "unsafe_store_without_conditional_writes",
})
_LAYER_KEYS = frozenset({"name", "store", "region", "endpoint_url", "inventory", "trust_root",
                         "references", "reconcile", "foreign_refs_ok", "sentinels"})
_REF_KEYS = frozenset({"source", "query", "ref_encoding", "ref_base"})
_WATCH_KEYS = frozenset({"watch_every_batches", "watch_every_seconds", "on_failure",
                         "canary_sample"})
_NOTIFY_KEYS = frozenset({"webhooks", "slack", "stdout", "link"})
_INV_KEYS = frozenset({"kind", "time_source"})


@dataclass(frozen=True)
class Reference:
    """A reference source (``cleanup snapshot SOURCE --query ...``)."""

    source: str
    query: str | None = None
    ref_encoding: str = "literal"
    ref_base: str | None = None


@dataclass(frozen=True)
class Layer:
    name: str
    store: str
    references: tuple[Reference, ...]
    reconcile: Reference
    region: str | None = None
    endpoint_url: str | None = None
    inventory: str = "listing"
    time_source: str = "ctime-or-mtime"
    foreign_refs_ok: tuple[str, ...] = ()
    sentinels: tuple[str, ...] = ()
    #: the pinned digest of this layer's trust root (else the job's, CLEANUP_TRUST_ROOT
    #: or trust_root in cleanup.toml): each store holds its own chain
    trust_root: str | None = None


@dataclass(frozen=True)
class Watchdog:
    watch_every_batches: int = 10
    watch_every_seconds: float = 30.0
    on_failure: str = "restore"
    canary_sample: int = 20


@dataclass(frozen=True)
class Notify:
    webhooks: tuple[str, ...] = ()
    slack: bool = False
    stdout: bool = False
    link: str | None = None


@dataclass(frozen=True)
class Job:
    name: str
    path: str  # the file it was read from
    runner: str
    runner_key: str
    layers: tuple[Layer, ...]
    policy: Policy
    policy_values: dict[str, Any] = field(default_factory=dict)
    trust_root: str | None = None
    work_dir: str = ""
    tenant_pattern: str = r"^(?P<tenant>[^/]+)/"
    internal: tuple[str, ...] = ()
    stages: str = "10%,100%"
    quarantine: str = "copy"
    buffer: timedelta | None = None
    hold: timedelta | None = None
    override_minimums: bool = False
    unsafe_store: bool = False
    health_checks: tuple[str, ...] = ()
    health_timeout: float = 300.0
    batch_size: int = 1000
    watchdog: Watchdog = field(default_factory=Watchdog)
    notify: Notify = field(default_factory=Notify)
    config: str | None = None  # the cleanup.toml that holds it, if any

    def ordered_layers(self) -> list[Layer]:
        """The layers in the one canonical order locks are taken in: by store URL."""
        return sorted(self.layers, key=lambda layer: layer.store)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.path, "runner": self.runner,
            "layers": [{"name": la.name, "store": la.store, "inventory": la.inventory,
                        "references": [r.source for r in la.references],
                        "reconcile": la.reconcile.source} for la in self.layers],
            "stages": self.stages, "internal": list(self.internal),
            "quarantine": self.quarantine,
            "buffer": format_duration(self.buffer) if self.buffer is not None else None,
            "hold": format_duration(self.hold) if self.hold is not None else None,
            "policy": self.policy_values,
            "watchdog": {"watch_every_batches": self.watchdog.watch_every_batches,
                         "watch_every_seconds": self.watchdog.watch_every_seconds,
                         "on_failure": self.watchdog.on_failure,
                         "canary_sample": self.watchdog.canary_sample},
            "notify": {"webhooks": len(self.notify.webhooks), "slack": self.notify.slack,
                       "stdout": self.notify.stdout, "link": self.notify.link},
        }


# ---------------------------------------------------------------------- finding lines

_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")



#: approvals a job's plans need at least: the runner authors them, two people approve
JOB_MIN_APPROVALS = 2

def _split_key(text: str) -> tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in text.split("."))


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Where each key and table of a TOML text is: path -> 1-based line. Arrays of tables
    count their elements (``("layers", 1, "store")``). tomllib gives no line numbers for
    values that parse but are wrong; this finds them for the error message."""
    out: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str | int, ...], int] = {}
    current: tuple[str | int, ...] = ()
    in_multiline = False
    for n, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = False
            continue
        m = _HEADER_RE.match(line)
        if m and not line.lstrip().startswith("#"):
            parts: tuple[str | int, ...] = ()
            for p in _split_key(m.group(2)):
                parts = (*parts, p)
                # an element of an array of tables named earlier: the newest element
                if parts in counts and (m.group(1) == "[" or parts != _split_key(m.group(2))):
                    parts = (*parts, counts[parts] - 1)
            if m.group(1) == "[[":
                base = parts
                counts[base] = counts.get(base, 0) + 1
                parts = (*base, counts[base] - 1)
                out.setdefault(base, n)
            current = parts
            out.setdefault(current, n)
            continue
        k = _KEY_RE.match(line)
        if k and not line.lstrip().startswith("#"):
            out.setdefault((*current, *_split_key(k.group(1))), n)
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = True
    return out


class _Where:
    """Turns a key path into ``FILE:LINE`` for error messages."""

    def __init__(self, path: str, text: str, prefix: tuple[str | int, ...]) -> None:
        self.path, self.prefix = path, prefix
        self.lines = key_lines(text)

    def line(self, *parts: str | int) -> int:
        full = (*self.prefix, *parts)
        while full:
            if full in self.lines:
                return self.lines[full]
            full = full[:-1]
        return 1

    def error(self, parts: tuple[str | int, ...], message: str,
              hint: str | None = None) -> UsageError:
        return UsageError(f"{self.path}:{self.line(*parts)}: {message}", hint=hint)


# ---------------------------------------------------------------------- loading

def find_job(name_or_file: str, config: str | None = None) -> tuple[str, str, str,
                                                                     tuple[str, ...]]:
    """(job name, file, its text, key prefix of the job in the file) for NAME or FILE."""
    if os.path.isfile(name_or_file):
        name = os.path.splitext(os.path.basename(name_or_file))[0]
        return name, name_or_file, _read(name_or_file), ()
    if not _NAME_RE.match(name_or_file):
        raise UsageError(f"job {name_or_file!r}: no such file, and not a job name",
                         hint="give jobs/NAME.toml, or NAME of jobs/NAME.toml or of "
                              "[job.NAME] in cleanup.toml")
    path = os.path.join(JOB_DIR, f"{name_or_file}.toml")
    if os.path.isfile(path):
        return name_or_file, path, _read(path), ()
    cfg = config or CONFIG_FILE
    if os.path.isfile(cfg):
        text = _read(cfg)
        doc = _parse(cfg, text)
        jobs = doc.get("job")
        if isinstance(jobs, dict) and name_or_file in jobs:
            return name_or_file, cfg, text, ("job", name_or_file)
    raise UsageError(f"no job {name_or_file!r}: neither {path} nor [job.{name_or_file}] in "
                     f"{cfg} exists", hint="`cleanup job check FILE` to validate a job file")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text", hint="TOML files are UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def _parse(path: str, text: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line N, column M)": keep it on one line with the file
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        where = f"{path}:{m.group(1)}" if m else path
        raise UsageError(f"{where}: not valid TOML: {msg}") from None


def load_job(name_or_file: str, config: str | None = None) -> Job:
    """Read and validate a job; raise :class:`UsageError` (or I7/I17 violations) with
    ``FILE:LINE:`` on the first problem."""
    name, path, text, prefix = find_job(name_or_file, config)
    doc: Any = _parse(path, text)
    for p in prefix:
        doc = doc[p]
    where = _Where(path, text, prefix)
    if not isinstance(doc, dict):
        raise where.error((), "a job must be a table")
    job = _build(name, path, doc, where)
    return job if not prefix else _with_config(job, path)


def _with_config(job: Job, path: str) -> Job:
    from dataclasses import replace

    return replace(job, config=path)


def _check_keys(where: _Where, parts: tuple[str | int, ...], table: dict[str, Any],
                known: frozenset[str]) -> None:
    for k in table:
        if k not in known:
            raise where.error((*parts, k), f"unknown key {'.'.join(map(str, (*parts, k)))!r}",
                              hint="known: " + ", ".join(sorted(known)))


def _str(where: _Where, parts: tuple[str | int, ...], value: Any, *,
         required: bool = False) -> str | None:
    if value is None:
        if required:
            raise where.error(parts[:-1], f"{'.'.join(map(str, parts))} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be a non-empty string")
    return value


def _req(where: _Where, parts: tuple[str | int, ...], value: Any) -> str:
    out = _str(where, parts, value, required=True)
    if out is None:  # pragma: no cover - _str raised
        raise where.error(parts, f"{'.'.join(map(str, parts))} is required")
    return out


def _strs(where: _Where, parts: tuple[str | int, ...], value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be a list of strings")
    return tuple(value)


def _duration(where: _Where, parts: tuple[str | int, ...], value: Any) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(str(value))
    except UsageError as exc:
        raise where.error(parts, f"{'.'.join(map(str, parts))}: {exc.message}",
                          hint=exc.hint) from None


def _bool(where: _Where, parts: tuple[str | int, ...], value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be true or false")
    return value


def _int(where: _Where, parts: tuple[str | int, ...], value: Any, default: int, lo: int,
         hi: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be a whole number "
                                 f"from {lo} to {hi}, got {value!r}")
    return value


def _seconds(where: _Where, parts: tuple[str | int, ...], value: Any, default: float) -> float:
    """A number of seconds, or a duration string (``30s``, ``5m``)."""
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise where.error(parts, f"{'.'.join(map(str, parts))} must be positive")
        return float(value)
    d = _duration(where, parts, value)
    if d is None or d.total_seconds() <= 0:
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be positive")
    return d.total_seconds()


def _pin(where: _Where, parts: tuple[str | int, ...], value: Any) -> str | None:
    from cleanup.core.trust import parse_pin

    pin = _str(where, parts, value)
    if pin is not None:
        try:
            parse_pin(pin)
        except CleanupError as exc:
            raise where.error(parts, f"{'.'.join(map(str, parts))}: {exc.message}") from None
    return pin


def _resolve(base: str, path: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(base, path)


def _references(where: _Where, parts: tuple[str | int, ...], value: Any) -> tuple[Reference,
                                                                                  ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be a table or an array "
                                 "of tables ([[references]] source = ..., query = ...)")
    out = []
    for i, ref in enumerate(value):
        at = (*parts, i)
        if not isinstance(ref, dict):
            raise where.error(at, f"{'.'.join(map(str, parts))} entries must be tables")
        _check_keys(where, at, ref, _REF_KEYS)
        source = _req(where, (*at, "source"), ref.get("source"))
        enc = ref.get("ref_encoding", "literal")
        if enc not in ("literal", "uri"):
            raise where.error((*at, "ref_encoding"), "ref_encoding must be literal or uri")
        out.append(Reference(source, _str(where, (*at, "query"), ref.get("query")), enc,
                             _str(where, (*at, "ref_base"), ref.get("ref_base"))))
    return tuple(out)


def _one_reference(where: _Where, parts: tuple[str | int, ...], value: Any) -> Reference | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise where.error(parts, f"{'.'.join(map(str, parts))} must be a table "
                                 "(source = ..., query = ...)")
    refs = _references(where, parts[:-1] + (parts[-1],), [value])
    return refs[0]


def _build(name: str, path: str, doc: dict[str, Any], where: _Where) -> Job:  # noqa: C901
    from cleanup.core.paths import parse_store
    from cleanup.core.stages import compile_tenant_pattern, parse_stages

    if not _NAME_RE.match(name):
        raise where.error((), f"job name {name!r} must be letters, digits, '.', '_' or '-'")
    _check_keys(where, (), doc, _TOP_KEYS)
    base = os.path.dirname(os.path.abspath(path))
    runner = _req(where, ("runner",), doc.get("runner"))
    key = _req(where, ("runner_key",), doc.get("runner_key"))
    runner_key = _resolve(base, key)
    trust_root = _pin(where, ("trust_root",), doc.get("trust_root"))
    work = _str(where, ("work_dir",), doc.get("work_dir")) or os.path.join(".cleanup", "jobs",
                                                                           name)
    tenant_pattern = _str(where, ("tenant_pattern",), doc.get("tenant_pattern")) \
        or r"^(?P<tenant>[^/]+)/"
    try:
        compile_tenant_pattern(tenant_pattern)
    except CleanupError as exc:
        raise where.error(("tenant_pattern",), f"tenant_pattern: {exc.message}") from None
    stages = _str(where, ("stages",), doc.get("stages")) or "10%,100%"
    try:
        parse_stages(stages)
    except CleanupError as exc:
        raise where.error(("stages",), f"stages: {exc.message}", hint=exc.hint) from None
    quarantine = doc.get("quarantine", "copy")
    if quarantine not in QUARANTINE_MODES:
        raise where.error(("quarantine",), f"quarantine must be one of "
                                           f"{', '.join(QUARANTINE_MODES)}, got {quarantine!r}")
    # policy: every value validated by the policy code; min_approvals >= 1 always (I7)
    values = doc.get("policy", {})
    if not isinstance(values, dict):
        raise where.error(("policy",), "[policy] must be a table")
    if values.get("min_approvals") == 0:
        raise InvariantViolation(I7, f"{path}:{where.line('policy', 'min_approvals')}"
                                 ": min_approvals = 0: at least one approval by another "
                                 "principal is always needed",
                                 hint="min_approvals >= 1; no job can waive the two-person rule")
    # A job's plans are authored by the runner, an automation identity: the two people of
    # the two-person rule are then both approvers, or one person would decide alone.
    n = values.get("min_approvals", JOB_MIN_APPROVALS)
    if isinstance(n, int) and not isinstance(n, bool) and 0 < n < JOB_MIN_APPROVALS:
        raise InvariantViolation(I7, f"{path}:{where.line('policy', 'min_approvals')}"
                                 f": min_approvals = {n}: a job's plans are authored by its "
                                 "runner, so two people must approve them",
                                 hint=f"min_approvals >= {JOB_MIN_APPROVALS} in a job")
    values = {"min_approvals": JOB_MIN_APPROVALS, **values}
    policy = Policy()
    for k, v in values.items():
        try:
            policy = policy.with_values({k: v})
        except UsageError as exc:
            raise where.error(("policy", k), f"policy.{k}: {exc.message}",
                              hint=exc.hint) from None
    watch = doc.get("watchdog", {})
    if not isinstance(watch, dict):
        raise where.error(("watchdog",), "[watchdog] must be a table")
    _check_keys(where, ("watchdog",), watch, _WATCH_KEYS)
    on_failure = watch.get("on_failure", "restore")
    if on_failure not in ON_FAILURE:
        raise where.error(("watchdog", "on_failure"),
                          f"watchdog.on_failure must be restore or halt, got {on_failure!r}")
    watchdog = Watchdog(
        _int(where, ("watchdog", "watch_every_batches"), watch.get("watch_every_batches"), 10,
             1, 10**6),
        _seconds(where, ("watchdog", "watch_every_seconds"), watch.get("watch_every_seconds"),
                 30.0),
        on_failure,
        _int(where, ("watchdog", "canary_sample"), watch.get("canary_sample"), 20, 0, 10**6))
    note = doc.get("notify", {})
    if not isinstance(note, dict):
        raise where.error(("notify",), "[notify] must be a table")
    _check_keys(where, ("notify",), note, _NOTIFY_KEYS)
    hooks = _strs(where, ("notify", "webhooks"), note.get("webhooks"))
    for i, h in enumerate(hooks):
        if not h.startswith(("http://", "https://")):
            raise where.error(("notify", "webhooks"), f"notify.webhooks[{i}] {h!r} is not an "
                                                      "http(s) URL")
    notify = Notify(hooks, _bool(where, ("notify", "slack"), note.get("slack"), False),
                    _bool(where, ("notify", "stdout"), note.get("stdout"), False),
                    _str(where, ("notify", "link"), note.get("link")))
    job_refs = _references(where, ("references",), doc.get("references"))
    job_recon = _one_reference(where, ("reconcile",), doc.get("reconcile"))
    job_foreign = _strs(where, ("foreign_refs_ok",), doc.get("foreign_refs_ok"))
    job_sentinels = _strs(where, ("sentinels",), doc.get("sentinels"))
    endpoint = _str(where, ("endpoint_url",), doc.get("endpoint_url"))
    raw_layers = doc.get("layers")
    if raw_layers is None:
        raise where.error((), "the job names no layers: add [[layers]] with store = ...")
    if isinstance(raw_layers, dict):
        raw_layers = [raw_layers]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise where.error(("layers",), "layers must be an array of tables ([[layers]])")
    layers: list[Layer] = []
    for i, raw in enumerate(raw_layers):
        at: tuple[str | int, ...] = ("layers", i)
        if not isinstance(raw, dict):
            raise where.error(at, "each [[layers]] entry must be a table")
        _check_keys(where, at, raw, _LAYER_KEYS)
        store = _req(where, (*at, "store"), raw.get("store"))
        try:
            ref = parse_store(store)
        except CleanupError as exc:
            raise where.error((*at, "store"), f"layers[{i}].store: {exc.message}",
                              hint=exc.hint) from None
        if ref.kind == "local" and not os.path.isabs(store):
            store = _resolve(base, store)
        lname = _str(where, (*at, "name"), raw.get("name")) or f"layer{i}"
        if not _NAME_RE.match(lname):
            raise where.error((*at, "name"), f"layer name {lname!r} must be letters, digits, "
                                             "'.', '_' or '-'")
        inv = raw.get("inventory", {"kind": "listing"})
        if isinstance(inv, str):
            inv = {"kind": inv}
        if not isinstance(inv, dict):
            raise where.error((*at, "inventory"), "inventory must be a table (kind = ...)")
        _check_keys(where, (*at, "inventory"), inv, _INV_KEYS)
        if inv.get("kind", "listing") not in INVENTORY_KINDS:
            raise where.error((*at, "inventory", "kind"),
                              f"inventory kind {inv.get('kind')!r} is not supported by jobs yet",
                              hint="kinds: " + ", ".join(INVENTORY_KINDS))
        refs = _references(where, (*at, "references"), raw.get("references")) or job_refs
        if not refs:
            raise where.error(at, f"layer {lname!r} has no references: add [[references]] "
                                  "(for every layer) or references in the layer")
        recon = _one_reference(where, (*at, "reconcile"), raw.get("reconcile")) or job_recon
        if recon is None:
            databases = [r for r in refs if r.query is not None]
            if not databases:
                raise where.error(at, f"layer {lname!r}: no reconciliation source (I9): add "
                                      "[reconcile] source = ..., query = ... (a database)")
            recon = databases[0]
        layers.append(Layer(
            lname, store, refs, recon, _str(where, (*at, "region"), raw.get("region")),
            _str(where, (*at, "endpoint_url"), raw.get("endpoint_url")) or endpoint,
            str(inv.get("kind", "listing")),
            str(inv.get("time_source", "ctime-or-mtime")),
            _strs(where, (*at, "foreign_refs_ok"), raw.get("foreign_refs_ok")) or job_foreign,
            _strs(where, (*at, "sentinels"), raw.get("sentinels")) or job_sentinels,
            _pin(where, (*at, "trust_root"), raw.get("trust_root")) or trust_root))
    _check_layers(where, layers)
    health = _strs(where, ("health_checks",), doc.get("health_checks"))
    return Job(
        name=name, path=path, runner=runner, runner_key=runner_key, layers=tuple(layers),
        policy=policy, policy_values=dict(values), trust_root=trust_root,
        work_dir=_resolve(os.getcwd(), work) if not os.path.isabs(work) else work,
        tenant_pattern=tenant_pattern,
        internal=_strs(where, ("internal",), doc.get("internal")), stages=stages,
        quarantine=quarantine, buffer=_duration(where, ("buffer",), doc.get("buffer")),
        hold=_duration(where, ("hold",), doc.get("hold")),
        override_minimums=_bool(where, ("override_minimums",), doc.get("override_minimums"),
                                False),
        unsafe_store=_bool(where, ("unsafe_store_without_conditional_writes",),
                           doc.get("unsafe_store_without_conditional_writes"), False),
        health_checks=health,
        health_timeout=_seconds(where, ("health_timeout",), doc.get("health_timeout"), 300.0),
        batch_size=_int(where, ("batch_size",), doc.get("batch_size"), 1000, 1, 1000),
        watchdog=watchdog, notify=notify)


def _check_layers(where: _Where, layers: list[Layer]) -> None:
    """Layer names unique; no store twice; no layer inside another (their locks would not
    exclude each other)."""
    from cleanup.core.paths import parse_store

    seen: dict[str, int] = {}
    for i, la in enumerate(layers):
        if la.name in seen:
            raise where.error(("layers", i, "name"), f"layer name {la.name!r} is used twice")
        seen[la.name] = i
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            if i >= j:
                continue
            ra, rb = parse_store(a.store), parse_store(b.store)
            if ra.url == rb.url:
                raise where.error(("layers", j, "store"), f"layers {a.name!r} and {b.name!r} "
                                                          f"name the same store {ra.url}")
            if _nested(ra.url, rb.url):
                raise where.error(("layers", j, "store"),
                                  f"layers {a.name!r} ({ra.url}) and {b.name!r} ({rb.url}) "
                                  "overlap: one is inside the other",
                                  hint="give layers disjoint stores (separate buckets or "
                                       "prefixes)")


def _nested(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def check_floors(job: Job, floors: Any) -> list[str]:
    """The ways the job's policy is looser than a trust root's floors (I17), by
    :func:`cleanup.core.trust.loosened`: empty when it stays within them."""
    from cleanup.core.trust import loosened

    p = job.policy
    return loosened(floors, p, buffer=job.buffer if job.buffer is not None else p.min_buffer,
                    hold=job.hold if job.hold is not None else p.min_hold)


def floors_error(job: Job, store: str, problems: list[str]) -> InvariantViolation:
    """I17 naming the job file and the line of its policy."""
    where = _Where(job.path, _read(job.path), ("job", job.name) if job.config else ())
    return InvariantViolation(I17,
                              f"{job.path}:{where.line('policy')}: job {job.name!r} is looser "
                              f"than the trust root's floors of {store}: " + "; ".join(problems),
                              hint="stay within the floors; only the principals can lower "
                                   "them, in a new trust root version")
