"""The in-stage watchdog (issue 16 part 4): health checks *during* a stage.

The health gate (I10, :func:`cleanup.executor.health_gate`) runs only between stages;
a stage that breaks production would otherwise run to its end. While a stage runs,
the executor calls :meth:`Watchdog.after_batch` after every batch it ran (and
:meth:`Watchdog.finish` after the last one). Every ``every_batches`` batches or
``every_seconds`` seconds, whichever comes first, the watchdog runs

(a) a **canary**: a sample of still-referenced objects (live references from the
    plan's reconciliation source, not in the manifest, from the same directories as
    the stage's candidates first, then from anywhere), chosen and measured before the
    first batch. Each check looks every one of them up again and reads the small ones
    (up to :data:`READ_LIMIT` bytes) whole; any error, any missing object or any size
    other than the one measured at the start fails it;
(b) every ``--health-check`` command (must exit 0 within its timeout).

Checks run between batches, in the executor's thread: while they run, nothing is
removed, and when one fails the next batch never starts (the halt comes *before* any
further batch touches the store). Then, in this order: a ``halt`` journal line, a
``halt`` audit entry, the store's ``halted`` stage record (a halt is lifted only by a
new signed plan), a ``halted`` notification; with ``on_failure = "restore"`` (the
default) the stage's quarantined objects are brought back through the executor's own
restore path (only keys the store's batch records show removed, that are rows of the
stage in the signed manifest and confined paths: I11), audited and notified as
``restored``. Finally :class:`WatchdogHalt` is raised: an I10 refusal, exit 3, as the
health gate's.

The halt record is written before anything is restored: a run killed between the two
leaves a halted stage (nobody resumes it) whose objects ``cleanup restore`` brings back.

This module does not import the executor (the executor imports it): the restore step
is a callable the executor passes in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from cleanup import audit, notify
from cleanup.core.invariants import Check
from cleanup.core.names import I10
from cleanup.errors import CleanupError, InvariantViolation, UsageError
from cleanup.published import stage_doc

if TYPE_CHECKING:
    from cleanup.bundle import PlanBundle
    from cleanup.journal import Journal
    from cleanup.published import Published
    from cleanup.reconcile import Reconciler
    from cleanup.stores.base import Store

ON_FAILURE = ("restore", "halt")
#: canary objects up to this size are read whole at every check; larger ones are
#: looked up (existence and size) only
READ_LIMIT = 1 << 20
#: how many more referenced keys than the sample are considered (some may not exist)
OVERSAMPLE = 4


class WatchdogHalt(InvariantViolation):
    """A watchdog check failed during a stage; the stage is halted (exit 3, I10)."""

    def __init__(self, detail: str, hint: str | None = None, *,
                 restored: Mapping[str, int] | None = None) -> None:
        super().__init__(I10, detail, hint)
        self.restored = dict(restored) if restored is not None else None


@dataclass(frozen=True)
class WatchSettings:
    """When the watchdog checks and what it does on a failure."""

    every_batches: int = 10
    every_seconds: float = 30.0
    on_failure: str = "restore"  # restore | halt
    canary_sample: int = 20
    health_checks: tuple[str, ...] = ()
    health_timeout: float = 300.0

    def __post_init__(self) -> None:
        check_settings(self.every_batches, self.every_seconds, self.on_failure,
                       self.canary_sample)


def check_settings(every_batches: int, every_seconds: float, on_failure: str,
                   canary_sample: int) -> None:
    """Refuse settings the watchdog cannot work with (one-line usage errors, exit 2)."""
    if isinstance(every_batches, bool) or not isinstance(every_batches, int) \
            or every_batches < 1:
        raise UsageError(f"watch_every_batches must be an integer >= 1, not {every_batches!r}")
    if isinstance(every_seconds, bool) or not isinstance(every_seconds, int | float) \
            or not every_seconds > 0 or every_seconds == float("inf"):
        raise UsageError(f"watch_every_seconds must be a number of seconds > 0, "
                         f"not {every_seconds!r}")
    if on_failure not in ON_FAILURE:
        raise UsageError(f"on_failure must be one of {', '.join(ON_FAILURE)}, "
                         f"not {on_failure!r}")
    if isinstance(canary_sample, bool) or not isinstance(canary_sample, int) \
            or canary_sample < 0:
        raise UsageError(f"canary_sample must be an integer >= 0, not {canary_sample!r}")


# ---------------------------------------------------------------------- the canary

def canary_candidates(rec: Reconciler, bundle: PlanBundle, stage: int, limit: int) -> list[str]:
    """Live referenced keys, near the stage's candidates first: those in a directory the
    stage removes from, then any; never a manifest row, never a folder reference. Each
    group in a deterministic pseudo-random order (md5), ``limit`` of each at most."""
    if limit <= 0:
        return []
    manifest = bundle.manifest_sql()
    # Folder references (ending in '/') protect what is under them and name no object.
    near = [str(r[0]) for r in rec.con.execute(
        f"WITH cand AS (SELECT key FROM {manifest} WHERE stage = {int(stage)}), "
        "dirs AS (SELECT DISTINCT regexp_extract(key, '^(.*/)', 1) AS p FROM cand) "
        "SELECT l.key FROM live l SEMI JOIN dirs d ON regexp_extract(l.key, '^(.*/)', 1) = d.p "
        "ANTI JOIN cand c ON l.key = c.key WHERE NOT suffix(l.key, '/') "
        f"ORDER BY md5(l.key), l.key LIMIT {int(limit)}").fetchall()]
    anywhere = [str(r[0]) for r in rec.con.execute(
        f"SELECT l.key FROM live l ANTI JOIN (SELECT key FROM {manifest}) c ON l.key = c.key "
        f"WHERE NOT suffix(l.key, '/') ORDER BY md5(l.key), l.key LIMIT {int(limit)}"
    ).fetchall()]
    seen = set(near)
    return near + [k for k in anywhere if k not in seen]


@dataclass
class Canary:
    """Referenced objects and the sizes they had when the stage started."""

    store: Store
    expected: dict[str, int]
    unavailable_at_start: int = 0
    read_limit: int = READ_LIMIT

    @classmethod
    def start(cls, store: Store, rec: Reconciler, bundle: PlanBundle, stage: int,
              sample: int) -> Canary:
        """Choose up to ``sample`` referenced objects that exist now, and their sizes."""
        keys = canary_candidates(rec, bundle, stage, sample * OVERSAMPLE)
        found: dict[str, int] = {}
        for i in range(0, len(keys), 1000):
            found.update({k: o.size for k, o in store.current(keys[i:i + 1000]).items()})
        chosen = [k for k in keys if k in found][:sample]
        return cls(store, {k: found[k] for k in chosen},
                   unavailable_at_start=sum(1 for k in keys if k not in found))

    def check(self) -> Check:
        keys = sorted(self.expected)
        facts: dict[str, Any] = {"canary": len(keys)}
        try:
            cur: dict[str, int] = {}
            for i in range(0, len(keys), 1000):
                cur.update({k: o.size for k, o in self.store.current(keys[i:i + 1000]).items()})
            missing = [k for k in keys if k not in cur]
            resized = [k for k in keys if k in cur and cur[k] != self.expected[k]]
            read = 0
            for k in keys:
                if k in cur and not resized and not missing and cur[k] <= self.read_limit:
                    data = self.store.get_bytes(k)
                    read += 1
                    if data is None:
                        missing.append(k)
                    elif len(data) != self.expected[k]:
                        resized.append(k)
            facts["read"] = read
        except Exception as exc:  # noqa: BLE001 - any error reading a referenced object fails
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            facts["error"] = detail
            return Check(I10, False, f"canary: reading referenced objects failed ({detail})",
                         facts)
        facts.update(missing=missing[:20], size_changed=resized[:20])
        if missing:
            return Check(I10, False, f"canary: {len(missing)} of {len(keys)} referenced "
                                     f"objects are missing, e.g. {missing[0]!r}", facts)
        if resized:
            return Check(I10, False, f"canary: {len(resized)} of {len(keys)} referenced "
                                     f"objects changed size, e.g. {resized[0]!r} "
                                     f"({self.expected[resized[0]]} bytes at the start)", facts)
        return Check(I10, True, f"canary: {len(keys)} referenced objects readable", facts)


# ---------------------------------------------------------------------- the watchdog

@dataclass
class Watchdog:
    """Checks a running stage; halts it (and restores it) when a check fails."""

    settings: WatchSettings
    store: Store
    pub: Published
    journal: Journal
    plan_id: str
    stage: int
    executor: str
    key: str | None
    canary: Canary | None
    #: the executor's restore of this stage's recorded, planned, confined keys -> counts
    restore: Callable[[], Mapping[str, int]]
    heartbeat: Callable[[], None] | None = None  # e.g. the store lock's refresh
    clock: Callable[[], float] = time.monotonic
    checks: int = 0
    halted_at: float | None = None  # clock() when the halt was recorded
    restored_at: float | None = None  # clock() when the restore finished
    _since: int = 0
    _last_batch: int = -1
    _last_check: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._last_check = self.clock()
        self.journal.write("watchdog-start", every_batches=self.settings.every_batches,
                           every_seconds=self.settings.every_seconds,
                           on_failure=self.settings.on_failure,
                           canary=len(self.canary.expected) if self.canary else 0,
                           canary_unavailable=self.canary.unavailable_at_start
                           if self.canary else 0,
                           health_checks=len(self.settings.health_checks))

    @classmethod
    def start(cls, settings: WatchSettings, *, store: Store, pub: Published, journal: Journal,
              rec: Reconciler, bundle: PlanBundle, stage: int, executor: str, key: str | None,
              restore: Callable[[], Mapping[str, int]],
              heartbeat: Callable[[], None] | None = None,
              clock: Callable[[], float] = time.monotonic) -> Watchdog:
        """Choose and measure the canary, then watch from now."""
        canary = (Canary.start(store, rec, bundle, stage, settings.canary_sample)
                  if settings.canary_sample > 0 else None)
        return cls(settings, store, pub, journal, bundle.plan_id, stage, executor, key, canary,
                   restore, heartbeat, clock)

    def after_batch(self, batch: int) -> None:
        """Called after each batch that ran: check when it is time (raises
        :class:`WatchdogHalt` after halting the stage if a check fails)."""
        self._since += 1
        self._last_batch = batch
        if self._since >= self.settings.every_batches \
                or self.clock() - self._last_check >= self.settings.every_seconds:
            self.check(batch)

    def finish(self) -> None:
        """After the stage's last batch: check what has not been checked yet, so a stage
        is never recorded finished over a failing check."""
        if self._since > 0:
            self.check(self._last_batch, final=True)

    def check(self, batch: int, *, final: bool = False) -> None:
        start = self.clock()
        results: list[Check] = []
        if self.canary is not None:
            results.append(self.canary.check())
        if all(c.ok for c in results) and self.settings.health_checks:
            from cleanup.health import run_health_checks

            results.append(run_health_checks(list(self.settings.health_checks),
                                             self.settings.health_timeout))
        self.checks += 1
        self._since = 0
        self._last_check = self.clock()
        failed = next((c for c in results if not c.ok), None)
        self.journal.write("watchdog-check", batch=batch, final=final, passed=failed is None,
                           seconds=round(self._last_check - start, 3),
                           results=[c.to_json() for c in results])
        if self.heartbeat is not None:
            self.heartbeat()
        if failed is not None:
            self._halt(batch, failed)

    def _halt(self, batch: int, failed: Check) -> NoReturn:
        s = self.settings
        reason = f"watchdog: {failed.detail} (checked after batch {batch})"[:2000]
        fields: dict[str, Any] = {"by": "watchdog", "batch": batch, "on_failure": s.on_failure}
        self.journal.write("halt", reason=reason, **fields)
        entry = audit.append(self.store, "halt", plan_id=self.plan_id, principal=self.executor,
                             key=self.key, details={"stage": self.stage, "reason": reason,
                                                    **fields})
        self.pub.write_stage_record(self.stage, "halted", stage_doc(
            self.plan_id, self.stage, "halted", executor=self.executor,
            audit_head=audit.head_of(entry), now=datetime.now(UTC), reason=reason, **fields))
        self.halted_at = self.clock()
        notify.emit("halted", plan_id=self.plan_id, stage=self.stage, reason=reason, **fields)
        what = f"stage {self.stage} is halted (a halt is lifted only by a new signed plan)"
        if s.on_failure != "restore":
            raise WatchdogHalt(
                f"{reason}; {what}; its quarantined objects were left as they are "
                "(on failure: halt)",
                hint=f"investigate; `cleanup restore PLAN --stage {self.stage}` brings the "
                     "stage's objects back")
        try:
            counts = dict(self.restore())
        except CleanupError as exc:
            raise WatchdogHalt(
                f"{reason}; {what}; restoring its quarantined objects failed: {exc.message}",
                hint=f"run `cleanup restore PLAN --stage {self.stage}` (it is idempotent)"
            ) from exc
        audit.append(self.store, "restore", plan_id=self.plan_id, principal=self.executor,
                     key=self.key, details={"stage": self.stage, "key": None,
                                            "counts": counts, "by": "watchdog"})
        self.restored_at = self.clock()
        notify.emit("restored", plan_id=self.plan_id, stage=self.stage, counts=counts,
                    by="watchdog")
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to restore"
        raise WatchdogHalt(f"{reason}; {what}; its quarantined objects were restored "
                           f"({summary})",
                           hint="investigate the failure, then make a new plan from fresh "
                                "inputs", restored=counts)
