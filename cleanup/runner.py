"""``cleanup run JOB``: advance a job as far as it may, then stop (issue 16).

The job's state lives in the stores, never only here: which plan each layer runs is a
record in the job's first store (canonical order: by store URL)
``_cleanup/jobs/NAME/runs/SEQ/plans/LAYER.json``, created once with a conditional
create; approvals, witnesses and stage records are the plans' own published records.
A run on a fresh machine therefore resumes where any other left off; the local work
directory holds only inventories, snapshots and plan copies (caches).

One invocation: take every layer's store lock in one order (sorted store URL; exit 6
naming the holder if any is held), then repeat ``observe -> next_step -> perform``
until the next step is to wait for a person or a time, and release the locks together.
The steps, in order (:func:`next_step` is pure, and property-tested):

    plan each layer (inventory -> snapshot -> plan -> publish) -> wait for approvals of
    every layer's plan -> per stage k: on every layer whose stage k is not complete,
    wait for stage k-1's hold, then execute it (which waits for a witness) -> stage k+1
    only when stage k is complete on every layer -> purge each stage after its
    retention (witnessed) -> done.

The runner never asks anything and never signs for a person: it authors the plans as
the job's runner principal and executes and purges through :mod:`cleanup.executor`
with the same guards as ``cleanup execute`` and ``cleanup purge``; a missing witness
(the executor publishes the challenge and raises I8) is reported as "waiting for".
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleanup import notify
from cleanup.core.canonical import canonical_json
from cleanup.core.names import I7, I8
from cleanup.core.paths import RESERVED_PREFIX
from cleanup.core.timeutil import format_time, parse_time
from cleanup.errors import CleanupError, LockHeld, SignoffError, UsageError

if TYPE_CHECKING:
    from cleanup.jobs import Job, Layer
    from cleanup.lock import Lock
    from cleanup.stores.base import Store

JOBS_PREFIX = RESERVED_PREFIX + "jobs/"


# ---------------------------------------------------------------------- the pure core

@dataclass(frozen=True)
class StageView:
    stage: int
    state: str  # not-started | running | halted | complete
    finished_at: datetime | None = None
    purged: bool = False


@dataclass(frozen=True)
class LayerView:
    """What the store says about one layer of the current run."""

    name: str
    store: str
    plan_id: str | None = None
    approvals: int = 0
    need: int = 1
    approved: bool = False
    stages: tuple[StageView, ...] = ()
    hold: timedelta = timedelta(0)
    retention: timedelta = timedelta(0)
    quarantine: str = "copy"
    now: datetime | None = None  # the layer's store clock when observed


@dataclass(frozen=True)
class Wait:
    """Something a run waits for: ``kind`` approvals | witness | hold | retention."""

    kind: str
    layer: str
    text: str
    stage: int | None = None
    plan_id: str | None = None
    until: str | None = None
    action: str | None = None
    challenge: str | None = None
    missing: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (
            ("kind", self.kind), ("layer", self.layer), ("text", self.text),
            ("stage", self.stage), ("plan_id", self.plan_id), ("until", self.until),
            ("action", self.action), ("challenge", self.challenge),
            ("missing", self.missing)) if v is not None}


@dataclass(frozen=True)
class Step:
    """What to do next. ``kind``: plan | execute | purge (actions) or wait | done |
    halted. ``targets``: (layer name, stage) pairs to act on; ``waits``: why not more."""

    kind: str
    stage: int | None = None
    targets: tuple[tuple[str, int], ...] = ()
    waits: tuple[Wait, ...] = ()


def _first_incomplete(v: LayerView) -> int | None:
    for s in v.stages:
        if s.state != "complete":
            return s.stage
    return None


def next_step(views: Sequence[LayerView]) -> Step:
    """The next step of a run from the layers' store records (pure).

    Safety rules it keeps (tests/test_run.py checks them with hypothesis): nothing is
    executed before every layer's plan is approved; stage k runs on a layer only when
    stages < k are complete on every layer and the layer's stage k-1 hold is over (by
    its store clock); a halted stage stops the whole job; purge comes only after every
    stage of every layer is complete, and only once a stage's retention is over."""
    for v in views:
        for s in v.stages:
            if s.state == "halted":
                return Step("halted", s.stage, ((v.name, s.stage),), (Wait(
                    "halted", v.name, f"stage {s.stage} of layer {v.name} was halted; a halt "
                    "is lifted only by a new plan (`cleanup run JOB --new-run`)", s.stage,
                    v.plan_id),))
    unplanned = [v for v in views if v.plan_id is None]
    if unplanned:
        return Step("plan", targets=tuple((v.name, -1) for v in unplanned))
    waiting = [v for v in views if not v.approved]
    if waiting:
        waits = []
        for v in waiting:
            n = max(1, v.need - v.approvals)
            waits.append(Wait("approvals", v.name, f"approvals by {n} more principal"
                              f"{'s' if n > 1 else ''} of layer {v.name}'s plan {v.plan_id}",
                              plan_id=v.plan_id, missing=n))
        return Step("wait", waits=tuple(waits))
    pending = [k for v in views if (k := _first_incomplete(v)) is not None]
    if pending:
        k = min(pending)
        targets, hold_waits = [], []
        for v in views:
            if _first_incomplete(v) != k:
                continue
            prev = next((s for s in v.stages if s.stage == k - 1), None)
            if prev is not None and prev.finished_at is not None and v.now is not None \
                    and v.now < prev.finished_at + v.hold:
                until = format_time(prev.finished_at + v.hold)
                hold_waits.append(Wait("hold", v.name, f"stage {k - 1}'s hold on layer "
                                       f"{v.name} until {until}", k - 1, v.plan_id, until))
            elif prev is not None and prev.finished_at is not None and v.now is None:
                hold_waits.append(Wait("hold", v.name, f"the store clock of layer {v.name}",
                                       k - 1, v.plan_id))
            else:
                targets.append((v.name, k))
        if targets:
            return Step("execute", k, tuple(targets), tuple(hold_waits))
        return Step("wait", k, waits=tuple(hold_waits))
    targets, waits = [], []
    for v in views:
        if v.quarantine == "none":
            continue
        for s in v.stages:
            if s.purged or s.finished_at is None:
                continue
            if v.now is not None and v.now >= s.finished_at + v.retention:
                targets.append((v.name, s.stage))
            else:
                until = format_time(s.finished_at + v.retention)
                waits.append(Wait("retention", v.name, f"stage {s.stage}'s retention on layer "
                                  f"{v.name} until {until}", s.stage, v.plan_id, until))
    if targets:
        return Step("purge", targets=tuple(targets), waits=tuple(waits))
    if waits:
        return Step("wait", waits=tuple(waits))
    return Step("done")


