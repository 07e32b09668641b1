"""I2 timestamp-precision as a property: for any timestamp unit of the inventory's
last_modified column and any declared precision, no object with
``last_modified > cutoff - precision`` is a candidate, where precision is at least
the column's own unit -- whatever the metadata claims. Ties at the boundary are
generated on purpose."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanup.core.paths import StoreRef
from cleanup.core.stages import DEFAULT_TENANT_PATTERN
from cleanup.core.timeutil import format_time
from cleanup.engine import Engine, EngineInput
from cleanup.formats import encode_meta
from cleanup.inputs import check_inventory
from tests.factories import T0, write_snapshot_file

STORE = StoreRef("s3", bucket="bkt", prefix="")
CUTOFF = T0 - timedelta(hours=24)
UNITS = {"s": timedelta(seconds=1), "ms": timedelta(milliseconds=1),
         "us": timedelta(microseconds=1), "ns": timedelta(microseconds=1)}
US = timedelta(microseconds=1)

# Real write times: exactly at the cutoff minus 0, 1 unit, the declared precision, ...
# plus random offsets within a few seconds; truncated to the column's unit as a
# listing would.
boundary = st.sampled_from([0, 1, 999, 1000, 999_999, 1_000_000, 1_000_001, 1_500_000])
offsets = st.one_of(boundary, boundary.map(lambda x: -x),
                    st.integers(-3_000_000, 3_000_000))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(unit=st.sampled_from(sorted(UNITS)),
       declared_us=st.sampled_from([0, 1, 1000, 1_000_000, 2_000_000]),
       writes=st.lists(offsets, min_size=1, max_size=20))
def test_no_object_within_precision_of_the_cutoff_is_a_candidate(
        tmp_path: Path, unit: str, declared_us: int, writes: list[int]) -> None:
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    real = [CUTOFF + timedelta(microseconds=w) for w in writes]
    step = UNITS[unit]
    # A listing truncates the real write time to its unit (never rounds up).
    listed = [CUTOFF + ((t - CUTOFF) // step) * step for t in real]
    keys = [f"t/{i:03d}" for i in range(len(real))]
    table = pa.table({
        "key": keys, "size": [1] * len(keys),
        "last_modified": pa.array(listed, pa.timestamp("us", tz="UTC")).cast(
            pa.timestamp(unit, tz="UTC"), safe=False),
        "etag": ["e"] * len(keys), "version_id": pa.nulls(len(keys), pa.string()),
    })
    meta = {"kind": "inventory", "store": STORE.url, "listed_at": format_time(T0),
            "listed_at_clock": "local", "precision_us": str(declared_us),
            "source": "listing", "time_source": "test", "rows": str(len(keys))}
    inv = d / "inv.parquet"
    pq.write_table(table.replace_schema_metadata(encode_meta(meta)), inv)
    snap = write_snapshot_file(d / "snap.parquet", ["zz/referenced"], taken_at=T0)
    precision = check_inventory(str(inv)).precision  # what the planner uses (with the store's)
    assert precision >= max(step, declared_us * US)
    eng = Engine(EngineInput(inventory=str(inv), snapshot=str(snap), store=STORE,
                             cutoff=CUTOFF, precision=precision,
                             tenant_pattern=DEFAULT_TENANT_PATTERN, tenant_group=1, threads=1,
                             temp_dir=str(d / "tmp")))
    try:
        eng.compute()
        eng.write_manifest({"t": 1}, str(d / "m.parquet"))
    finally:
        eng.close()
    got = set(pq.read_table(d / "m.parquet").column("key").to_pylist())
    for k, t_real, t_listed in zip(keys, real, listed, strict=True):
        if k in got:
            # Never a file really written after the cutoff, nor one listed within
            # precision of it.
            assert t_real <= CUTOFF, (k, t_real)
            assert t_listed + precision <= CUTOFF, (k, t_listed, precision)
        else:
            assert t_listed + precision > CUTOFF, (k, t_listed, precision)
