"""Fuzz the command line and the input files (hypothesis).

Whatever the option values (durations, times, memory limits, stages, tenant
patterns, quarantine modes, fractions, paths to missing folders or files that are
not Parquet) and whatever the shape of an inventory or snapshot file (missing
columns, binary/integer/date columns, every timestamp unit, naive timestamps,
NULLs, empty keys, negative sizes, broken metadata), a command ends with 0, 2 or
3: never 1 (a bug), never a traceback, and a refusal leaves no plan, snapshot or
inventory file behind. Runs in-process (the console script's own error map) to
stay well under a minute.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.timeutil import format_time
from cleanup.formats import encode_meta
from tests.conftest import Run
from tests.factories import write_inventory_file, write_snapshot_file
from tests.inproc import run_inproc

NOW = datetime.now(UTC).replace(microsecond=0)
TAKEN = NOW - timedelta(hours=2)
OLD = TAKEN - timedelta(days=5)
N = 20  # objects; 19 referenced, so one candidate (5%) passes I5
ALLOWED = {0, 2, 3}
_counter = itertools.count()

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@dataclass
class World:
    tmp: Path
    store: Path
    inventory: Path
    snapshot: Path
    key: Path
    keys: list[str]

    def fresh(self, name: str) -> Path:
        return self.tmp / f"{name}-{next(_counter)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, alice_key: Path) -> World:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = tmp / "store"
    store.mkdir()
    keys = [f"t{i % 3}/f{i:02d}.parquet" for i in range(N)]
    for k in keys:
        (store / k).parent.mkdir(parents=True, exist_ok=True)
        (store / k).write_bytes(b"x")
    inv = write_inventory_file(tmp / "inv.parquet", str(store),
                               [(k, 100 + i, OLD) for i, k in enumerate(keys)])
    snap = write_snapshot_file(tmp / "snap.parquet", keys[1:], taken_at=TAKEN)
    (tmp / "keys.csv").write_text("key\n" + "\n".join(keys) + "\n")
    (tmp / "notparquet.parquet").write_text("this is not parquet\n")
    (tmp / "adir.parquet").mkdir()
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("x")
    return World(tmp, store, inv, snap, alice_key, keys)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch,
                tmp_path_factory: pytest.TempPathFactory) -> None:
    """An S3 path the fuzzer reaches fails fast and offline."""
    from cleanup.stores import s3

    monkeypatch.setattr(s3, "MAX_ATTEMPTS", 1)
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    none = tmp_path_factory.getbasetemp() / "no-aws"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(none))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(none))


def leftovers(*dirs: Path) -> list[str]:
    out = []
    for d in dirs:
        if d.is_dir():
            out += [p.name for p in d.iterdir()
                    if p.name.startswith((".cleanup-plan-", ".cleanup-snap-")) or ".tmp-" in p.name]
    return out


def check_run(r: Run, args: list[str]) -> None:
    assert r.code in ALLOWED, (args, r.code, r.out, r.err)
    assert "Traceback" not in r.out + r.err, (args, r.err)
    if r.code:
        first = r.err.splitlines()[0] if r.err else ""
        assert first.startswith("cleanup: error:"), (args, r.err)


# --- (a) option values ----------------------------------------------------------------

JUNK = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
               max_size=24)
ZONES = [UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23, minutes=59)),
         timezone(timedelta(hours=5, minutes=30))]
DURATIONS = st.one_of(
    st.from_regex(r"\A ?-?[0-9]{0,22} ?(us|ms|s|m|h|d|w|y|) ?\Z", fullmatch=True),
    st.integers(0, 10**22).map(lambda n: f"{n}d"),
    st.sampled_from(["24h", "25h", "0s", "36525d", "36526d", "1us", "7d"]),
    JUNK)
TIMES = st.one_of(
    st.builds(lambda d, z: d.replace(tzinfo=z).isoformat(),
              st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
              st.sampled_from(ZONES)),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
    st.sampled_from(["9999-12-31T23:59:59.999999-23:59", "0001-01-01T00:00:00Z",
                     "0001-01-01T00:00:00+23:59", format_time(OLD), format_time(TAKEN),
                     format_time(NOW + timedelta(days=1)), "2026-05-14T21:30:00z", "now", ""]),
    JUNK)
MEMORY = st.one_of(
    st.from_regex(r"\A-?[0-9]{0,20}(\.[0-9]{0,3})? ?(b|kb|KB|MB|mb|GB|GiB|gib|TB|TiB|PB|XB|%|)\Z",
                  fullmatch=True),
    st.sampled_from(["1GB", "512MB", "80%", "150%", "0%", "1XB", "-1", "8MB"]), JUNK)
PERCENTS = st.one_of(st.floats().map(lambda f: f"{f}%"),
                     st.integers(-5, 200).map(lambda i: f"{i}%"),
                     st.sampled_from(["100%", "nan%", "inf%", "1e2%", "%"]), JUNK)
STAGES = st.one_of(st.lists(PERCENTS, max_size=4).map(",".join),
                   st.sampled_from(["10%,100%", "100%", "50%,50%,100%", "0%,100%"]), JUNK)
TENANTS = st.one_of(
    st.sampled_from([r"^(?P<tenant>[^/]+)/", r"(?P<tenant>", r"^(?P<tenant>[^/]+)/(?=x)",
                     r"(?P<tenant>a)\1", r"^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(?P<tenant>k)",
                     r"(?P<tenant>.*)", "", r"(?P<t>x)", r"(?P<tenant>\d+)", r"(?i)(?P<tenant>T\d)",
                     r"(?P<tenant>[[:alpha:]]+)", r"(?P<tenant>\p{L}+)", r"(?P<tenant>x)|(?P<y>y)",
                     r"(?P<tenant>t\d)(?P=tenant)?", r"(?P<tenant>(?<=t)\d)"]),
    st.text(alphabet="()?P<>tenant[]^$.*+\\/{}|az09:=!", max_size=25))
FRACTIONS = st.one_of(st.floats().map(repr),
                      st.sampled_from(["nan", "inf", "-0", "1e309", "0.5", "1", ".", "", "0"]),
                      JUNK)


def _path_choice(w: World, kind: str, choice: str) -> str:
    return {
        "good": str(w.inventory if kind == "inventory" else w.snapshot),
        "other": str(w.snapshot if kind == "inventory" else w.inventory),
        "missing": str(w.tmp / "no-such-file.parquet"),
        "missing-folder": str(w.tmp / "no-such-folder" / "x.parquet"),
        "not-parquet": str(w.tmp / "notparquet.parquet"),
        "csv": str(w.tmp / "keys.csv"),
        "dir": str(w.tmp / "adir.parquet"),
    }[choice]


PATHS = st.sampled_from(["good"] * 6 + ["other", "missing", "missing-folder", "not-parquet",
                                        "csv", "dir"])
OUTS = st.sampled_from(["fresh"] * 6 + ["missing-folder", "full", "file", "trailing-slash"])


def _out(w: World, choice: str) -> tuple[str, Path | None]:
    """The -o value and the path that must not exist after a refusal (None: pre-existing)."""
    if choice == "missing-folder":
        p = w.fresh("missing") / "plan"
        return str(p), p.parent
    if choice == "full":
        return str(w.tmp / "full"), None
    if choice == "file":
        return str(w.tmp / "keys.csv"), None
    p = w.fresh("plan")
    return (str(p) + "/" if choice == "trailing-slash" else str(p)), p


PLAN_OPTIONS = st.fixed_dictionaries({}, optional={
    "--buffer": DURATIONS, "--cutoff": TIMES, "--hold": DURATIONS, "--memory-limit": MEMORY,
    "--threads": st.one_of(st.integers(-5, 5).map(str), JUNK), "--stages": STAGES,
    "--tenant-pattern": TENANTS, "--internal": st.one_of(st.just("t0"), JUNK),
    "--quarantine": st.sampled_from(["copy", "versioning", "none", "COPY", "", "x"]),
    "--max-delete-fraction": FRACTIONS, "--max-missing-refs": FRACTIONS,
    "--sentinel": st.one_of(st.sampled_from(["t1/f01.parquet", "/abs", "../x", "s3://b/x",
                                             "file:///x", ""]), JUNK),
    "--region": st.one_of(st.just("local"), JUNK),
})
FLAGS = st.lists(st.sampled_from(["--override-minimums", "--json",
                                  "--unsafe-store-without-conditional-writes"]),
                 unique=True, max_size=3)


@FUZZ
@given(opts=PLAN_OPTIONS, flags=FLAGS, inv=PATHS, snap=PATHS, out=OUTS,
       key=st.sampled_from(["good"] * 5 + ["missing"]),
       store=st.sampled_from(["good"] * 5 + ["slash", "file-url", "missing", "file"]))
def test_fuzz_plan_options(world: World, opts: dict[str, str], flags: list[str], inv: str,
                           snap: str, out: str, key: str, store: str) -> None:
    w = world
    out_arg, must_not_exist = _out(w, out)
    store_arg = {"good": str(w.store), "slash": str(w.store) + "/",
                 "file-url": "file://" + str(w.store), "missing": str(w.tmp / "nostore"),
                 "file": str(w.tmp / "keys.csv")}[store]
    args = ["plan", "--store", store_arg, "--inventory", _path_choice(w, "inventory", inv),
            "--snapshot", _path_choice(w, "snapshot", snap), "-o", out_arg, "--author", "alice",
            "--key", str(w.key) if key == "good" else str(w.tmp / "nokey")]
    for name, value in opts.items():
        args += [name, value]
    args += flags
    before = sorted(os.listdir(w.tmp))
    r = run_inproc(args)
    check_run(r, args)
    assert not leftovers(w.tmp), (args, leftovers(w.tmp))
    if r.code == 0:
        assert must_not_exist is not None
        assert must_not_exist.is_dir()
        shutil.rmtree(must_not_exist)
    else:
        if must_not_exist is not None:
            assert not must_not_exist.exists(), (args, r.err)
        assert sorted(os.listdir(w.tmp)) == before, (args, r.err)
    assert sorted(os.listdir(w.tmp / "full")) == ["x"]


@FUZZ
@given(source=st.sampled_from(["csv", "parquet", "missing.csv", "txt", "dir", "sqlite-missing",
                               "duckdb-missing"]),
       taken_at=st.one_of(st.none(), st.just(format_time(TAKEN)), st.just(format_time(TAKEN)),
                          TIMES),
       column=st.one_of(st.none(), st.just("key"), JUNK),
       query=st.one_of(st.none(), st.none(), st.just("SELECT 1"), JUNK),
       ref_base=st.one_of(st.none(), st.sampled_from(["s3://b/p/", "/abs", "rel", ""]), JUNK),
       ref_encoding=st.sampled_from([None, "literal", "uri", "x"]),
       out=st.sampled_from(["fresh"] * 4 + ["missing-folder", "dir", "existing"]))
def test_fuzz_snapshot_options(world: World, source: str, taken_at: str | None,
                               column: str | None, query: str | None, ref_base: str | None,
                               ref_encoding: str | None, out: str) -> None:
    w = world
    src = {"csv": str(w.tmp / "keys.csv"), "parquet": str(w.snapshot),
           "missing.csv": str(w.tmp / "missing.csv"), "txt": str(w.tmp / "full" / "x"),
           "dir": str(w.tmp / "adir.parquet"), "sqlite-missing": str(w.tmp / "m.sqlite"),
           "duckdb-missing": str(w.tmp / "m.duckdb")}[source]
    target = {"fresh": w.fresh("snap") .with_suffix(".parquet"),
              "missing-folder": w.fresh("missing") / "s.parquet",
              "dir": w.tmp / "adir.parquet", "existing": w.tmp / "notparquet.parquet"}[out]
    args = ["snapshot", src, "-o", str(target)]
    for name, value in (("--taken-at", taken_at), ("--column", column), ("--query", query),
                        ("--ref-base", ref_base), ("--ref-encoding", ref_encoding)):
        if value is not None:
            args += [name, value]
    existed = target.exists()
    before = sorted(os.listdir(w.tmp))
    r = run_inproc(args)
    check_run(r, args)
    assert not leftovers(w.tmp, target.parent), (args, leftovers(w.tmp, target.parent))
    if r.code == 0:
        assert target.is_file()
        if not existed:
            target.unlink()
        else:  # an existing file was replaced: put the fixture back
            target.write_text("this is not parquet\n")
    elif not existed:
        assert not target.exists(), (args, r.err)
        assert sorted(os.listdir(w.tmp)) == before, (args, r.err)


@settings(FUZZ, max_examples=25)
@given(store=st.sampled_from(["good", "missing", "file", "file-url", "junk", "s3"]),
       out=st.sampled_from(["fresh"] * 3 + ["missing-folder", "dir"]),
       region=st.one_of(st.none(), JUNK), trust=st.booleans(),
       manifest=st.one_of(st.none(), st.sampled_from(["{}", "not json", '{"files": []}']),
                          JUNK))
def test_fuzz_inventory_options(world: World, store: str, out: str, region: str | None,
                                trust: bool, manifest: str | None) -> None:
    w = world
    store_arg = {"good": str(w.store), "missing": str(w.tmp / "nostore"),
                 "file": str(w.tmp / "keys.csv"), "file-url": "file://" + str(w.store),
                 "junk": "::junk::", "s3": "s3://bucket/p/"}[store]
    target = {"fresh": w.fresh("inv").with_suffix(".parquet"),
              "missing-folder": w.fresh("missing") / "i.parquet",
              "dir": w.tmp / "adir.parquet"}[out]
    args = ["inventory", store_arg, "-o", str(target)]
    if region is not None:
        args += ["--region", region]
    if trust:
        args.append("--trust-mtime")
    if manifest is not None:
        mf = w.fresh("manifest").with_suffix(".json")
        mf.write_text(manifest)
        args += ["--s3-inventory", str(mf)]
    r = run_inproc(args)
    check_run(r, args)
    assert not leftovers(w.tmp, target.parent), args
    if r.code == 0:
        if target.is_file():
            target.unlink()
    elif out != "dir":
        assert not target.exists(), (args, r.err)


# --- (b) inventory and snapshot files of any shape ---------------------------------------

TS_UNITS = ["s", "ms", "us", "ns"]
TZS = ["UTC", None, "+02:00", "America/New_York"]
_UNIT_PER_S = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _times_array(kind: tuple[Any, ...], times: list[datetime | None]) -> pa.Array:
    if kind[0] == "timestamp":
        _t, unit, tz = kind
        per = _UNIT_PER_S[unit]
        lo, hi = (-(2**63) + 1, 2**63 - 1)
        ints: list[int | None] = []
        for t in times:
            if t is None:
                ints.append(None)
                continue
            us = (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            ints.append(max(lo, min(hi, us * per // 10**6)))
        return pa.array(ints, pa.int64()).cast(pa.timestamp(unit, tz=tz))
    if kind[0] == "date32":
        return pa.array([t.date() if t else None for t in times], pa.date32())
    if kind[0] == "int64":
        return pa.array([int(t.timestamp()) if t else None for t in times], pa.int64())
    if kind[0] == "string":
        return pa.array([t.isoformat() if t else None for t in times], pa.string())
    return pa.nulls(len(times))


def _text_array(kind: str, values: list[str | None]) -> pa.Array:
    if kind == "string":
        return pa.array(values, pa.string())
    if kind == "large_string":
        return pa.array(values, pa.large_string())
    if kind == "dict_string":
        return pa.array(values, pa.string()).dictionary_encode()
    if kind == "binary":
        return pa.array([v.encode() if v is not None else None for v in values], pa.binary())
    if kind == "int64":
        return pa.array([len(v) if v is not None else None for v in values], pa.int64())
    return pa.nulls(len(values))


def _size_array(kind: str, sizes: list[int | None]) -> pa.Array:
    if kind in ("int64", "int32", "int8"):
        return pa.array([None if s is None else max(-100, min(100, s)) if kind == "int8" else s
                         for s in sizes], getattr(pa, kind)())
    if kind == "uint64":
        return pa.array([None if s is None else abs(s) for s in sizes], pa.uint64())
    if kind == "float64":
        return pa.array([None if s is None else float(s) for s in sizes], pa.float64())
    if kind == "decimal":
        return pa.array([None if s is None else Decimal(s) for s in sizes], pa.decimal128(12, 0))
    if kind == "string":
        return pa.array([None if s is None else str(s) for s in sizes], pa.string())
    return pa.nulls(len(sizes))


TIME_KINDS = st.one_of(
    st.tuples(st.just("timestamp"), st.sampled_from(TS_UNITS), st.sampled_from(TZS)),
    st.sampled_from([("date32",), ("int64",), ("string",), ("null",), ("missing",)]))
TEXT_KINDS = ["string"] * 8 + ["large_string", "dict_string", "binary", "int64", "null",
                               "missing"]
EXTREMES = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC), datetime(1677, 9, 22, tzinfo=UTC),
            datetime(2262, 4, 11, tzinfo=UTC), NOW + timedelta(days=1), TAKEN - timedelta(days=1)]
ROW = st.integers(0, N - 1)
ODD_KEYS = ["/", "/abs/x", "../x", "./x", "a//b", "a/./b", "a/../b", "_cleanup/lock",
            "_cleanup/audit/1.json", "t0/", "x" * 1100, "d/" * 300 + "f", "e\u0301", "\u00e9",
            "a\nb", "a\\b", "%2F", "t0/f00.parquet", "t0/_delta_log/0.json", "\x01", " "]
RARE_ROW = st.sampled_from([None] * 4 + list(range(0, N, 3)))
META_VALUES = {
    "precision_us": st.sampled_from([None, "0", "1", "1000", "1000000"] * 3
                                    + ["-1", "1.5", "abc", "9" * 25, str(10**17), ""]),
    "rows": st.sampled_from([str(N)] * 12 + [None, "x", "-1", "0"]),
    "listed_at": st.sampled_from([format_time(NOW)] * 12
                                 + [None, "junk", "0001-01-01T00:00:00Z"]),
    "kind": st.sampled_from(["inventory"] * 16 + [None, "snapshot"]),
}


@st.composite
def inventories(draw: st.DrawFn) -> dict[str, Any]:
    """Half the files are well-formed (any accepted type and odd keys and times), so the
    planning query runs; the rest break one thing: a type, a value or the metadata."""
    breaks = draw(st.sampled_from(["nothing", "nothing", "type", "value", "meta"]))
    ok_meta = {"precision_us": "1000000", "rows": str(N), "listed_at": format_time(NOW),
               "kind": "inventory"}
    spec: dict[str, Any] = {
        "key": draw(st.sampled_from(["string", "large_string", "dict_string"])),
        "size": draw(st.sampled_from(["int64", "int32", "uint64"])),
        "time": ("timestamp", draw(st.sampled_from(TS_UNITS)),
                 draw(st.sampled_from(["UTC", "+02:00", "America/New_York"]))),
        "etag": draw(st.sampled_from(["string", "null"])),
        "null_key": None, "empty_key": None, "negative": None, "null_size": None,
        "null_time": None, "dup_key": draw(RARE_ROW),
        "extreme": draw(st.one_of(st.none(), st.tuples(ROW, st.sampled_from(EXTREMES)))),
        "fraction_us": draw(st.integers(0, 999_999)),
        "odd_key": draw(st.one_of(st.none(), st.sampled_from(ODD_KEYS), JUNK)),
        "key_raw": draw(st.sampled_from([None, "nulls", "some"])),
        "meta": {**ok_meta, "precision_us": draw(st.sampled_from(["0", "1", "1000", "1000000"]))},
        "stats": draw(st.booleans()),
    }
    if breaks == "type":
        spec["key"] = draw(st.sampled_from(TEXT_KINDS))
        spec["size"] = draw(st.sampled_from(["int8", "float64", "decimal", "string", "null",
                                             "missing"]))
        spec["time"] = draw(TIME_KINDS)
        spec["etag"] = draw(st.sampled_from(["string", "null", "int64", "binary", "missing"]))
    elif breaks == "value":
        field = draw(st.sampled_from(["null_key", "empty_key", "negative", "null_size",
                                      "null_time"]))
        spec[field] = draw(ROW)
    elif breaks == "meta":
        spec["meta"] = {k: draw(v) for k, v in META_VALUES.items()}
    return spec


def _write_inventory(w: World, spec: dict[str, Any]) -> Path:
    keys: list[str | None] = list(w.keys)
    sizes: list[int | None] = [100 + i for i in range(N)]
    times: list[datetime | None] = [OLD + timedelta(microseconds=spec["fraction_us"])] * N
    for field, value in (("null_key", None), ("empty_key", "")):
        if spec[field] is not None:
            keys[spec[field]] = value
    if spec["odd_key"] is not None:
        keys[0] = spec["odd_key"]  # the one unreferenced object: a candidate if old enough
    if spec["dup_key"] is not None:
        keys[spec["dup_key"]] = keys[(spec["dup_key"] + 1) % N]
    if spec["negative"] is not None:
        sizes[spec["negative"]] = -5
    if spec["null_size"] is not None:
        sizes[spec["null_size"]] = None
    if spec["null_time"] is not None:
        times[spec["null_time"]] = None
    if spec["extreme"] is not None:
        row, when = spec["extreme"]
        times[row] = when
    cols: dict[str, pa.Array] = {}
    if spec["key"] != "missing":
        cols["key"] = _text_array(spec["key"], keys)
    if spec["size"] != "missing":
        cols["size"] = _size_array(spec["size"], sizes)
    if spec["time"][0] != "missing":
        cols["last_modified"] = _times_array(spec["time"], times)
    if spec["etag"] != "missing":
        cols["etag"] = _text_array(spec["etag"], [f"e{i}" for i in range(N)])
    if spec["key_raw"] == "nulls":
        cols["key_raw"] = pa.nulls(N, pa.binary())
    elif spec["key_raw"] == "some":
        cols["key_raw"] = pa.array([b"raw\xff" if i % 7 == 0 else None for i in range(N)],
                                   pa.binary())
    meta = {"store": str(w.store), "listed_at_clock": "local", "source": "listing"}
    meta.update({k: v for k, v in spec["meta"].items() if v is not None})
    path = w.fresh("fuzz-inv").with_suffix(".parquet")
    table = pa.table(cols) if cols else pa.table({"other": pa.array([1] * N)})
    pq.write_table(table.replace_schema_metadata(encode_meta(meta)), path,
                   write_statistics=spec["stats"])
    return path


def _plan(w: World, inventory: Path, snapshot: Path) -> tuple[Run, list[str], Path]:
    out = w.fresh("plan")
    args = ["plan", "--store", str(w.store), "--inventory", str(inventory),
            "--snapshot", str(snapshot), "-o", str(out), "--author", "alice",
            "--key", str(w.key), "--json"]
    return run_inproc(args), args, out


def _check_plan(w: World, r: Run, args: list[str], out: Path, spec: dict[str, Any]) -> None:
    check_run(r, args + [json.dumps(spec, default=str)])
    assert not leftovers(w.tmp), leftovers(w.tmp)
    if r.code == 0:
        shutil.rmtree(out)
    else:
        assert not out.exists(), (args, r.err)


@FUZZ
@given(spec=inventories())
def test_fuzz_inventory_files(world: World, spec: dict[str, Any]) -> None:
    path = _write_inventory(world, spec)
    r, args, out = _plan(world, path, world.snapshot)
    _check_plan(world, r, args, out, spec)
    path.unlink()


REFS = st.one_of(st.sampled_from([None, "", "/", ".", "..", "../x", "t0/", "t0", "/abs/x",
                                  "file:///x", "file://localhost/x", "s3://other/x",
                                  "S3A://B/x", "https://b.s3.amazonaws.com/x", "t1%2Ff01.parquet",
                                  "t1/f01.parquet", "./t1/f01.parquet", "t1//f01.parquet",
                                  "e\u0301", "\u00e9", "a\nb", "*", "%", "_cleanup/lock",
                                  "t0/_delta_log/x.json"]),
                 JUNK)


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "key": draw(st.sampled_from(TEXT_KINDS)),
        "extra": draw(st.lists(REFS, max_size=6)),
        "store_prefix": draw(st.booleans()),
        "taken_at": draw(st.sampled_from([format_time(TAKEN)] * 20 + [
            None, "junk", format_time(NOW + timedelta(days=1)), "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z"])),
        "rows": draw(st.sampled_from(["auto"] * 16 + [None, "x", "0", "-1"])),
        "digest": draw(st.sampled_from(["sha256:x"] * 16 + [None, ""])),
        "skew": draw(st.sampled_from([None] * 10 + ["5", "x", "9" * 30, "-99999999999999",
                                                    "3155760000000001"])),
        "kind": draw(st.sampled_from(["snapshot"] * 16 + [None, "inventory"])),
        "ref_encoding": draw(st.sampled_from([None, None, "literal", "uri", "x"])),
        "ref_base": draw(st.one_of(st.none(), st.none(), st.sampled_from(
            ["store", "s3://b/p/", "/abs", "rel", "", "file:///", "https://b.s3.amazonaws.com/"]),
            JUNK)),
        "stats": draw(st.booleans()),
    }


def _write_snapshot(w: World, spec: dict[str, Any]) -> Path:
    refs: list[str | None] = [(str(w.store) + "/" + k) if spec["store_prefix"] else k
                              for k in w.keys[1:]]
    refs += spec["extra"]
    meta = {"source": "fuzz", "taken_at_clock": "claimed", "kind": spec["kind"],
            "taken_at": spec["taken_at"], "digest": spec["digest"],
            "rows": str(len(refs)) if spec["rows"] == "auto" else spec["rows"],
            "metadata_skew_us": spec["skew"], "ref_encoding": spec["ref_encoding"],
            "ref_base": str(w.store) if spec["ref_base"] == "store" else spec["ref_base"]}
    cols = {} if spec["key"] == "missing" else {"key": _text_array(spec["key"], refs)}
    table = pa.table(cols) if cols else pa.table({"ref": pa.array(refs, pa.string())})
    path = w.fresh("fuzz-snap").with_suffix(".parquet")
    pq.write_table(table.replace_schema_metadata(
        encode_meta({k: v for k, v in meta.items() if v is not None})), path,
        write_statistics=spec["stats"])
    return path


@FUZZ
@given(spec=snapshots())
def test_fuzz_snapshot_files(world: World, spec: dict[str, Any]) -> None:
    path = _write_snapshot(world, spec)
    r, args, out = _plan(world, world.inventory, path)
    _check_plan(world, r, args, out, spec)
    path.unlink()
