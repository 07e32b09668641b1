"""Every bad input is one line and the documented exit code (2 usage, 3 invariant),
never exit 1, a traceback or a partial plan: overflowing times and durations, memory
limits and thread counts, output folders that do not exist, unreachable S3 endpoints,
and inventory/snapshot files of the wrong shape (cleanup.inputs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanup.core.timeutil import format_time, parse_duration, parse_time
from cleanup.errors import UsageError
from cleanup.formats import encode_meta
from cleanup.inputs import check_inventory, check_snapshot
from tests.conftest import Run, assert_one_line_error, run_cli
from tests.factories import write_inventory_file, write_snapshot_file
from tests.inproc import run_inproc

NOW = datetime.now(UTC).replace(microsecond=0)
TAKEN = NOW - timedelta(hours=2)
OLD = TAKEN - timedelta(days=5)


class Setup:
    """A local store, a 100-object inventory (5 unreferenced) and a snapshot."""

    def __init__(self, tmp: Path, key: Path) -> None:
        self.tmp, self.key = tmp, key
        self.store = tmp / "store"
        self.store.mkdir()
        self.objects = [(f"t{i % 4}/part-{i:03d}.parquet", 1000 + i, OLD) for i in range(100)]
        self.inventory = write_inventory_file(tmp / "inv.parquet", str(self.store), self.objects)
        self.snapshot = write_snapshot_file(tmp / "snap.parquet",
                                            [k for k, _s, _t in self.objects[5:]],
                                            taken_at=TAKEN)
        (tmp / "keys.csv").write_text("key\nt0/a\n")

    def plan_args(self, *extra: str, out: str = "plan", inventory: Path | None = None,
                  snapshot: Path | None = None) -> list[str]:
        return ["plan", "--store", str(self.store),
                "--inventory", str(inventory or self.inventory),
                "--snapshot", str(snapshot or self.snapshot), "-o", str(self.tmp / out),
                "--author", "alice", "--key", str(self.key), *extra]

    def plan(self, *extra: str, out: str = "plan", inventory: Path | None = None,
             snapshot: Path | None = None) -> Run:
        return run_inproc(self.plan_args(*extra, out=out, inventory=inventory,
                                         snapshot=snapshot))

    def assert_nothing_written(self, out: str = "plan") -> None:
        assert not (self.tmp / out).exists(), "a refusal must write no plan directory"
        left = [p.name for p in self.tmp.iterdir() if p.name.startswith(".cleanup-")]
        assert not left, left


@pytest.fixture
def setup(tmp_path: Path, alice_key: Path) -> Setup:
    return Setup(tmp_path, alice_key)


# --- 1. overflowing times and durations ----------------------------------------------


@pytest.mark.parametrize("text", ["36526d", "999999999d", "9" * 40 + "s", "9" * 5000 + "us"])
def test_parse_duration_refuses_more_than_100_years(text: str) -> None:
    with pytest.raises(UsageError, match="longer than 100 years"):
        parse_duration(text)
    assert parse_duration("36525d") == timedelta(days=36525)


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59.999999-23:59", "0001-01-01T00:00:00Z",
                                  "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59Z",
                                  "0999-12-31T23:59:59Z"])
def test_parse_time_refuses_out_of_range(text: str) -> None:
    with pytest.raises(UsageError, match="out of range"):
        parse_time(text)


@pytest.mark.parametrize("args", [
    ["--taken-at", "9999-12-31T23:59:59.999999-23:59"],
    ["--taken-at", "0001-01-01T00:00:00+23:59"],
])
def test_snapshot_overflowing_taken_at_is_usage(setup: Setup, args: list[str]) -> None:
    r = run_inproc(["snapshot", str(setup.tmp / "keys.csv"), "-o", str(setup.tmp / "s.parquet"),
                    *args])
    assert_one_line_error(r, 2, "--taken-at", "out of range")
    assert not (setup.tmp / "s.parquet").exists()


@pytest.mark.parametrize(("args", "option"), [
    (["--buffer", "999999999d"], "--buffer"),
    (["--cutoff", "0001-01-01T00:00:00Z"], "--cutoff"),
    (["--hold", "999999999d"], "--hold"),
    (["--hold", "36600d"], "--hold"),
])
def test_plan_overflowing_options_are_usage(setup: Setup, args: list[str], option: str) -> None:
    r = setup.plan(*args)
    assert_one_line_error(r, 2, option)
    setup.assert_nothing_written()


def test_plan_library_guards_time_arithmetic(setup: Setup) -> None:
    """PlanOptions built without the CLI's parsing still cannot overflow."""
    from cleanup.planner import PlanOptions, make_plan

    base = {"store": str(setup.store), "inventory": str(setup.inventory),
            "snapshot": str(setup.snapshot), "out": str(setup.tmp / "plan"), "author": "alice",
            "key": str(setup.key)}
    cases: list[tuple[dict[str, object], str]] = [
        ({"buffer": timedelta(days=10**6)}, "--buffer"),
        ({"cutoff": datetime(1, 1, 1, tzinfo=UTC)}, "--cutoff"),
        ({"hold": timedelta(days=10**6)}, "--hold"),
    ]
    for extra, option in cases:
        with pytest.raises(UsageError, match=option):
            make_plan(PlanOptions(**base, **extra))  # type: ignore[arg-type]
        setup.assert_nothing_written()


