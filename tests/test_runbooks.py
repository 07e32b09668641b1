"""Runbooks as code: `cleanup runbook check`, its refusals, and every runbook's commands
run in order against a generated demo store, so a runbook cannot drift from the tool."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cleanup.cli.runbook_cmd import runbook_group
from cleanup.demo import build
from cleanup.runbook import (
    check_paths,
    load_runbooks,
    parse_runbook,
    raw_deletions,
    split_commands,
    validate_invocation,
)

REPO = Path(__file__).resolve().parents[1]
RUNBOOKS = REPO / "runbooks"
TODAY = date(2026, 11, 22)

# Runs `cleanup` through the real entry point (exit-code mapping of cli.main included),
# with the runbook group registered if cleanup/cli/main.py does not register it yet.
MAIN = ("import sys; from cleanup.cli.main import cli, main; "
        "from cleanup.cli.runbook_cmd import runbook_group; "
        "'runbook' in cli.commands or cli.add_command(runbook_group); main(sys.argv[1:])")


@pytest.fixture(scope="module")
def root() -> click.Group:
    from cleanup.cli.main import cli

    if "runbook" not in cli.commands:
        cli.add_command(runbook_group)
    return cli


def run_main(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120, check=False)


# --- the repository's runbooks pass ------------------------------------------------------------


def test_repo_runbooks_pass(root: click.Group) -> None:
    r = CliRunner().invoke(root, ["runbook", "check", str(RUNBOOKS)])
    assert r.exit_code == 0, r.output
    # every runbook of the folder is checked (README.md is its index, not a runbook)
    count = len([p for p in RUNBOOKS.glob("*.md") if p.name != "README.md"])
    assert count >= 11
    assert f"{count} runbooks ok" in r.stdout
    p = run_main("runbook", "check", "runbooks/")
    assert p.returncode == 0, p.stderr
    p = run_main("runbook", "check")  # default: ./runbooks
    assert p.returncode == 0, p.stderr
    rep = json.loads(run_main("runbook", "check", "--json", "runbooks").stdout)
    assert rep["ok"] is True
    assert rep["findings"] == []
    assert rep["cleanup_commands"] >= 50


def test_runbooks_cover_the_four_topics() -> None:
    books = {rb.path.name: rb for rb in load_runbooks([RUNBOOKS])}
    assert list(books) == sorted(books)  # run in file-name order
    text = {name: rb.path.read_text() for name, rb in books.items()}

    def uses(name: str, *words: str) -> bool:
        cmds = " ".join(c.text for c in books[name].commands)
        return all(w in cmds for w in words)

    # (0) the store's trust root, signed by every principal and pinned by the runner
    assert uses("00-trust-root-setup.md", "cleanup trust init", "--people-run",
                "cleanup trust sign", "cleanup trust show", "--pin", "cleanup.toml",
                "cleanup trust verify")
    assert not books["00-trust-root-setup.md"].destructive
    assert "runner-separation.md" in text["00-trust-root-setup.md"]
    # (a) an orphan-file cleanup from inventory to purge (01 then, after review, 03); the
    # reconciliation source is signed into the plan, so execute names none
    assert uses("01-plan-orphan-cleanup.md", "cleanup inventory", "cleanup snapshot",
                "cleanup plan", "--reconcile-with", "--reconcile-query", "cleanup show")
    assert uses("03-execute-orphan-cleanup.md", "cleanup witness", "cleanup execute",
                "cleanup status", "cleanup purge")
    for rb in books.values():
        for c in rb.commands:
            if c.text.startswith(("cleanup execute", "cleanup purge")):
                assert "--allowed-signers" not in c.text, (rb.path.name, c.line)
                assert "--reconcile-with" not in c.text, (rb.path.name, c.line)
            if c.text.startswith("cleanup purge"):
                assert "--key" in c.text, (rb.path.name, c.line)
    # presence (I8): the first run publishes a challenge and exits 4, the reviewer
    # witnesses it, the same command runs the stage
    seq = [(c.expect, c.text.split(" --")[0])
           for c in books["03-execute-orphan-cleanup.md"].commands
           if c.text.startswith(("cleanup execute", "cleanup witness"))
           and "--dry-run" not in c.text]
    assert seq[:3] == [(4, 'cleanup execute "$PLAN"'), (0, 'cleanup witness "$PLAN"'),
                       (0, 'cleanup execute "$PLAN"')], seq
    # (b) restoring from quarantine
    assert uses("05-restore-from-quarantine.md", "cleanup restore", "--key", "--stage")
    # (c) emergency stop and lock handling
    assert uses("04-emergency-stop-and-lock.md", "cleanup status", "--break-lock")
    assert "exit 6" in text["04-emergency-stop-and-lock.md"]
    # (d) reviewing and approving a plan, including the by-hand OpenSSH check
    assert uses("02-review-and-approve-plan.md", "cleanup show", "cleanup verify",
                "cleanup approve", "sha256sum", "ssh-keygen -Y verify", "-n cleanup-plan")
    for rb in books.values():
        assert rb.front.get("destructive") in ("true", "false")
        assert all(rb.front.get(k) for k in ("owner", "reviewed_by", "last_reviewed"))
    assert books["03-execute-orphan-cleanup.md"].destructive
    assert books["04-emergency-stop-and-lock.md"].destructive


# --- broken runbooks fail with the right message -------------------------------------------------

GOOD_FRONT = """\
---
destructive: true
owner: alice
reviewed_by: bob
last_reviewed: 2026-01-02
---
"""


def _write(tmp_path: Path, body: str, front: str = GOOD_FRONT) -> Path:
    p = tmp_path / "rb.md"
    p.write_text(front + "\n# A runbook\n\n" + textwrap.dedent(body))
    return p


def _console(*lines: str) -> str:
    return "```console\n" + "\n".join(lines) + "\n```\n"


def _findings(path: Path, root: click.Group) -> list[tuple[int, str]]:
    rep = check_paths([path], root, today=TODAY)
    return [(f.line, f.message) for f in rep.findings]


FRONT_CASES = {
    "destructive without reviewed_by": (
        "---\ndestructive: true\nowner: alice\nlast_reviewed: 2026-01-02\n---\n",
        1, "destructive runbook has no reviewed_by"),
    "destructive without owner": (
        "---\ndestructive: true\nreviewed_by: bob\nlast_reviewed: 2026-01-02\n---\n",
        1, "destructive runbook has no owner"),
    "destructive without last_reviewed": (
        "---\ndestructive: true\nowner: alice\nreviewed_by: bob\n---\n",
        1, "destructive runbook has no last_reviewed"),
    "reviewed only by its owner": (
        "---\ndestructive: true\nowner: alice\nreviewed_by: alice\nlast_reviewed: 2026-01-02\n"
        "---\n", 4, "reviewed only by its owner 'alice'"),
    "last_reviewed not a date": (
        "---\ndestructive: true\nowner: alice\nreviewed_by: bob\nlast_reviewed: last week\n"
        "---\n", 5, "last_reviewed 'last week' is not an ISO date"),
    "last_reviewed in the future": (
        "---\ndestructive: true\nowner: alice\nreviewed_by: bob\nlast_reviewed: 2027-01-01\n"
        "---\n", 5, "is in the future"),
    "no destructive flag": (
        "---\nowner: alice\n---\n", 1, "must say `destructive: true` or `destructive: false`"),
    "destructive not a boolean": (
        "---\ndestructive: maybe\n---\n", 2, "destructive must be true or false"),
    "unknown front matter key": (
        "---\ndestructive: false\nreviewed-by: bob\n---\n", 3, "unknown key 'reviewed-by'"),
    "no front matter": ("", 1, "no front matter"),
    "unclosed front matter": ("---\ndestructive: false\n", 1, "never closed"),
}


@pytest.mark.parametrize("case", sorted(FRONT_CASES))
def test_front_matter_refusals(case: str, tmp_path: Path, root: click.Group) -> None:
    front, line, needle = FRONT_CASES[case]
    p = _write(tmp_path, _console("$ cleanup status \"$PLAN\""), front=front)
    found = _findings(p, root)
    assert len(found) == 1, found
    assert found[0][0] == line
    assert needle in found[0][1], found


def test_non_destructive_runbook_needs_no_review(tmp_path: Path, root: click.Group) -> None:
    p = _write(tmp_path, _console("$ cleanup status \"$PLAN\""),
               front="---\ndestructive: false\n---\n")
    assert _findings(p, root) == []


# The offending command is always on line 12 of the file (front matter 6, blank, title,
# blank, fence at 10, a valid first command at 11).
COMMAND_CASES = {
    "unknown flag": ("cleanup plan --no-such-flag", "No such option '--no-such-flag'"),
    "unknown flag among valid ones": (
        'cleanup show "$PLAN" --top 5 --colour', "No such option '--colour'"),
    "unknown subcommand": ("cleanup frobnicate \"$PLAN\"", "No such command 'frobnicate'"),
    "unknown nested subcommand": ("cleanup audit check \"$STORE\"", "No such command 'check'"),
    "missing required option": (
        'cleanup verify "$PLAN"', "not a valid `cleanup verify` invocation: Missing option "
                                  "'--allowed-signers'"),
    "missing required options of plan": (
        'cleanup plan --store "$STORE" -o "$PLAN"', "Missing option"),
    "missing argument": ("cleanup audit verify", "Missing argument 'STORE'"),
    "missing subcommand": ("cleanup audit", "`cleanup audit` needs a subcommand (one of: "
                                            "verify)"),
    "bare cleanup": ("cleanup", "`cleanup` needs a subcommand"),
    "extra argument": ('cleanup status "$PLAN" extra', "unexpected extra argument"),
    "badly typed value": ('cleanup restore "$PLAN" --stage zero', "Invalid value for '--stage'"),
    "bad duration": ('cleanup plan --store s --inventory i --snapshot n -o p --author a '
                     '--key k --buffer 1y', "invalid duration '1y'"),
    "bad choice": ('cleanup plan --store s --inventory i --snapshot n -o p --author a '
                   '--key k --quarantine trash', "Invalid value for '--quarantine'"),
    "--help exits": ('cleanup show "$PLAN" --help', "`--help` prints and exits"),
    "--version exits": ("cleanup --version", "`--version` prints and exits"),
    "python -m cleanup is checked too": (
        'python3 -m cleanup status "$PLAN" --no-such', "No such option '--no-such'"),
    "after a pipe": ('cat x | cleanup status', "Missing argument 'PLAN_DIR'"),
    "raw aws s3 rm": ("aws s3 rm s3://lake/warehouse/ --recursive",
                      "raw deletion outside the tool (aws s3 rm)"),
    "raw aws s3api delete-objects": (
        "aws s3api delete-objects --bucket lake --delete file://keys.json",
        "raw deletion outside the tool (aws s3api delete-object)"),
    "raw rm -rf": ("rm -rf /data", "raw deletion outside the tool (rm -r)"),
    "raw rm -fr after &&": ("cleanup status \"$PLAN\" && rm -fr /data/x",
                            "raw deletion outside the tool (rm -r)"),
    "raw rm through xargs": ("cut -d, -f1 orphans.csv | xargs rm",
                             "raw deletion outside the tool (rm)"),
    "raw DELETE FROM": ('duckdb meta.duckdb "DELETE FROM files WHERE tenant = \'acme\'"',
                        "raw deletion outside the tool (DELETE FROM)"),
    "raw delete from, lower case": ("psql -c 'delete from data_files'",
                                    "raw deletion outside the tool (DELETE FROM)"),
    "raw s5cmd rm": ("s5cmd rm 's3://lake/warehouse/*'",
                     "raw deletion outside the tool (s5cmd rm)"),
    "raw s5cmd rm with flags": ("s5cmd --endpoint-url http://minio:9000 rm 's3://lake/x/*'",
                                "raw deletion outside the tool (s5cmd rm)"),
    "raw gsutil rm": ("gsutil -m rm gs://lake/x/**", "raw deletion outside the tool (gsutil rm)"),
    "raw find -delete": ("find /data -name '*.tmp' -delete",
                         "raw deletion outside the tool (find -delete)"),
}


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_command_refusals(case: str, tmp_path: Path, root: click.Group) -> None:
    command, needle = COMMAND_CASES[case]
    p = _write(tmp_path, _console('$ cleanup status "$PLAN"', f"$ {command}"))
    found = _findings(p, root)
    assert len(found) == 1, found
    assert found[0][0] == 12, found
    assert needle in found[0][1], found


def test_raw_deletion_in_output_comment_or_other_block(tmp_path: Path, root: click.Group) -> None:
    body = (_console('$ cleanup status "$PLAN"', "# or by hand: aws s3 rm s3://lake/x")
            + "\n```sql\nDELETE FROM data_files;\n```\n")
    found = _findings(_write(tmp_path, body), root)
    assert [(ln, "aws s3 rm" in m) for ln, m in found[:1]] == [(12, True)]
    assert found[1][0] == 16
    assert "(DELETE FROM)" in found[1][1]
    assert len(found) == 2


def test_destructive_commands_need_a_destructive_runbook(tmp_path: Path,
                                                         root: click.Group) -> None:
    front = "---\ndestructive: false\n---\n"
    execute = 'cleanup execute "$PLAN" --stage 0 --executor alice --key k'
    purge = 'cleanup purge "$PLAN" --stage 0 --executor alice --key k'
    p = _write(tmp_path, _console(f"$ {execute} --dry-run", f"$ {execute}", f"$ {purge}"),
               front=front)
    found = _findings(p, root)
    assert [ln for ln, _m in found] == [9, 10]
    assert "`cleanup execute` removes files but the runbook says destructive: false" in found[0][1]
    assert "`cleanup purge` removes files" in found[1][1]


def test_block_and_annotation_structure(tmp_path: Path, root: click.Group) -> None:
    body = ("```bash\ncleanup status \"$PLAN\"\n```\n\n"            # fence on line 10
            "```console\n# expect exit 3\nsome output\n```\n\n"      # fence on line 14
            "```console\n$ cleanup status \\\n```\n")                # fence on line 19
    found = _findings(_write(tmp_path, body), root)
    assert [ln for ln, _m in found] == [10, 14, 15, 20, 20], found
    assert "commands in a `bash` block" in found[0][1]
    assert "console block has no `$ ` command" in found[1][1]
    assert "`# expect exit` is not followed by a command" in found[2][1]
    assert "continues (`\\`) past the end of its block" in found[3][1]
    assert "Missing argument 'PLAN_DIR'" in found[4][1]


def test_shell_syntax_and_placeholders_are_accepted(tmp_path: Path, root: click.Group) -> None:
    body = _console(
        "# expect exit 4",
        '$ cleanup verify "$PLAN" --allowed-signers "${ALLOWED_SIGNERS}"',
        "plan 1234 (example output, not a command)",
        '$ CLEANUP_X=1 cleanup status "$PLAN" --json 2>&1 | tee status.json > /dev/null',
        '$ cleanup plan --store "$STORE" --inventory "$WORK/inv.parquet" \\',
        '      --snapshot "$WORK/snap.parquet" -o "$PLAN" --author "$OPERATOR" \\',
        '      --key ~/.ssh/id_ed25519 --sentinel-file "$WORK/no-such-file.txt" --buffer 48h',
        '$ cleanup snapshot "$(pwd)/meta.duckdb" --query "SELECT path FROM f" -o s.parquet',
        '$ sha256sum "$PLAN/plan.json"; python -m cleanup show "$PLAN" --top 3',
        '$ cleanup show "$PLAN"   # a comment',
    )
    p = _write(tmp_path, body)
    assert _findings(p, root) == []
    rb, _f = parse_runbook(p)
    assert [c.expect for c in rb.commands] == [4, 0, 0, 0, 0, 0]
    assert rb.commands[2].text.count("--") == 7  # continuations joined into one command


def test_checking_executes_nothing(tmp_path: Path, root: click.Group,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "would-be-demo"
    assert validate_invocation(["demo", str(target)], root) == (["demo"], None)
    assert validate_invocation(["--version"], root)[1] is not None
    assert validate_invocation(["approve", str(target), "--signer", "x", "--key", "k"],
                               root) == (["approve"], None)
    assert not target.exists()
    assert capsys.readouterr() == ("", "")


def test_split_commands_and_patterns() -> None:
    assert split_commands('A=1 cleanup show "$P x" --json 2>&1 | jq . > out && echo ok') == [
        ["cleanup", "show", "$P x", "--json"], ["jq", "."], ["echo", "ok"]]
    assert split_commands("ssh-keygen -Y verify -s a.sig < a.json") == [
        ["ssh-keygen", "-Y", "verify", "-s", "a.sig"]]
    for harmless in ("cleanup purge plan", "confirm the prefix", "cat remove.txt",
                     "ssh-keygen -Y verify -f allowed_signers", "git rm-cache"):
        assert raw_deletions(harmless) == [], harmless


def test_cli_exit_3_and_one_line_per_finding(tmp_path: Path) -> None:
    d = tmp_path / "books"
    d.mkdir()
    (d / "01-ok.md").write_text("---\ndestructive: false\n---\n\n"
                                + _console('$ cleanup status "$PLAN"'))
    (d / "02-bad.md").write_text(GOOD_FRONT.replace("reviewed_by: bob\n", "")
                                 + _console("$ cleanup plan --no-such-flag", "$ rm -rf /data"))
    (d / "README.md").write_text("not a runbook: no front matter\n")
    p = run_main("runbook", "check", str(d))
    assert p.returncode == 3, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert all(ln.startswith("runbook: ") for ln in lines), lines
    assert lines[0] == (f"runbook: {d / '02-bad.md'}:1: destructive runbook has no reviewed_by: "
                        "a runbook that removes files needs owner, reviewed_by and "
                        "last_reviewed")
    assert f"{d / '02-bad.md'}:7: not a valid `cleanup plan` invocation" in lines[1]
    assert f"{d / '02-bad.md'}:8: raw deletion outside the tool (rm -r)" in lines[2]
    assert lines[3] == "runbook: 3 finding(s) in 1 of 2 runbook(s)"
    assert "Traceback" not in p.stderr
    rep = json.loads(run_main("runbook", "check", "--json", str(d)).stdout)
    assert rep["ok"] is False
    assert len(rep["findings"]) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main("runbook", "check", str(empty)).returncode == 3
    assert run_main("runbook", "check", str(tmp_path / "missing")).returncode == 2
    assert run_main("runbook", "check", cwd=tmp_path).returncode == 2  # no ./runbooks
    h = run_main("runbook", "check", "--help")
    assert h.returncode == 0
    assert "3 refused" in h.stdout


def test_max_review_age(root: click.Group) -> None:
    rep = check_paths([RUNBOOKS], root, today=date(2030, 1, 1), max_review_age=365)
    assert rep.findings
    assert all("review it again" in f.message for f in rep.findings)


# --- the runbooks run, in order, against a demo store -------------------------------------------


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith("_cleanup/")}


def _delta_table(table: Path) -> None:
    """A real Delta table (delta-rs) that lived for weeks: appends, an overwrite and a
    compaction, every commit and file backdated (the runbook lists with --trust-mtime),
    plus a stray file no commit wrote; the overwritten and compacted files are older
    than the table's retention (7 days), so the plan has candidates."""
    from tests.test_delta_source import build as build_delta

    build_delta(table, ["append", "append", "overwrite", "append", "optimize", "stray"],
                datetime.now(UTC) - timedelta(days=2), checkpoint=True)
    assert (table / "_delta_log").is_dir()