# ---------------------------------------------------------------------- status

@dataclass
class RunStatus:
    job: str
    run: int
    state: str = "waiting"  # waiting | running | done | halted
    waiting: list[Wait] = field(default_factory=list)
    did: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def waiting_for(self) -> list[str]:
        return [w.text for w in self.waiting]

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "run": self.run, "state": self.state,
                "waiting_for": self.waiting_for, "waiting": [w.to_json() for w in self.waiting],
                "did": self.did, "layers": self.layers}

    def lines(self) -> list[str]:
        out = [f"job {self.job} run {self.run}: {self.state}"]
        out += [f"  did: {d}" for d in self.did]
        out += [f"  waiting for: {w}" for w in self.waiting_for]
        for la in self.layers:
            stages = ", ".join(f"{s['stage']}:{s['state']}{'+purged' if s['purged'] else ''}"
                               for s in la.get("stages", []))
            out.append(f"  layer {la['name']} {la['store']} plan {la.get('plan_id') or '-'}"
                       + (f" approvals {la['approvals']}/{la['need']}"
                          if la.get("plan_id") else "") + (f" stages {stages}" if stages else ""))
        return out


# ---------------------------------------------------------------------- the store's records

def _run_prefix(job: str, seq: int) -> str:
    return f"{JOBS_PREFIX}{job}/runs/{seq:06d}/"