# --- 2. memory limit and threads ----------------------------------------------------------


@pytest.mark.parametrize("value", ["1XB", "100", "150%", "0%", "8MB", "-1GB", "1e3MB", "GB",
                                   "1,5GB", "99999999999999TB", ""])
def test_plan_refuses_bad_memory_limit(setup: Setup, value: str) -> None:
    r = setup.plan("--memory-limit", value)
    assert_one_line_error(r, 2, "--memory-limit", "512MB")
    setup.assert_nothing_written()


@pytest.mark.parametrize("value", ["-3", "0", "x"])
def test_plan_refuses_bad_threads(setup: Setup, value: str) -> None:
    r = setup.plan("--threads", value)
    assert_one_line_error(r, 2, "--threads")
    setup.assert_nothing_written()


def test_plan_accepts_memory_limit_forms_and_threads(setup: Setup) -> None:
    for i, value in enumerate(["1.5GiB", "512mb", "80%"]):
        r = setup.plan("--memory-limit", value, "--threads", "2", out=f"plan{i}")
        assert r.code == 0, r.err


# --- 3. outputs in missing folders ---------------------------------------------------------


def test_outputs_into_missing_folders_are_usage(setup: Setup) -> None:
    missing = setup.tmp / "no" / "such"
    cases = [
        (["inventory", str(setup.store), "-o", str(missing / "inv.parquet")], "-o"),
        (["snapshot", str(setup.tmp / "keys.csv"), "--taken-at", format_time(TAKEN),
          "-o", str(missing / "snap.parquet")], "-o"),
        (setup.plan_args(out="no/such/plan"), "-o"),
    ]
    for args, option in cases:
        r = run_inproc(args)
        assert_one_line_error(r, 2, option, f"folder {missing} does not exist")
        assert not (setup.tmp / "no").exists()
    r = setup.plan()
    assert r.code == 0, r.err
    r = run_inproc(["review", str(setup.tmp / "plan"), "--html", str(missing / "r.html")])
    assert_one_line_error(r, 2, "--html", f"folder {missing} does not exist")
    assert not (setup.tmp / "no").exists()


def test_output_folder_check_subprocess(setup: Setup) -> None:
    r = run_cli(["snapshot", str(setup.tmp / "keys.csv"), "--taken-at", format_time(TAKEN),
                 "-o", str(setup.tmp / "nope" / "s.parquet")])
    assert_one_line_error(r, 2, "does not exist")


# --- 4. unreachable or misconfigured S3 endpoints ---------------------------------------


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import boto3

    from cleanup.stores import s3

    monkeypatch.setattr(s3, "MAX_ATTEMPTS", 1)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches credentials
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


DEAD = "http://127.0.0.1:1"


