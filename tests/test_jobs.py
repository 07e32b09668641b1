"""Job files (`cleanup job check`), the runner's pure step function, notifications and
`cleanup show --markdown` -- everything of issue 16 that needs no running job.

The job run end to end (two layers, SIGKILL, exit 6) is tests/test_run.py.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup import notify
from cleanup.jobs import check_floors, key_lines, load_job
from cleanup.runner import LayerView, StageView, next_step
from tests.conftest import assert_one_line_error
from tests.inproc import run_cli
from tests.jobworld import hooks_server
from tests.scenario import PERMISSIVE_FLOORS, allowed_signers_text, ok

PIN = "sha256:" + "ab" * 32

GOOD = f"""\
runner = "ci"
runner_key = "keys/ci"
trust_root = "{PIN}"
internal = ["internal"]
stages = "10%,100%"

[policy]
min_approvals = 2

[notify]
webhooks = ["http://127.0.0.1:9/hook"]

[[references]]
source = "postgresql://postgres@127.0.0.1/test"
query = "SELECT path FROM files"

[[layers]]
name = "lake"
store = "s3://lake/data/"

[[layers]]
name = "wh"
store = "s3://warehouse/"
[layers.inventory]
kind = "listing"
"""


def write(tmp: Path, text: str, name: str = "nightly") -> Path:
    (tmp / "jobs").mkdir(exist_ok=True)
    path = tmp / "jobs" / f"{name}.toml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(n for n, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_a_good_job_checks_ok_with_the_watchdog_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    r = ok(run_cli(["job", "check", str(path), "--json"]))
    doc = json.loads(r.out)
    assert doc["name"] == "nightly"
    assert [la["store"] for la in doc["layers"]] == ["s3://lake/data/", "s3://warehouse/"]
    assert doc["watchdog"] == {"watch_every_batches": 10, "watch_every_seconds": 30.0,
                               "on_failure": "restore", "canary_sample": 20}
    job = load_job(str(path))
    # the canonical lock order is by store URL, whatever the file's order
    assert [la.store for la in job.ordered_layers()] == sorted(la.store for la in job.layers)
    assert job.layers[0].reconcile.query == "SELECT path FROM files"  # the database, I9
    # by name, from jobs/NAME.toml in the working directory
    assert json.loads(ok(run_cli(["job", "check", "nightly", "--json"], cwd=tmp_path)).out)[
        "file"] == "jobs/nightly.toml"


BAD = [
    # (edit: (old, new) applied to GOOD, the line to name (a substring), exit, needles)
    (("stages = ", "colour = \"red\"\nstages = "), "colour", 2, "unknown key 'colour'"),
    (('internal = ["internal"]', 'quarantine = "shred"'), "quarantine", 2,
     "quarantine must be one of"),
    (("min_approvals = 2", "min_approvals = 0"), "min_approvals", 3, "I7",
     "two-person"),
    (("min_approvals = 2", "max_delete_fraction = 2.5"), "max_delete_fraction", 2,
     "between 0 and 1"),
    (("min_approvals = 2", 'retention = "a week"'), "retention", 2, "invalid duration"),
    (('store = "s3://warehouse/"', 'store = "s3://lake/data/sub/"'), "s3://lake/data/sub/",
     2, "overlap"),
    (('name = "wh"', 'name = "lake"'), 'name = "lake"\nstore = "s3://w', 2, "used twice"),
    (('kind = "listing"', 'kind = "magic"'), "magic", 2, "not supported"),
    (('webhooks = ["http://127.0.0.1:9/hook"]', 'webhooks = ["ftp://x"]'), "webhooks", 2,
     "not an http(s) URL"),
    (('stages = "10%,100%"', 'stages = "50%,10%"'), "stages", 2, "stages"),
    (('store = "s3://warehouse/"', 'store = "s3://"'), 's3://"', 2, "layers[1].store"),
    (('runner = "ci"\n', ""), None, 2, "runner is required"),
    (('trust_root = "', 'trust_root = "md5:'), "trust_root", 2, "trust_root"),
    (("[policy]", "[watchdog]\non_failure = \"pray\"\n[policy]"), "pray", 2,
     "on_failure must be restore or halt"),
    (("runner_key", "runner_key = = 1\n#"), "= =", 2, "not valid TOML"),
]


@pytest.mark.parametrize(("edit", "where", "code", "needles"),
                         [(b[0], b[1], b[2], b[3:]) for b in BAD],
                         ids=[f"bad{i}" for i in range(len(BAD))])
def test_job_check_errors_name_the_file_and_line(tmp_path: Path, edit: tuple[str, str],
                                                 where: str | None, code: int,
                                                 needles: tuple[str, ...]) -> None:
    text = GOOD.replace(edit[0], edit[1], 1)
    assert text != GOOD
    path = write(tmp_path, text)
    r = run_cli(["job", "check", str(path)])
    line = 1 if where is None else line_of(text, where.split("\n")[-1]) \
        - (1 if "\n" in where else 0)
    assert_one_line_error(r, code, f"{path}:{line}:", *needles)


def test_jobs_in_cleanup_toml_name_its_lines(tmp_path: Path) -> None:
    """[job.NAME] in cleanup.toml: the same checks, lines counted in cleanup.toml, and the
    file stays a valid config for the other commands."""
    body = GOOD.replace("[policy]", "[job.nightly.policy]").replace(
        "[notify]", "[job.nightly.notify]").replace("[[references]]", "[[job.nightly.references]]"
    ).replace("[[layers]]", "[[job.nightly.layers]]").replace(
        "[layers.inventory]", "[job.nightly.layers.inventory]")
    text = f'trust_root = "{PIN}"\n\n[job.nightly]\n' + body.replace(f'trust_root = "{PIN}"\n', "")
    (tmp_path / "cleanup.toml").write_text(text)
    ok(run_cli(["job", "check", "nightly"], cwd=tmp_path))
    bad = text.replace('kind = "listing"', 'kind = "listing"\ncolour = 1')
    (tmp_path / "cleanup.toml").write_text(bad)
    r = run_cli(["job", "check", "nightly"], cwd=tmp_path)
    assert_one_line_error(r, 2, f"cleanup.toml:{line_of(bad, 'colour')}:", "colour")
    r = run_cli(["job", "check", "weekly"], cwd=tmp_path)
    assert_one_line_error(r, 2, "no job 'weekly'")


def test_job_policy_within_the_trust_roots_floors(tmp_path: Path, alice_key: Path,
                                                  bob_key: Path) -> None:
    """`job check --floors` reads each layer's trust root; a job looser than its floors is
    refused (I17, exit 3) naming the job file's [policy] line."""
    store = tmp_path / "store"
    store.mkdir()
    allowed = tmp_path / "allowed"
    allowed.write_text(allowed_signers_text({"alice": alice_key, "bob": bob_key}))
    r = ok(run_cli(["trust", "init", str(store), "--from", str(allowed), "--people-run",
                    *PERMISSIVE_FLOORS, "--floor", "min_approvals=3", "--json"]))
    pin = json.loads(r.out)["digest"]
    for who, key in (("alice", alice_key), ("bob", bob_key)):
        ok(run_cli(["trust", "sign", str(store), "--version", "1", "--signer", who, "--key",
                    str(key)]))
    text = GOOD.replace(PIN, pin).replace('store = "s3://lake/data/"', f'store = "{store}"')
    text = text[:text.index('[[layers]]\nname = "wh"')]
    strict = text.replace("min_approvals = 2", "min_approvals = 3")
    ok(run_cli(["job", "check", str(write(tmp_path, strict)), "--floors"]))
    loose = text
    r = run_cli(["job", "check", str(write(tmp_path, loose)), "--floors"])
    assert_one_line_error(r, 3, "I17", f":{line_of(loose, '[policy]')}:",
                          "min_approvals 2 < floor 3")
    # The runner authors a job's plans: one approval would let one person decide alone.
    one = text.replace("min_approvals = 2", "min_approvals = 1")
    r = run_cli(["job", "check", str(write(tmp_path, one))])
    assert_one_line_error(r, 3, "I7", f":{line_of(one, 'min_approvals')}:",
                          "two people must approve")
    job = load_job(str(write(tmp_path, loose)))
    from cleanup.core.trust import Floors

    assert check_floors(job, Floors(min_approvals=1, min_buffer=timedelta(0),
                                    min_hold=timedelta(0))) == []