def _runs(store: Store, job: str) -> list[int]:
    pre = f"{JOBS_PREFIX}{job}/runs/"
    seqs = {k[len(pre):].split("/", 1)[0] for k in store.list_keys(pre)}
    return sorted(int(s) for s in seqs if s.isdigit())


def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    data = store.get_bytes(key)
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


# ---------------------------------------------------------------------- the runner

@dataclass
class _LayerRt:
    """A layer at run time: its store, lock and plan copy."""

    layer: Layer
    store: Store
    lock: Lock | None = None
    plan_id: str | None = None


@dataclass
class RunOptions:
    once: bool = False
    new_run: bool = False
    stdout_events: bool = False  # --json: events on stdout would mix with the status


class Runner:
    def __init__(self, job: Job, opts: RunOptions) -> None:
        from cleanup.stores import open_store

        self.job, self.opts = job, opts
        self.rts = [_LayerRt(la, open_store(la.store, endpoint_url=la.endpoint_url,
                                            region=la.region))
                    for la in job.ordered_layers()]
        self.primary = self.rts[0].store
        self.seq = 0
        self.status = RunStatus(job.name, 0)
        self._notified = self._load_notified()
        self._ctx: dict[str, Any] = {}  # plan id -> the executor's authorization
        self._stack = ExitStack()
        self._halted_now = False  # a stage halted during this invocation

    # -------------------------------------------------------------- locks (I12)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Every layer's store lock, taken in canonical order and released together."""
        from cleanup import audit
        from cleanup.lock import Lock

        try:
            for rt in self.rts:
                rt.lock, broken = Lock.acquire(
                    rt.store, executor=self.job.runner, plan_id=self.lock_tag,
                    unsafe_store=self.job.unsafe_store, break_lock=self._own_expired(rt.store))
                if broken is not None:
                    audit.append(rt.store, "lock-broken", principal=self.job.runner,
                                 key=self.job.runner_key,
                                 details={"previous": broken, "job": self.job.name})
            yield
        except LockHeld as exc:
            exc.message = f"job {self.job.name}: {exc.message}"
            raise
        finally:
            for rt in reversed(self.rts):
                if rt.lock is not None:
                    try:
                        rt.lock.release()
                    finally:
                        rt.lock = None

    @property
    def lock_tag(self) -> str:
        return f"job:{self.job.name}"

    def _own_expired(self, store: Store) -> bool:
        """True if the store's lock is this job's own (same job, same runner) and has
        expired: a runner killed on another machine (a rescheduled pod) left it, and the
        next run takes it over (audited). Anyone else's lock is never broken here."""
        from cleanup.lock import read_holder

        holder = read_holder(store)
        if holder.get("plan_id") != self.lock_tag or holder.get("executor") != self.job.runner:
            return False
        try:
            return parse_time(str(holder.get("expires_at"))) < datetime.now(UTC)
        except CleanupError:
            return False

    def refresh_locks(self) -> None:
        for rt in self.rts:
            if rt.lock is not None:
                rt.lock.refresh()

    # -------------------------------------------------------------- run records

    def _current_run(self) -> int:
        store, name = self.primary, self.job.name
        seqs = _runs(store, name)
        latest = seqs[-1] if seqs else 0
        finished = latest and store.get_bytes(_run_prefix(name, latest) + "done.json") \
            is not None
        halted = latest and store.get_bytes(_run_prefix(name, latest) + "abandoned.json") \
            is not None
        self.seq = latest  # where this machine's caches of that run go
        if self.opts.new_run:
            if latest and not (finished or halted or self._halted_run(latest)):
                raise UsageError(f"job {name}: run {latest} is still in progress",
                                 hint="`cleanup run JOB` advances it; --new-run only after it "
                                      "is done or halted")
            if latest and not finished:
                store.put_if_absent(_run_prefix(name, latest) + "abandoned.json",
                                    canonical_json({"job": name, "run": latest,
                                                    "time": format_time(datetime.now(UTC))}))
            latest += 1
        elif not latest:
            latest = 1
        layers = [{"name": rt.layer.name, "store": rt.store.ref.url} for rt in self.rts]
        key = _run_prefix(name, latest) + "run.json"
        if store.get_bytes(key) is None:
            store.put_if_absent(key, canonical_json({
                "type": "cleanup-job-run", "job": name, "run": latest, "layers": layers,
                "runner": self.job.runner, "created_at": format_time(datetime.now(UTC))}))
        doc = _read_json(store, key) or {}
        if doc.get("layers") != layers:
            raise UsageError(f"job {name}: run {latest} in {store.ref.url} covers layers "
                             f"{doc.get('layers')}, the job file now names {layers}",
                             hint="finish that run with the job as it was, or start a new "
                                  "one with --new-run once it is done or halted")
        return latest

    def _halted_run(self, seq: int) -> bool:
        """True if a stage of run ``seq`` was halted on some layer (store records)."""
        for rt in self.rts:
            try:
                view = self._observe_layer(rt, seq)
            except CleanupError:
                continue
            if any(s.state == "halted" for s in view.stages):
                return True
        return False

    def _plan_record(self, rt: _LayerRt, seq: int | None = None) -> str | None:
        doc = _read_json(self.primary, _run_prefix(self.job.name, seq or self.seq)
                         + f"plans/{rt.layer.name}.json")
        pid = doc.get("plan_id") if doc else None
        return pid if isinstance(pid, str) else None

    # -------------------------------------------------------------- local caches

    def _work(self, *parts: str) -> str:
        path = os.path.join(self.job.work_dir, f"run-{self.seq:06d}", *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def plan_dir(self, rt: _LayerRt, plan_id: str) -> str:
        """This machine's copy of the layer's published plan (fetched if missing)."""
        from cleanup.signoff import fetch

        path = self._work(rt.layer.name, f"plan-{plan_id[:16]}")
        if not os.path.isfile(os.path.join(path, "plan.json")):
            shutil.rmtree(path, ignore_errors=True)
            fetch(rt.layer.store, plan_id, path, endpoint_url=rt.layer.endpoint_url,
                  region=rt.layer.region)
        return path

    def _load_notified(self) -> set[str]:
        try:
            with open(os.path.join(self.job.work_dir, "notified.json"), encoding="utf-8") as fh:
                data = json.load(fh)
            return {str(x) for x in data} if isinstance(data, list) else set()
        except (OSError, ValueError):
            return set()

    def emit(self, event: str, once_key: str | None = None, **fields_: Any) -> None:
        """Notify (never raises). ``once_key``: only if this machine has not sent it yet;
        it is recorded after sending, so a kill in between sends it again (at least once)."""
        if once_key is not None and once_key in self._notified:
            return
        notify.emit(event, job=self.job.name, run=self.seq, **fields_)
        if once_key is None:
            return
        self._notified.add(once_key)
        try:
            os.makedirs(self.job.work_dir, exist_ok=True)
            tmp = os.path.join(self.job.work_dir, f".notified.{os.getpid()}")
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(sorted(self._notified), fh)
            os.replace(tmp, os.path.join(self.job.work_dir, "notified.json"))
        except OSError:
            pass

    def _notify_observed(self, views: Sequence[LayerView]) -> None:
        """Events for the state changes the store records show (whoever made them)."""
        for v in views:
            if v.plan_id is None:
                continue
            pid, la = v.plan_id, v.name
            self.emit("plan-published", f"published:{pid}", layer=la, store=v.store,
                      plan_id=pid, review=f"cleanup fetch {v.store} {pid} -o DIR && cleanup "
                                          "show DIR --markdown")
            if v.approvals:
                self.emit("approval-received", f"approvals:{pid}:{v.approvals}", layer=la,
                          plan_id=pid, approvals=v.approvals, need=v.need)
            for st in v.stages:
                if st.state in ("running", "complete", "halted"):
                    self.emit("stage-started", f"started:{pid}:{st.stage}", layer=la,
                              stage=st.stage, plan_id=pid)
                if st.state == "complete":
                    self.emit("stage-finished", f"finished:{pid}:{st.stage}", layer=la,
                              stage=st.stage, plan_id=pid)
                if st.state == "halted":
                    self.emit("halted", f"halted:{pid}:{st.stage}", layer=la, stage=st.stage,
                              plan_id=pid)
                if st.purged:
                    self.emit("purged", f"purged:{pid}:{st.stage}", layer=la, stage=st.stage,
                              plan_id=pid)

    # -------------------------------------------------------------- observe

    def _authorized(self, rt: _LayerRt, pid: str, plan_dir: str) -> Any:
        """The executor's authorization of the layer's plan (I6, I7, I13, I17, I18), read
        only; kept for this invocation once it holds (approvals are checked again by every
        execute and purge). Raises SignoffError (I7) while approvals are missing."""
        from cleanup.executor import authorize

        cached = self._ctx.get(pid)
        if cached is not None:
            return cached
        stack = ExitStack()
        try:
            ctx = authorize(plan_dir, trust_root=rt.layer.trust_root, config=self.job.config,
                            endpoint_url=rt.layer.endpoint_url, region=rt.layer.region,
                            injected_now=None, stack=stack, read_only=True)
        except BaseException:
            stack.close()
            raise
        self._stack.push(stack.__exit__)
        self._ctx[pid] = ctx
        return ctx

    def _observe_layer(self, rt: _LayerRt, seq: int | None = None) -> LayerView:
        from cleanup.executor import store_now
        from cleanup.published import stage_state

        pid = self._plan_record(rt, seq)
        rt.plan_id = pid
        if pid is None:
            return LayerView(rt.layer.name, rt.store.ref.url)
        plan_dir = self.plan_dir(rt, pid)
        try:
            ctx = self._authorized(rt, pid, plan_dir)
        except SignoffError as exc:
            if not exc.message.startswith(I7):
                raise
            valid, need = self._approvals(rt, plan_dir, pid)
            return LayerView(rt.layer.name, rt.store.ref.url, pid, valid, need, False)
        plan = ctx.plan
        # authorized: I7 holds (the approvals are counted only while they fall short)
        need = max(1, plan.policy.min_approvals, ctx.trust.root.floors.min_approvals)
        views = []
        for st in plan.stages:
            s = stage_state(ctx.pub, st.stage)
            purged = any(n.startswith("purged.") for n in ctx.pub.names("stages", str(st.stage)))
            views.append(StageView(st.stage, s.state,
                                   parse_time(s.finished_at) if s.finished_at else None, purged))
        need_clock = any(v.state == "complete" for v in views)
        return LayerView(rt.layer.name, rt.store.ref.url, pid, need, need, True, tuple(views),
                         plan.hold, plan.policy.retention, plan.quarantine,
                         store_now(ctx.store, None) if need_clock else None)

    def _approvals(self, rt: _LayerRt, plan_dir: str, pid: str) -> tuple[int, int]:
        """(valid approvals, approvals needed) by :func:`cleanup.signoff.verify_bundle`
        against the store's trust root."""
        from cleanup import trust as trust_mod
        from cleanup.bundle import PlanBundle
        from cleanup.signoff import verify_bundle

        with ExitStack() as stack:
            trust = trust_mod.current(rt.store, rt.layer.trust_root, self.job.config)
            allowed = stack.enter_context(trust.allowed_signers())
            bundle = PlanBundle.fetch(rt.store, pid, work_root=plan_dir)
            stack.callback(bundle.close)
            rep = verify_bundle(bundle, allowed, datetime.now(UTC), trust)
            facts = rep.two_person.facts
            valid = len(facts.get("valid_approvers", []))
            return valid, int(facts.get("min_approvals", 1))

    def observe(self) -> list[LayerView]:
        views = [self._observe_layer(rt) for rt in self.rts]
        self.status.layers = [{
            "name": v.name, "store": v.store, "plan_id": v.plan_id, "approvals": v.approvals,
            "need": v.need, "approved": v.approved,
            "stages": [{"stage": s.stage, "state": s.state,
                        "finished_at": format_time(s.finished_at) if s.finished_at else None,
                        "purged": s.purged} for s in v.stages]} for v in views]
        self._notify_observed(views)
        return views

    # -------------------------------------------------------------- perform

    def _rt(self, name: str) -> _LayerRt:
        return next(rt for rt in self.rts if rt.layer.name == name)

    def plan_layer(self, rt: _LayerRt) -> str:
        """inventory -> snapshot -> plan (published by the planner) -> the run's record."""
        from cleanup import trust as trust_mod
        from cleanup.inventory import list_store
        from cleanup.jobs import check_floors, floors_error
        from cleanup.planner import PlanOptions, make_plan
        from cleanup.snapshot import take_snapshots

        job, la = self.job, rt.layer
        root = trust_mod.current(rt.store, la.trust_root, job.config)
        problems = check_floors(job, root.root.floors)
        if problems:
            raise floors_error(job, la.store, problems)
        inv = self._work(la.name, "inventory.parquet")
        snap = self._work(la.name, "snapshot.parquet")
        for p in (inv, snap):
            if os.path.exists(p):
                os.unlink(p)
        list_store(rt.store, inv, time_source=la.time_source)
        db = [r for r in la.references if r.query is not None]
        first = db[0] if db else la.references[0]
        take_snapshots([r.source for r in la.references], snap, query=first.query,
                       ref_encoding=first.ref_encoding, ref_base=first.ref_base)
        out = self._work(la.name, f"plan-new-{os.getpid()}-{os.urandom(4).hex()}")
        res = make_plan(PlanOptions(
            store=la.store, inventory=inv, snapshot=snap, out=out, author=job.runner,
            key=job.runner_key, buffer=job.buffer, region=la.region,
            endpoint_url=la.endpoint_url, tenant_pattern=job.tenant_pattern,
            internal=job.internal, stages=job.stages, hold=job.hold,
            quarantine=job.quarantine, policy=job.policy,
            policy_overrides=tuple(f"{d} from job {job.name} ({job.path})"
                                   for d in job.policy.differences()),
            override_minimums=job.override_minimums, sentinels=la.sentinels,
            unsafe_store_without_conditional_writes=job.unsafe_store,
            foreign_refs_ok=la.foreign_refs_ok, reconcile_with=la.reconcile.source,
            reconcile_query=la.reconcile.query, trust_root=la.trust_root,
            config=job.config))
        key = _run_prefix(job.name, self.seq) + f"plans/{la.name}.json"
        self.primary.put_if_absent(key, canonical_json({
            "type": "cleanup-job-plan", "job": job.name, "run": self.seq, "layer": la.name,
            "store": rt.store.ref.url, "plan_id": res.plan_id,
            "created_at": format_time(datetime.now(UTC))}))
        pid = self._plan_record(rt) or res.plan_id
        final = self._work(la.name, f"plan-{pid[:16]}")
        if pid == res.plan_id and not os.path.exists(final):
            os.replace(out, final)
        else:
            shutil.rmtree(out, ignore_errors=True)  # another runner recorded its plan first
        m = res.plan.manifest
        return f"planned layer {la.name}: plan {pid} ({m.objects} candidates)"

    def _extra_execute_options(self) -> dict[str, Any]:
        """The in-stage watchdog's settings, where this executor has them."""
        from cleanup.executor import ExecuteOptions

        names = {f.name for f in fields(ExecuteOptions)}
        w = self.job.watchdog
        wanted = {"watch_every_batches": w.watch_every_batches,
                  "watch_every_seconds": w.watch_every_seconds, "on_failure": w.on_failure,
                  "canary_sample": w.canary_sample}
        return {k: v for k, v in wanted.items() if k in names}

    def execute_stage(self, name: str, stage: int) -> str | None:
        """Execute one layer's stage; None when it waits for a witness (reported)."""
        from cleanup.executor import ExecuteOptions, execute

        rt = self._rt(name)
        assert rt.plan_id is not None  # noqa: S101 - next_step plans first
        started: list[bool] = []

        def progress(_moved: int, _bytes: int) -> None:
            if not started:
                started.append(True)
                self.emit("stage-started", f"started:{rt.plan_id}:{stage}", layer=name,
                          stage=stage, plan_id=rt.plan_id)
            self.refresh_locks()

        opts = ExecuteOptions(
            plan_dir=self.plan_dir(rt, rt.plan_id), stage=stage, executor=self.job.runner,
            key=self.job.runner_key, trust_root=rt.layer.trust_root, config=self.job.config,
            wait=0.0, endpoint_url=rt.layer.endpoint_url, region=rt.layer.region,
            batch_size=self.job.batch_size, health_checks=self.job.health_checks,
            health_timeout=self.job.health_timeout, progress=progress, held_lock=rt.lock,
            **self._extra_execute_options())
        try:
            res = execute(opts)
        except SignoffError as exc:
            if self._approvals_lapsed(exc, rt):
                return None
            self._wait_for_witness(exc, rt, stage, "execute")
            return None
        except CleanupError as exc:
            # A halt (reconciliation I9, the in-stage watchdog) is a store record: the job
            # reports it as halted; anything else is the error it is.
            if not self._stage_halted(rt, stage):
                raise
            self._halted_now = True
            self.emit("halted", f"halted:{rt.plan_id}:{stage}", layer=name, stage=stage,
                      plan_id=rt.plan_id, reason=exc.message[:500])
            return f"stage {stage} of layer {name} halted: {exc.message}"
        return (f"executed stage {stage} of layer {name}: removed {res.moved} objects"
                + (" (already complete)" if res.already_complete else ""))

    def _wait_for_witness(self, exc: SignoffError, rt: _LayerRt, stage: int,
                          action: str) -> None:
        """I8 refused the run for want of a witness: record the wait and notify (the
        challenge the run published is what a person signs); any other refusal raises."""
        if not exc.message.startswith(I8):
            raise exc
        name = rt.layer.name
        challenge = _challenge_name(exc.message)
        what = "" if action == "execute" else "the purge of "
        flag = "" if action == "execute" else " --action purge"
        self.status.waiting.append(Wait(
            "witness", name, f"a witness of {what}stage {stage} of layer {name} (plan "
            f"{rt.plan_id}, challenge {challenge}): `cleanup witness PLAN_DIR --stage "
            f"{stage}{flag} --signer NAME --key KEY`", stage, rt.plan_id, action=action,
            challenge=challenge))
        self.emit("waiting-for-witness", f"witness:{rt.plan_id}:{action}:{challenge}",
                  layer=name, stage=stage, plan_id=rt.plan_id, action=action,
                  challenge=challenge, store=rt.layer.store)

    def _approvals_lapsed(self, exc: SignoffError, rt: _LayerRt) -> bool:
        """I7 at execution (an approval expired since): wait for approvals again."""
        if not exc.message.startswith(I7) or rt.plan_id is None:
            return False
        self._ctx.pop(rt.plan_id, None)
        self.status.waiting.append(Wait("approvals", rt.layer.name, f"approvals of layer "
                                        f"{rt.layer.name}'s plan {rt.plan_id} ({exc.message})",
                                        plan_id=rt.plan_id, missing=1))
        return True

    def _stage_halted(self, rt: _LayerRt, stage: int) -> bool:
        from cleanup.published import stage_state

        ctx = self._ctx.get(rt.plan_id or "")
        try:
            return ctx is not None and stage_state(ctx.pub, stage).state == "halted"
        except CleanupError:
            return False

    def purge_stage(self, name: str, stage: int) -> str | None:
        from cleanup.executor import PurgeOptions, purge

        rt = self._rt(name)
        assert rt.plan_id is not None  # noqa: S101 - next_step plans first
        try:
            n = purge(PurgeOptions(
                plan_dir=self.plan_dir(rt, rt.plan_id), stage=stage, executor=self.job.runner,
                key=self.job.runner_key, trust_root=rt.layer.trust_root,
                config=self.job.config, wait=0.0, endpoint_url=rt.layer.endpoint_url,
                region=rt.layer.region))
        except SignoffError as exc:
            if self._approvals_lapsed(exc, rt):
                return None
            self._wait_for_witness(exc, rt, stage, "purge")
            return None
        return f"purged stage {stage} of layer {name}: {n} objects"

    # -------------------------------------------------------------- the loop

    def run(self) -> RunStatus:
        with self._stack, self.locked():
            self.seq = self._current_run()
            self.status.run = self.seq
            done_key = _run_prefix(self.job.name, self.seq) + "done.json"
            if self.primary.get_bytes(done_key) is not None:
                self.observe()
                self.status.state = "done"
                return self.status
            for _ in range(1000):
                self.status.waiting = []
                step = next_step(self.observe())
                if step.kind == "done":
                    self.primary.put_if_absent(done_key, canonical_json({
                        "job": self.job.name, "run": self.seq,
                        "time": format_time(datetime.now(UTC))}))
                    self.status.state = "done"
                    self.emit("done", f"done:{self.seq}")
                    return self.status
                if step.kind == "halted":
                    self.status.state = "halted"
                    self.status.waiting = list(step.waits)
                    return self.status
                progressed = self._perform(step)
                self.status.waiting += list(step.waits)
                if not progressed:
                    self.status.state = "waiting"
                    for w in self.status.waiting:
                        if w.kind != "witness":
                            self.emit("waiting", f"waiting:{self.seq}:{w.text}",
                                      waiting_for=w.text, **w.to_json())
                    return self.status
                if self.opts.once:
                    self.status.waiting = []
                    self.status.state = "running"
                    self.observe()
                    return self.status
                self.refresh_locks()
        return self.status

    def _perform(self, step: Step) -> bool:
        """Do a step's actions; True if anything moved on."""
        did: list[str | None] = []
        if step.kind == "plan":
            # one layer per step: each plan is recorded before the next is made
            did.append(self.plan_layer(self._rt(step.targets[0][0])))
        elif step.kind == "execute":
            for name, stage in step.targets:
                did.append(self.execute_stage(name, stage))
                if self._halted_now:
                    break  # a halt stops the whole job: no other layer goes on
        elif step.kind == "purge":
            for name, stage in step.targets:
                did.append(self.purge_stage(name, stage))
        done = [d for d in did if d]
        self.status.did += done
        return bool(done)


_CHALLENGE_RE = re.compile(r"challenge (\S+) is open")


def _challenge_name(message: str) -> str:
    m = _CHALLENGE_RE.search(message)
    return m.group(1) if m else "?"


def run_job(job: Job, opts: RunOptions,
            configure: Callable[[Job, RunOptions], None] | None = None) -> RunStatus:
    """``cleanup run``: configure notifications from the job, then advance it."""
    n = job.notify
    notify.configure(n.webhooks, slack=n.slack, stdout=n.stdout and opts.stdout_events,
                     link=n.link)
    if configure is not None:
        configure(job, opts)
    return Runner(job, opts).run()


__all__ = ["LayerView", "RunOptions", "RunStatus", "StageView", "Step", "next_step",
           "run_job"]