@pytest.mark.usefixtures("fake_aws")
def test_unreachable_endpoint_is_usage(setup: Setup) -> None:
    needle = f"cannot reach store s3://bucket/ at {DEAD}"
    r = run_inproc(["audit", "verify", "s3://bucket/", "--endpoint-url", DEAD])
    assert_one_line_error(r, 2, needle)
    r = run_inproc(["inventory", "s3://bucket/", "--endpoint-url", DEAD,
                    "-o", str(setup.tmp / "s3inv.parquet")])
    assert_one_line_error(r, 2, needle)
    assert not list(setup.tmp.glob("s3inv.parquet*"))
    write_inventory_file(setup.tmp / "s3inv.parquet", "s3://bucket/", setup.objects)
    r = run_inproc([a if a != str(setup.store) else "s3://bucket/"
                    for a in setup.plan_args("--endpoint-url", DEAD,
                                             inventory=setup.tmp / "s3inv.parquet")])
    assert_one_line_error(r, 2, needle)
    setup.assert_nothing_written()
    r = run_inproc(["audit", "verify", "s3://bucket/", "--endpoint-url", "not a url"])
    assert_one_line_error(r, 2, "cannot use store s3://bucket/", "--endpoint-url")


@pytest.mark.usefixtures("fake_aws")
def test_missing_credentials_are_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = run_inproc(["audit", "verify", "s3://bucket/", "--endpoint-url", DEAD])
    assert_one_line_error(r, 2, "cannot use store s3://bucket/", "credentials")


# --- 5. inventory and snapshot files of the wrong shape ---------------------------------


INV_META = {"kind": "inventory", "store": "", "listed_at": format_time(NOW),
            "listed_at_clock": "local", "precision_us": "1000000", "source": "listing",
            "rows": "2"}
GOOD_TS = pa.array([OLD, OLD], pa.timestamp("us", tz="UTC"))


def _inv(path: Path, columns: dict[str, pa.Array], meta: dict[str, str] | None = None,
         **write: bool) -> str:
    table = pa.table(columns).replace_schema_metadata(encode_meta(meta or INV_META))
    pq.write_table(table, path, **write)
    return str(path)


def _good() -> dict[str, pa.Array]:
    return {"key": pa.array(["a/1", "a/2"]), "size": pa.array([1, 2], pa.int64()),
            "last_modified": GOOD_TS, "etag": pa.array(["e1", "e2"])}


BAD_INVENTORIES: list[tuple[str, dict[str, pa.Array | None], str]] = [
    ("no-key", {"key": None}, "no 'key' column"),
    ("binary-key", {"key": pa.array([b"a/1", b"a/2"])}, "column 'key' is binary"),
    ("int-key", {"key": pa.array([1, 2])}, "column 'key' is int64, not string"),
    ("null-key", {"key": pa.array(["a/1", None])}, "column 'key' has 1 NULL keys"),
    ("empty-key", {"key": pa.array(["a/1", ""])}, "column 'key' has some empty keys"),
    ("no-size", {"size": None}, "no 'size' column"),
    ("float-size", {"size": pa.array([1.0, 2.0])}, "column 'size' is double"),
    ("string-size", {"size": pa.array(["1", "2"])}, "column 'size' is string"),
    ("null-size", {"size": pa.array([1, None], pa.int64())}, "column 'size' has 1 NULL sizes"),
    ("negative-size", {"size": pa.array([1, -2], pa.int64())}, "negative sizes"),
    ("no-time", {"last_modified": None}, "no 'last_modified' column"),
    ("date-time", {"last_modified": pa.array([OLD.date(), OLD.date()], pa.date32())},
     "column 'last_modified' is date32"),
    ("int-time", {"last_modified": pa.array([1, 2], pa.int64())}, "is int64, not a timestamp"),
    ("string-time", {"last_modified": pa.array(["2020-01-01", "2020-01-01"])},
     "is string, not a timestamp"),
    ("naive-time", {"last_modified": pa.array([OLD.replace(tzinfo=None)] * 2,
                                              pa.timestamp("us"))}, "without a time zone"),
    ("null-time", {"last_modified": pa.array([OLD, None], pa.timestamp("us", tz="UTC"))},
     "column 'last_modified' has 1 NULL times"),
    ("no-etag", {"etag": None}, "no 'etag' column"),
]