# ---------------------------------------------------------------------- key_lines

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_names, st.booleans(),
                          st.dictionaries(_names, st.integers(0, 9), min_size=1, max_size=4)),
                min_size=1, max_size=5, unique_by=lambda t: t[0]),
       st.dictionaries(_names, st.integers(), max_size=3))
def test_key_lines_finds_every_key(tables: list[tuple[str, bool, dict[str, int]]],
                                   top: dict[str, int]) -> None:
    """Every key of a document (top level, tables, arrays of tables, elements counted)
    is found at the line it is on: what `job check` names in its errors."""
    lines: list[str] = ["# a job"]
    want: dict[tuple[str | int, ...], int] = {}
    for k, v in top.items():
        lines.append(f"{k} = {v}")
        want[(k,)] = len(lines)
    for name, is_array, keys in tables:
        if name in top:
            continue
        for i in range(2 if is_array else 1):
            lines.append(f"[[{name}]]" if is_array else f"[{name}]")
            for k, v in keys.items():
                lines.append(f"{k} = {v}")
                want[(name, i, k) if is_array else (name, k)] = len(lines)
    import tomllib

    tomllib.loads("\n".join(lines))  # the generated document is valid TOML
    found = key_lines("\n".join(lines))
    for path, n in want.items():
        assert found[path] == n, (path, n, found)