def _iceberg_namespace(root: Path) -> dict[str, str]:
    """Two Iceberg tables of namespace `db` in a SQL catalog on SQLite (pyiceberg), a
    stray data file in each, all backdated; returns the runbook's variables and the
    catalog's pyiceberg environment."""
    from tests.test_iceberg_source import _batch, catalog_env, new_table, open_catalog
    from tests.test_iceberg_source import backdate as backdate_iceberg

    warehouse = root / "warehouse"
    warehouse.mkdir(parents=True)
    uri = f"sqlite:///{root}/catalog.db"
    catalog = open_catalog("lake", uri, warehouse)
    catalog.create_namespace("db")
    for i, name in enumerate(("db.events", "db.orders")):
        table = new_table(catalog, name)
        table.append(_batch(4, i))
        table.append(_batch(3, i + 10))
        stray = warehouse / "db" / name.split(".")[1] / "data" / f"stray-{i}.parquet"
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"stray")
    backdate_iceberg(warehouse, datetime.now(UTC) - timedelta(days=10))
    return {"ICEBERG_CATALOG": "lake", "ICEBERG_NAMESPACE": "db",
            "ICEBERG_WAREHOUSE": str(warehouse), **catalog_env("lake", uri, warehouse)}


def test_runbooks_run_in_order_against_a_demo_store(tmp_path: Path) -> None:
    """Every `$ ` command of every runbook, in file-name order, through bash (`set -euo
    pipefail`: an unset variable fails too) in one working directory, with the real
    `cleanup` executable first on PATH; each must exit 0 or its `# expect exit N`.
    Runbook 00 sets up the demo store's trust root and pins it in the working
    directory's cleanup.toml, which every later command reads."""
    d = build(tmp_path / "demo")
    delta_table = tmp_path / "delta" / "events"
    _delta_table(delta_table)
    iceberg = _iceberg_namespace(tmp_path / "iceberg")
    work = tmp_path / "work"
    work.mkdir()
    bindir = Path(sys.executable).parent
    assert (bindir / "cleanup").is_file(), "the cleanup console script is not installed"
    env = {k: v for k, v in os.environ.items() if k != "CLEANUP_DEBUG"}
    env.update({
        "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        "WORK": str(work), "STORE": str(d.store), "METADATA": str(d.metadata),
        "QUERY": "SELECT path FROM data_files", "INTERNAL_TENANTS": "internal-analytics",
        "SENTINEL": "internal-analytics/events/part-0010.parquet",
        "PLAN": str(work / "plan"), "KEYS": str(d.keys),
        "ALLOWED_SIGNERS": str(d.allowed_signers),
        "OPERATOR": "alice", "OPERATOR_KEY": str(d.key("alice")),
        "REVIEWER": "bob", "REVIEWER_KEY": str(d.key("bob")),
        "MISSING_KEY": "internal-analytics/events/part-0000.parquet",
        "DELTA_TABLE": str(delta_table),
        "IAM_STORE": "s3://lake/warehouse/",
        "PLANNER_ARN": "arn:aws:iam::123456789012:role/cleanup-planner",
        "APPROVER_ARN": "arn:aws:iam::123456789012:role/cleanup-approver",
        "RUNNER_ARN": "arn:aws:iam::123456789012:role/cleanup-runner",
        **iceberg,
    })
    for var in ("CLEANUP_TRUST_ROOT", "PYICEBERG_HOME"):
        env.pop(var, None)  # the pin comes from runbook 00's ./cleanup.toml only
    before = _tree_digest(d.store)
    ran: list[str] = []
    for rb in load_runbooks([RUNBOOKS]):
        assert rb.commands, f"{rb.path.name} has no commands"
        for c in rb.commands:
            p = subprocess.run(["bash", "-c", "set -euo pipefail\n" + c.text], cwd=work,
                               env=env, capture_output=True, text=True, timeout=120,
                               stdin=subprocess.DEVNULL, check=False)
            assert p.returncode == c.expect, (
                f"{rb.path.name}:{c.line}: `{c.text}` exited {p.returncode}, expected "
                f"{c.expect}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
            assert "Traceback" not in p.stderr, p.stderr
            if c.expect:
                assert "cleanup: error:" in p.stderr, p.stderr
            ran.append(f"{rb.path.name}:{c.line}")
    assert len(ran) >= 60
    pin = (work / "cleanup.toml").read_text()
    assert pin.startswith('trust_root = "sha256:'), pin
    # 03 moved stage 0 into quarantine; 05 brought every file back, byte for byte.
    assert _tree_digest(d.store) == before
    events = [json.loads(p.read_text())["event"]
              for p in sorted((d.store / "_cleanup" / "audit").iterdir())]
    for ev in ("plan-created", "approval", "witness", "witness-consumed", "stage-start",
               "stage-end", "restore"):
        assert ev in events, (ev, events)
    # one witness was consumed: stage 0's run; stage 1's was refused by its hold (I10)
    # before it could consume one, and purge was refused by the retention (I11)
    assert events.count("witness-consumed") == 1, events
    assert events.count("stage-start") == 1, events
    assert "purge" not in events, events
    # the plans of the Delta and Iceberg runbooks went to their own stores
    for store in (delta_table, Path(iceberg["ICEBERG_WAREHOUSE"])):
        assert any((store / "_cleanup" / "plans").iterdir()), store
        assert (store / "_cleanup" / "trust" / "root.1.json").is_file(), store