@pytest.mark.parametrize(("change", "needle"), [(c, n) for _id, c, n in BAD_INVENTORIES],
                         ids=[i for i, _c, _n in BAD_INVENTORIES])
@pytest.mark.parametrize("statistics", [True, False], ids=["stats", "no-stats"])
def test_check_inventory_refuses(tmp_path: Path, change: dict[str, pa.Array | None],
                                 needle: str, statistics: bool) -> None:
    cols = _good()
    for name, arr in change.items():
        if arr is None:
            del cols[name]
        else:
            cols[name] = arr
    path = _inv(tmp_path / "inv.parquet", cols, write_statistics=statistics)
    with pytest.raises(UsageError) as err:
        check_inventory(path)
    assert needle in err.value.message, err.value.message
    assert path in err.value.message
    assert "cleanup inventory" in str(err.value.hint)


@pytest.mark.parametrize(("meta", "needle"), [
    ({"precision_us": "-1"}, "precision_us='-1' is not a non-negative whole number"),
    ({"precision_us": "1.5"}, "precision_us='1.5'"),
    ({"precision_us": "abc"}, "precision_us='abc'"),
    ({"precision_us": "9" * 30}, "precision_us"),
    ({"precision_us": str(10**17)}, "longer than"),
    ({"rows": "many"}, "cleanup.rows='many'"),
    ({"listed_at": "yesterday"}, "cleanup.listed_at: invalid time"),
])
def test_check_inventory_refuses_bad_metadata(tmp_path: Path, meta: dict[str, str],
                                              needle: str) -> None:
    path = _inv(tmp_path / "inv.parquet", _good(), {**INV_META, **meta})
    with pytest.raises(UsageError, match="inventory .*") as err:
        check_inventory(path)
    assert needle in err.value.message, err.value.message


def test_check_inventory_precision_from_column_unit(tmp_path: Path) -> None:
    for unit, expected in [("s", timedelta(seconds=1)), ("ms", timedelta(milliseconds=1)),
                           ("us", timedelta(microseconds=1)), ("ns", timedelta(microseconds=1))]:
        cols = {**_good(), "last_modified": pa.array([OLD, OLD], pa.timestamp(unit, tz="UTC"))}
        facts = check_inventory(_inv(tmp_path / f"{unit}.parquet", cols,
                                     {**INV_META, "precision_us": "0"}))
        assert facts.column_precision == expected, unit
        assert facts.precision == expected
    facts = check_inventory(str(write_inventory_file(tmp_path / "f.parquet", "/s",
                                                     [("k", 1, OLD)])))
    assert facts.precision == timedelta(seconds=1)
    assert facts.rows == 1


def test_check_snapshot(tmp_path: Path) -> None:
    good = write_snapshot_file(tmp_path / "good.parquet", ["a"], taken_at=TAKEN)
    check_snapshot(str(good))
    for name, table, needle in [
        ("none", pa.table({"ref": ["a"]}), "no 'key' column"),
        ("binary", pa.table({"key": pa.array([b"a"])}), "column 'key' is binary"),
        ("int", pa.table({"key": pa.array([1])}), "column 'key' is int64, not string"),
    ]:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table.replace_schema_metadata(encode_meta({"kind": "snapshot"})), path)
        with pytest.raises(UsageError) as err:
            check_snapshot(str(path))
        assert needle in err.value.message
        assert "cleanup snapshot" in str(err.value.hint)
    path = tmp_path / "skew.parquet"
    pq.write_table(pa.table({"key": ["a"]}).replace_schema_metadata(
        encode_meta({"kind": "snapshot", "metadata_skew_us": "lots"})), path)
    with pytest.raises(UsageError, match="metadata_skew_us"):
        check_snapshot(str(path))


