"""CLI tests of `cleanup plan` and `cleanup show`: every refusal exits 3, names its
invariant, explains the numbers and writes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cleanup.core.timeutil import format_time
from tests.conftest import Run, assert_one_line_error
from tests.inproc import run_cli  # in-process; tests.conftest.run_cli is a real process
from tests.scenario import Scenario, tenant_objects

NOW = datetime.now(UTC).replace(microsecond=0)
TAKEN = NOW - timedelta(hours=2)
OLD = TAKEN - timedelta(days=5)


class Case(Scenario):
    """A local store with 100 listed objects over 4 tenants, 95 of them referenced."""

    def __init__(self, tmp: Path, key: Path) -> None:
        self.store = tmp / "store"
        self.store.mkdir()
        super().__init__(tmp, str(self.store), signers={"alice": key})
        self.key = key
        self.objects = tenant_objects(100, OLD)
        self.unreferenced = {k for k, _s, _t in self.objects[:5]}
        self.refs = [k for k, _s, _t in self.objects if k not in self.unreferenced]
        self.write()

    def write(self, *, taken_at: datetime | None = TAKEN, refs: list[str] | None = None,
              objects: list[tuple[str, int, datetime]] | None = None, store: str | None = None,
              skew_us: int | None = None, precision: timedelta = timedelta(seconds=1)) -> None:
        self.write_inputs(objects if objects is not None else self.objects,
                          refs if refs is not None else self.refs, taken_at=taken_at,
                          store=store, skew_us=skew_us, precision=precision)

    def plan(self, *extra: str, out: str = "plan") -> Run:
        return self.create_plan(*extra, out=out)

    def assert_refused(self, r: Run, invariant: str, *needles: str, out: str = "plan") -> None:
        assert_one_line_error(r, 3, invariant, *needles)
        assert not (self.tmp / out).exists(), "a refusal must write no plan directory"
        leftovers = [p.name for p in self.tmp.iterdir() if p.name.startswith(".cleanup-plan-")]
        assert not leftovers, leftovers


@pytest.fixture
def case(tmp_path: Path, alice_key: Path) -> Case:
    return Case(tmp_path, alice_key)


def test_plan_happy_path(case: Case, keys_dir: Path) -> None:
    r = case.plan("--internal", "internal", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    plan_dir = case.tmp / "plan"
    raw = (plan_dir / "plan.json").read_bytes()
    assert out["plan_id"] == hashlib.sha256(raw).hexdigest()
    plan = json.loads(raw)
    assert plan["manifest"]["objects"] == 5
    assert plan["cutoff"]["time"] == format_time(TAKEN - timedelta(hours=24))
    assert plan["inputs"]["snapshot"]["taken_at"] == {"time": format_time(TAKEN),
                                                      "clock": "claimed"}
    assert all(c["ok"] for c in plan["invariants"])
    assert {c["invariant"] for c in plan["invariants"]} >= {
        "I1 strict-cutoff", "I2 timestamp-precision", "I3 snapshot-sound", "I4 paths-agree",
        "I5 blast-radius", "I15 clocks-agree"}
    m = pq.read_table(plan_dir / "manifest.parquet")
    assert m.column_names == ["key", "size", "last_modified", "etag", "tenant", "stage"]
    rows = list(zip(m.column("stage").to_pylist(), m.column("key").to_pylist(), strict=True))
    assert rows == sorted(rows)
    assert set(m.column("key").to_pylist()) == case.unreferenced
    for tenant, stage in zip(m.column("tenant").to_pylist(), m.column("stage").to_pylist(),
                             strict=True):
        assert (stage == 0) == (tenant == "internal")
    assert plan["manifest"]["sha256"] == "sha256:" + hashlib.sha256(
        (plan_dir / "manifest.parquet").read_bytes()).hexdigest()
    # The author's signature verifies with plain OpenSSH, bound to this plan id.
    author = json.loads((plan_dir / "signatures" / "author.json").read_bytes())
    assert author["plan_id"] == out["plan_id"]
    assert author["role"] == "author"
    allowed = case.tmp / "allowed_signers"
    pub = Path(str(case.key) + ".pub").read_text().strip()
    allowed.write_text(f'alice namespaces="cleanup-plan" {pub}\n')
    with open(plan_dir / "signatures" / "author.json", "rb") as fh:
        v = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "alice",
                            "-n", "cleanup-plan", "-s",
                            str(plan_dir / "signatures" / "author.sig")],
                           stdin=fh, capture_output=True, text=True, check=False)
    assert v.returncode == 0, v.stderr
    # The store clock probe cleans up after itself.
    assert not list((case.store / "_cleanup" / "clock").iterdir())


@pytest.mark.parametrize(
    ("cutoff", "needle"),
    [(TAKEN, f"cutoff {format_time(TAKEN)} is not before snapshot taken_at {format_time(TAKEN)}"
             " minus buffer 24h"),
     (TAKEN + timedelta(minutes=5), "is not before snapshot taken_at"),
     (TAKEN - timedelta(hours=1), "minus buffer 24h"),
     (TAKEN - timedelta(hours=24) + timedelta(seconds=1), "minus buffer 24h")],
    ids=["equal", "after", "within-buffer", "one-second-late"],
)
def test_i1_refuses_late_cutoff(case: Case, cutoff: datetime, needle: str) -> None:
    case.assert_refused(case.plan("--cutoff", format_time(cutoff)), "I1 strict-cutoff", needle)


def test_i1_accepts_cutoff_at_the_limit(case: Case) -> None:
    r = case.plan("--cutoff", format_time(TAKEN - timedelta(hours=24)))
    assert r.code == 0, r.err


def test_i1_refuses_small_buffer_and_override_is_recorded(case: Case) -> None:
    case.assert_refused(case.plan("--buffer", "1h"), "I1 strict-cutoff", "below the minimum 24h")
    r = case.plan("--buffer", "1h", "--override-minimums", "--json")
    assert r.code == 0, r.err
    plan = json.loads((case.tmp / "plan" / "plan.json").read_text())
    assert plan["buffer"] == "1h"
    assert any("min_buffer lowered" in o for o in plan["overrides"])
    show = run_cli(["show", str(case.tmp / "plan")])
    assert show.code == 0
    assert show.out.index("POLICY OVERRIDES") < show.out.index("invariants")


def test_i1_naive_cutoff_is_a_usage_error(case: Case) -> None:
    assert_one_line_error(case.plan("--cutoff", "2026-01-01T00:00:00"), 2, "has no zone")


def test_i2_precision_keeps_files_that_may_be_after_cutoff(case: Case) -> None:
    cutoff = TAKEN - timedelta(hours=24)
    objects = [*case.objects,
               ("acme/t/late.parquet", 1, cutoff - timedelta(milliseconds=500)),
               ("acme/t/exact.parquet", 1, cutoff - timedelta(seconds=1))]
    case.write(objects=objects)
    r = case.plan()
    assert r.code == 0, r.err
    keys = set(pq.read_table(case.tmp / "plan" / "manifest.parquet").column("key").to_pylist())
    assert "acme/t/late.parquet" not in keys  # may have been written at the cutoff
    assert "acme/t/exact.parquet" in keys


def test_i3_refuses_empty_snapshot(case: Case) -> None:
    case.write(refs=[])
    case.assert_refused(case.plan(), "I3 snapshot-sound", "empty")


def test_i3_refuses_snapshot_without_taken_at(case: Case) -> None:
    case.write(taken_at=None)
    case.assert_refused(case.plan(), "I3 snapshot-sound", "no taken_at")


def test_i3_refuses_future_snapshot(case: Case) -> None:
    case.write(taken_at=datetime.now(UTC) + timedelta(hours=1))
    case.assert_refused(case.plan(), "I3 snapshot-sound", "in the future")


def test_i4_refuses_missing_references(case: Case) -> None:
    case.write(refs=[*case.refs, "acme/t/not-listed.parquet"])
    case.assert_refused(case.plan(), "I4 paths-agree", "1 of 96 referenced keys",
                        "not-listed.parquet")
    # With the limit raised explicitly it plans, and the override is recorded.
    r = case.plan("--max-missing-refs", "0.05")
    assert r.code == 0, r.err


def test_i4_refuses_references_outside_the_store(case: Case) -> None:
    case.write(refs=[f"s3://elsewhere/{k}" for k in case.refs])
    case.assert_refused(case.plan(), "I4 paths-agree", "no reference falls inside the store")


def test_i4_accepts_absolute_references(case: Case) -> None:
    case.write(refs=[f"{case.store}/{k}" for k in case.refs])
    r = case.plan("--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["objects"] == 5


def test_i4_refuses_inventory_of_another_store(case: Case) -> None:
    case.write(store="/somewhere/else")
    case.assert_refused(case.plan(), "I4 paths-agree", "the inventory lists store")


def test_i5_refuses_large_blast_radius(case: Case) -> None:
    case.write(refs=case.refs[:50])
    case.assert_refused(case.plan(), "I5 blast-radius", "50 of 100 objects (50.00%)",
                        "above max_delete_fraction 10.00%")


def test_i15_refuses_skewed_metadata_clock(case: Case) -> None:
    case.write(skew_us=10 * 60 * 10**6)
    case.assert_refused(case.plan(), "I15 clocks-agree", "metadata clock is 10m ahead")


def test_i15_limit_is_a_tenth_of_the_buffer(case: Case) -> None:
    case.write(skew_us=-4 * 60 * 10**6)
    assert case.plan().code == 0  # 4m < 5m
    case.assert_refused(case.plan("--buffer", "30m", "--override-minimums", out="p2"),
                        "I15 clocks-agree", "allowed 3m", out="p2")


def test_i16_refuses_unreferenced_sentinel(case: Case) -> None:
    sentinel = sorted(case.unreferenced)[0]
    case.assert_refused(case.plan("--sentinel", sentinel), "I16 sentinels",
                        "is not in the snapshot", "is a candidate")


def test_i16_refuses_unlisted_sentinel(case: Case) -> None:
    case.write(refs=[*case.refs, "acme/t/gone.parquet"])
    case.assert_refused(case.plan("--sentinel", "acme/t/gone.parquet",
                                  "--max-missing-refs", "0.05"),
                        "I16 sentinels", "is not in the inventory")


def test_i16_accepts_live_sentinels_from_file(case: Case) -> None:
    f = case.tmp / "sentinels.txt"
    f.write_text("# live\n" + "\n".join(case.refs[:3]) + "\n")
    r = case.plan("--sentinel-file", str(f), "--json")
    assert r.code == 0, r.err
    assert json.loads((case.tmp / "plan" / "plan.json").read_text())["sentinels"] == sorted(
        case.refs[:3])


def test_existing_plan_dir_is_not_overwritten(case: Case) -> None:
    (case.tmp / "plan").mkdir()
    (case.tmp / "plan" / "x").write_text("keep")
    assert_one_line_error(case.plan(), 2, "already exists")
    assert (case.tmp / "plan" / "x").read_text() == "keep"


@pytest.mark.parametrize("which", ["inventory", "snapshot"])
def test_wrong_input_kind_is_a_usage_error(case: Case, which: str) -> None:
    if which == "inventory":
        case.inventory.write_bytes(case.snapshot.read_bytes())
    else:
        case.snapshot.write_bytes(case.inventory.read_bytes())
    assert_one_line_error(case.plan(), 2, f"is not a cleanup {which} file")


def test_missing_input_is_a_usage_error(case: Case) -> None:
    case.inventory.unlink()
    assert_one_line_error(case.plan(), 2, "no such file")


def test_show_json_and_text(case: Case) -> None:
    assert case.plan("--internal", "internal").code == 0
    r = run_cli(["show", str(case.tmp / "plan"), "--json"])
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert s["manifest_intact"] is True
    assert sum(t["objects"] for t in s["top_tenants"]) == 5
    assert s["top_prefixes"][0]["prefix"].endswith("/t/")
    text = run_cli(["show", str(case.tmp / "plan")])
    assert "I1 strict-cutoff" in text.out
    assert "stage" in text.out
    # Tampering with the manifest shows.
    (case.tmp / "plan" / "manifest.parquet").write_bytes(b"tampered")
    r = run_cli(["show", str(case.tmp / "plan"), "--json"])
    assert r.code == 0, r.err  # show still shows the plan, and says the manifest is wrong
    assert "Traceback" not in r.err
    assert json.loads(r.out)["manifest_intact"] is False


def test_show_missing_plan_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(["show", str(tmp_path / "nope")]), 2, "not a plan directory")


def test_cli_help_imports_no_heavy_library() -> None:
    code = ("import sys; from cleanup.cli.main import cli; "
            "heavy = [m for m in ('duckdb', 'pyarrow', 'boto3', 'botocore', 'rich', 'psycopg',"
            " 'deltalake', 'pyiceberg', 'pyspark', 'google.cloud.storage',"
            " 'azure.storage.blob') if m in sys.modules]; print(','.join(heavy))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == ""
    r = run_cli(["--help"])
    assert r.code == 0
    assert "Exit codes" in r.out


def _all_commands() -> list[list[str]]:
    import click

    from cleanup.cli.main import cli

    out: list[list[str]] = []
    for name, cmd in sorted(cli.commands.items()):
        out.append([name])
        if isinstance(cmd, click.Group):
            out += [[name, sub] for sub in sorted(cmd.commands)]
    return out


@pytest.mark.parametrize("command", _all_commands(), ids=" ".join)
def test_every_command_has_help_and_is_documented(command: list[str]) -> None:
    r = run_cli([*command, "--help"])
    assert r.code == 0
    assert len(r.out.splitlines()) > 4
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"cleanup {' '.join(command)}" in readme, f"README does not mention {command}"


def test_a_full_disk_or_memory_names_what_to_change(tmp_path: Path) -> None:
    """A planning query that fails for room, not input, says which room (seen at 1B
    objects: the join's spill filled the disk, and the hint blamed the inputs)."""
    from cleanup.core.paths import parse_store
    from cleanup.engine import Engine, EngineInput

    spill = tmp_path / ".spill"
    eng = Engine(EngineInput(inventory="i", snapshot="s", store=parse_store(str(tmp_path)),
                             cutoff=NOW, precision=timedelta(seconds=1),
                             tenant_pattern=r"^(?P<tenant>[^/]+)/", tenant_group=1,
                             memory_limit="2GB", temp_dir=str(spill)))
    try:
        disk = eng.failure_hint('IO Error: Could not write file "x.tmp": No space left on device')
        memory = eng.failure_hint("Out of Memory Error: could not allocate block of size 256 KiB")
        other = eng.failure_hint("Binder Error: column key not found")
    finally:
        eng.close()
    assert str(spill) in disk
    assert "disk filled up" in disk
    assert "--memory-limit 2GB is too small" in memory
    assert "made by `cleanup inventory`" in other