# ---------------------------------------------------------------------- next_step (pure)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

_stage_states = st.sampled_from(["not-started", "running", "complete", "complete", "halted"])


@st.composite
def _layer(draw: Any, name: str) -> LayerView:
    planned = draw(st.booleans()) or draw(st.booleans())
    n = draw(st.integers(1, 3))
    stages = []
    for k in range(n):
        state = draw(_stage_states)
        finished = T0 + timedelta(minutes=draw(st.integers(0, 60))) \
            if state == "complete" else None
        purged = state == "complete" and draw(st.booleans())
        stages.append(StageView(k, state, finished, purged))
    need = draw(st.integers(1, 3))
    approvals = draw(st.integers(0, need))
    return LayerView(name, f"s3://{name}/", "ab" * 32 if planned else None, approvals, need,
                     planned and approvals >= need, tuple(stages) if planned else (),
                     timedelta(minutes=draw(st.integers(0, 30))),
                     timedelta(minutes=draw(st.integers(0, 90))),
                     draw(st.sampled_from(["copy", "none"])),
                     T0 + timedelta(minutes=draw(st.integers(0, 200))))


_views = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3,
                  unique=True).flatmap(lambda names: st.tuples(*[_layer(n) for n in names]))


@settings(max_examples=400, deadline=None)
@given(_views)
def test_next_step_keeps_the_job_safety_rules(views: tuple[LayerView, ...]) -> None:
    """Whatever the store records say: no stage before every layer is planned and
    approved; stage k on a layer only when every layer finished every stage < k and the
    layer's hold is over; nothing after a halt; purge only when every stage of every
    layer is complete and the stage's retention is over; done only when all is."""
    step = next_step(views)
    by = {v.name: v for v in views}
    halted = any(s.state == "halted" for v in views for s in v.stages)
    if halted:
        assert step.kind == "halted"
        return
    if step.kind in ("execute", "purge"):
        assert all(v.plan_id is not None and v.approved for v in views)
    if step.kind == "execute":
        k = step.stage
        assert k is not None
        assert step.targets
        for v in views:
            assert all(s.state == "complete" for s in v.stages if s.stage < k)
        for name, stage in step.targets:
            v = by[name]
            assert stage == k
            assert next(s for s in v.stages if s.stage == k).state != "complete"
            prev = next((s for s in v.stages if s.stage == k - 1), None)
            if prev is not None:
                assert prev.finished_at is not None
                assert v.now is not None
                assert v.now >= prev.finished_at + v.hold
    if step.kind == "purge":
        assert all(s.state == "complete" for v in views for s in v.stages)
        for name, stage in step.targets:
            v = by[name]
            s = next(s for s in v.stages if s.stage == stage)
            assert v.quarantine != "none"
            assert not s.purged
            assert s.finished_at is not None
            assert v.now is not None
            assert v.now >= s.finished_at + v.retention
    if step.kind == "done":
        assert all(v.approved and all(s.state == "complete" for s in v.stages)
                   and (v.quarantine == "none" or all(s.purged for s in v.stages))
                   for v in views)
    if step.kind == "plan":
        assert by[step.targets[0][0]].plan_id is None