def test_plan_refuses_wrong_schemas(setup: Setup) -> None:
    meta = {**INV_META, "store": str(setup.store), "rows": "100"}
    cols = {"key": pa.array([k.encode() for k, _s, _t in setup.objects]),
            "size": pa.array([s for _k, s, _t in setup.objects], pa.int64()),
            "last_modified": pa.array([t for _k, _s, t in setup.objects],
                                      pa.timestamp("us", tz="UTC")),
            "etag": pa.array(["e"] * 100)}
    inv = _inv(setup.tmp / "binary.parquet", cols, meta)
    r = setup.plan(inventory=Path(inv))
    assert_one_line_error(r, 2, "column 'key' is binary", "cleanup inventory")
    setup.assert_nothing_written()
    cols["key"] = pa.array([k for k, _s, _t in setup.objects])
    inv = _inv(setup.tmp / "badprec.parquet", cols, {**meta, "precision_us": "-5"})
    r = setup.plan(inventory=Path(inv))
    assert_one_line_error(r, 2, "precision_us='-5'")
    setup.assert_nothing_written()
    snap = setup.tmp / "intsnap.parquet"
    pq.write_table(pa.table({"key": pa.array(list(range(95)))}).replace_schema_metadata(
        pq.read_metadata(setup.snapshot).metadata), snap)
    r = setup.plan(snapshot=snap)
    assert_one_line_error(r, 2, "column 'key' is int64")
    setup.assert_nothing_written()


def test_i2_precision_from_seconds_column(setup: Setup) -> None:
    """An inventory stored as timestamp[s] that declares 1 us precision: a file written
    0.2 s after the cutoff is listed at the whole second before it, and must not be a
    candidate (last_modified + 1 s > cutoff)."""
    taken = TAKEN.replace(microsecond=500_000)
    cutoff = taken - timedelta(hours=24)
    written = cutoff + timedelta(milliseconds=200)
    late = ("t1/late.parquet", 7, written.replace(microsecond=0))
    assert late[2] + timedelta(microseconds=1) <= cutoff  # a 1 us precision would take it
    objects = [*setup.objects, late]
    table = pa.table({
        "key": [o[0] for o in objects],
        "size": pa.array([o[1] for o in objects], pa.int64()),
        "last_modified": pa.array([o[2] for o in objects], pa.timestamp("s", tz="UTC")),
        "etag": [f"e{i}" for i in range(len(objects))],
        "version_id": pa.nulls(len(objects), pa.string()),
    }).replace_schema_metadata(encode_meta({**INV_META, "store": str(setup.store),
                                            "precision_us": "1", "rows": str(len(objects))}))
    inv = setup.tmp / "inv-s.parquet"
    pq.write_table(table, inv)
    snap = write_snapshot_file(setup.tmp / "snap-frac.parquet",
                               [k for k, _s, _t in setup.objects[5:]], taken_at=taken)
    r = setup.plan("--json", inventory=inv, snapshot=snap)
    assert r.code == 0, r.err
    plan_dir = Path(json.loads(r.out)["plan_dir"])
    keys = set(pq.read_table(plan_dir / "manifest.parquet").column("key").to_pylist())
    assert late[0] not in keys
    assert keys == {k for k, _s, _t in setup.objects[:5]}
    plan = json.loads((plan_dir / "plan.json").read_bytes())
    assert plan["cutoff"]["time"] == format_time(cutoff)
    assert plan["inputs"]["inventory"]["precision"] == "1s"


def test_outputs_into_unwritable_folders_are_usage(setup: Setup) -> None:
    """/proc takes no new files, not even from root."""
    cases = [
        ["inventory", str(setup.store), "-o", "/proc/inv.parquet"],
        ["snapshot", str(setup.tmp / "keys.csv"), "--taken-at", format_time(TAKEN),
         "-o", "/proc/snap.parquet"],
        setup.plan_args(out="/proc/plan"),  # an absolute path replaces tmp
    ]
    for args in cases:
        r = run_inproc(args)
        assert_one_line_error(r, 2, "cannot write in folder /proc")


def test_sentinel_file_and_config_not_utf8_are_usage(setup: Setup) -> None:
    bad = setup.tmp / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00t1/a\n")
    r = setup.plan("--sentinel-file", str(bad))
    assert_one_line_error(r, 2, "--sentinel-file", "not UTF-8")
    setup.assert_nothing_written()
    r = setup.plan("--config", str(bad))
    assert_one_line_error(r, 2, "config", "not UTF-8")
    setup.assert_nothing_written()