# ---------------------------------------------------------------------- notify

@pytest.fixture
def slow_server() -> Iterator[str]:
    """A webhook that answers 500 after a while: never blocks an emit beyond its timeout."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(500)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_notify_posts_events_and_failures_never_raise(slow_server: str) -> None:
    with hooks_server() as hooks:
        notify.configure([slow_server, "http://127.0.0.1:9/refused", "not-a-url", hooks.url],
                         slack=True, stdout=True, link="https://ci.example/plan.md")
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                notify.emit("stage-finished", job="j", stage=1, when=T0, odd=object())
            failures = notify.failures()
        finally:
            notify.configure()
    assert len(hooks.events) == 1
    ev = hooks.events[0]
    assert ev["event"] == "stage-finished"
    assert ev["stage"] == 1
    assert ev["link"] == "https://ci.example/plan.md"
    assert ev["text"].startswith("cleanup: stage-finished")
    assert "plan.md" in ev["text"]
    line = json.loads(out.getvalue().strip())
    assert line["event"] == "stage-finished"
    assert line["when"] == T0.isoformat()
    assert len(failures) == 3, failures  # the 500, the refused one and the bad URL


def test_notify_unconfigured_is_silent() -> None:
    notify.configure()
    out = io.StringIO()
    with redirect_stdout(out):
        notify.emit("halted", job="j")
    assert out.getvalue() == ""


# ---------------------------------------------------------------------- show --markdown

def test_show_markdown_puts_overrides_and_risks_first(tmp_path: Path, alice_key: Path) -> None:
    from tests.test_plan_cli import Case

    case = Case(tmp_path, alice_key)
    case.write()
    ok(case.plan("--buffer", "2h", "--override-minimums"))
    md = ok(run_cli(["show", str(tmp_path / "plan"), "--markdown"])).out
    heads = [ln for ln in md.splitlines() if ln.startswith("#")]
    assert heads[:4] == [heads[0], "### Overrides and risks", "### Invariants",
                         heads[3]], heads
    assert heads[3].startswith("### Stages")
    risks = md[md.index("### Overrides and risks"):md.index("### Invariants")]
    assert "min_buffer lowered" in risks
    assert "| I1 strict-cutoff | yes |" in md
    assert "### Largest tenants" in md
    assert "### Regions" in md


# ---------------------------------------------------------------------- locks (I12)

def _lock_doc(executor: str, plan_id: str, expires: datetime) -> bytes:
    from cleanup.core.canonical import canonical_json
    from cleanup.core.timeutil import format_time

    return canonical_json({"executor": executor, "plan_id": plan_id, "host": "elsewhere",
                           "pid": 1, "token": "t", "acquired_at": format_time(expires),
                           "expires_at": format_time(expires)})


@pytest.mark.parametrize(("executor", "tag", "expired", "taken"), [
    ("ci", "job:nightly", True, True),      # our own lease, left by a killed pod: taken over
    ("ci", "job:nightly", False, False),    # our own, still live: another run is going
    ("ci", "job:weekly", True, False),      # another job's: never broken here
    ("alice", "job:nightly", True, False),  # a person's: never broken here
])
def test_runner_takes_over_only_its_own_expired_lock(tmp_path: Path, alice_key: Path,
                                                     executor: str, tag: str, expired: bool,
                                                     taken: bool) -> None:
    from cleanup.errors import LockHeld
    from cleanup.lock import LOCK_KEY, read_holder
    from cleanup.runner import Runner, RunOptions

    stores = [tmp_path / "b-store", tmp_path / "a-store"]
    for s in stores:
        s.mkdir()
    text = GOOD.replace('runner_key = "keys/ci"', f'runner_key = "{alice_key}"')
    text = text.replace('"s3://lake/data/"', f'"{stores[0]}"').replace(
        '"s3://warehouse/"', f'"{stores[1]}"')
    runner = Runner(load_job(str(write(tmp_path, text))), RunOptions())
    assert [rt.layer.store for rt in runner.rts] == sorted(str(s) for s in stores)
    when = datetime.now(UTC) + timedelta(minutes=-1 if expired else 5)
    (stores[0] / LOCK_KEY).parent.mkdir(parents=True)
    (stores[0] / LOCK_KEY).write_bytes(_lock_doc(executor, tag, when))
    if taken:
        with runner.locked():
            assert all(read_holder(rt.store)["plan_id"] == "job:nightly" for rt in runner.rts)
        assert not (stores[0] / LOCK_KEY).exists()
        assert not (stores[1] / LOCK_KEY).exists()
    else:
        with pytest.raises(LockHeld, match="job nightly: store .* is locked|expired lock"), \
                runner.locked():
            pass
        # the first store in canonical order was taken and released again: nothing held
        assert not (stores[1] / LOCK_KEY).exists()
        assert read_holder(runner.rts[1].store)["executor"] == executor


def test_run_status_says_what_it_waits_for() -> None:
    from cleanup.runner import RunStatus

    views = (LayerView("lake", "s3://lake/", "ab" * 32, 1, 2, False),
             LayerView("wh", "s3://wh/", "cd" * 32, 2, 2, True,
                       (StageView(0, "complete", T0), StageView(1, "not-started")),
                       timedelta(hours=24), timedelta(days=7), "copy", T0))
    step = next_step(views)
    assert step.kind == "wait"
    status = RunStatus("nightly", 3, waiting=list(step.waits))
    text = "\n".join(status.lines())
    assert text.startswith("job nightly run 3: waiting")
    assert f"waiting for: approvals by 1 more principal of layer lake's plan {'ab' * 32}" in text
    doc = status.to_json()
    assert doc["waiting"] == [{"kind": "approvals", "layer": "lake", "plan_id": "ab" * 32,
                               "missing": 1, "text": doc["waiting_for"][0]}]
    # once approved: stage 0's hold on each layer, measured by that layer's store clock
    lake = LayerView("lake", "s3://lake/", "ab" * 32, 2, 2, True,
                     (StageView(0, "complete", T0 + timedelta(hours=1)),
                      StageView(1, "not-started")),
                     timedelta(hours=24), timedelta(days=7), "copy", T0 + timedelta(hours=2))
    step = next_step((lake, views[1]))
    assert step.kind == "wait"
    assert sorted(w.text for w in step.waits) == [
        "stage 0's hold on layer lake until 2026-01-02T01:00:00Z",
        "stage 0's hold on layer wh until 2026-01-02T00:00:00Z"]
