"""A plan directory: the one owner of its layout and of reading it.

::

    PLAN_DIR/plan.json                         canonical JSON; plan id = its sha256
    PLAN_DIR/manifest.parquet                  candidates, sha256 recorded in plan.json
    PLAN_DIR/signatures/author.json, .sig      the author's signature
    PLAN_DIR/signatures/approvals/NAME.json, .sig
    PLAN_DIR/journal/stage-N.jsonl             this machine's execution log

A plan directory is a cache of the plan published in its store
(:mod:`cleanup.published`); :meth:`PlanBundle.fetch` reads the store's copy into a
private directory for execution (witnesses and stage records exist only there).

:meth:`PlanBundle.open` reads plan.json once (bytes -> plan id -> :class:`Plan`).
The manifest is hashed while it is copied into a private directory, and every
later manifest read uses that copy: what was checked is what is used.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cleanup.core.canonical import sha256_hex
from cleanup.core.names import I6
from cleanup.core.paths import sql_literal
from cleanup.errors import InvariantViolation, UsageError
from cleanup.model import Plan
from cleanup.stores.base import ObjectInfo

if TYPE_CHECKING:
    from cleanup.stores.base import Store

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLAN_JSON = "plan.json"
MANIFEST = "manifest.parquet"


class BundleLayout:
    """Where each part of a plan directory lives (nothing is read)."""

    def __init__(self, root: str, work_root: str | None = None) -> None:
        self.root = root
        #: where this machine keeps the execution journal and scratch (the local plan
        #: directory, also when the plan itself was read from the store)
        self.work_root = work_root or root

    @property
    def plan_json(self) -> str:
        return os.path.join(self.root, PLAN_JSON)

    @property
    def manifest_file(self) -> str:
        """The manifest in the plan directory (unverified: read it through a PlanBundle)."""
        return os.path.join(self.root, MANIFEST)

    @property
    def signatures_dir(self) -> str:
        return os.path.join(self.root, "signatures")

    @property
    def author_json(self) -> str:
        return os.path.join(self.signatures_dir, "author.json")

    @property
    def author_sig(self) -> str:
        return os.path.join(self.signatures_dir, "author.sig")

    @property
    def approvals_dir(self) -> str:
        return os.path.join(self.signatures_dir, "approvals")

    def approval_json(self, signer: str) -> str:
        return os.path.join(self.approvals_dir, f"{signer}.json")

    def approvals(self) -> list[tuple[str, str]]:
        """(signer, path of its JSON) for each approval present, by path. A published
        approval is named ``NAME~TAG.json`` (one principal may approve more than once)."""
        return [(os.path.basename(p)[: -len(".json")].split("~", 1)[0], p)
                for p in sorted(glob.glob(os.path.join(glob.escape(self.approvals_dir),
                                                       "*.json")))]

    @property
    def journal_dir(self) -> str:
        return os.path.join(self.work_root, "journal")

    def journal_path(self, stage: int, dry_run: bool = False) -> str:
        name = f"stage-{stage}.dry-run.jsonl" if dry_run else f"stage-{stage}.jsonl"
        return os.path.join(self.journal_dir, name)

    @property
    def scratch_dir(self) -> str:
        """Shared scratch of executions, cleared only under the store lock."""
        return os.path.join(self.journal_dir, ".scratch")


def sig_path(doc_path: str) -> str:
    """The signature beside a signed JSON document."""
    return doc_path[: -len(".json")] + ".sig" if doc_path.endswith(".json") else doc_path + ".sig"


def read_plan_bytes(plan_dir: str) -> bytes:
    path = os.path.join(plan_dir, PLAN_JSON)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise UsageError(f"{plan_dir} is not a plan directory (no plan.json)",
                         hint="make one with `cleanup plan ... -o PLAN_DIR`") from None
    except OSError as exc:
        raise UsageError(f"{path} cannot be read ({exc.strerror or exc})") from None


def parse_plan(raw: bytes, path: str) -> Plan:
    """plan.json's bytes as a :class:`Plan`; a one-line UsageError otherwise."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a plan")
    try:
        return Plan.from_json(data)
    except UsageError as exc:
        raise UsageError(f"{path} is not a plan: {exc.message}",
                         hint="make a new plan with this version of cleanup") from None


class PlanBundle(BundleLayout):
    """An opened plan directory: plan.json read once, the manifest verified on first use."""

    def __init__(self, root: str, raw: bytes, plan: Plan, work_root: str | None = None) -> None:
        super().__init__(root, work_root)
        self.raw = raw
        #: signature file -> the store's record time (a bundle read from the store)
        self.record_times: dict[str, datetime] = {}
        self._owned: weakref.finalize[Any, Any] | None = None
        self.plan_id = sha256_hex(raw)
        self.plan = plan
        self._state: str | None = None
        self._copy: str | None = None
        self._tmp: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @classmethod
    def layout(cls, plan_dir: str) -> BundleLayout:
        """The paths of ``plan_dir``, without reading anything."""
        return BundleLayout(plan_dir)

    @classmethod
    def open(cls, plan_dir: str) -> PlanBundle:
        raw = read_plan_bytes(plan_dir)
        return cls(plan_dir, raw, parse_plan(raw, os.path.join(plan_dir, PLAN_JSON)))

    @classmethod
    def fetch(cls, store: Store, plan_id: str, work_root: str) -> PlanBundle:
        """The plan as published in ``store`` (I10, I19): copied into a private directory
        (plan.json must hash to ``plan_id``), signature record times kept; the journal
        stays in ``work_root``. Local files other than the journal are never read."""
        from cleanup.published import Published, private_dir

        dest = private_dir()
        try:
            times = Published(store, plan_id).fetch(dest)
            raw = read_plan_bytes(dest)
            bundle = cls(dest, raw, parse_plan(raw, f"{store.ref.url} plan {plan_id[:16]}..."),
                         work_root)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        bundle.record_times = times
        bundle._owned = weakref.finalize(bundle, shutil.rmtree, dest, True)
        return bundle

    # -- the manifest -------------------------------------------------------------------

    @property
    def manifest_state(self) -> str:
        """``matches``, ``missing`` or ``changed`` (against the sha256 in plan.json)."""
        if self._state is None:
            self._state = self._verify_manifest()
        return self._state

    @property
    def manifest_intact(self) -> bool:
        return self.manifest_state == "matches"

    def _verify_manifest(self) -> str:
        import hashlib

        tmp = tempfile.mkdtemp(prefix="cleanup-manifest-")
        self._tmp = tmp
        self._finalizer = weakref.finalize(self, shutil.rmtree, tmp, True)
        copy = os.path.join(tmp, MANIFEST)
        h = hashlib.sha256()
        try:
            with open(self.manifest_file, "rb") as src, open(copy, "xb") as dst:
                while block := src.read(4 << 20):
                    h.update(block)
                    dst.write(block)
        except FileNotFoundError:
            return "missing"
        except IsADirectoryError:
            return "changed"
        if "sha256:" + h.hexdigest() != self.plan.manifest.sha256:
            os.unlink(copy)
            return "changed"
        os.chmod(copy, 0o400)
        self._copy = copy
        return "matches"

    @property
    def manifest_path(self) -> str:
        """The verified private copy of manifest.parquet; I6 if it is not the planned one."""
        state = self.manifest_state
        if self._copy is None:
            raise InvariantViolation(
                I6, "manifest.parquet " + ("is missing" if state == "missing" else
                                           "does not match the sha256 in plan.json")
                + ": this is not the plan that was signed",
                hint="a changed plan needs a new plan and new sign-off")
        return self._copy

    def manifest_sql(self) -> str:
        """A DuckDB table expression over the verified manifest."""
        return f"read_parquet({sql_literal(self.manifest_path)})"

    def check_manifest(self) -> None:
        """Refuse (usage error, before anything is touched) a manifest with a row that lacks
        its key, size or last_modified: planning refuses such inventories, an old plan may
        not."""
        import duckdb

        m = self.manifest_sql()
        con = duckdb.connect()
        try:
            row = con.execute(f"SELECT key FROM {m} WHERE key IS NULL OR size IS NULL "
                              "OR last_modified IS NULL LIMIT 1").fetchone()
        except duckdb.Error as exc:
            raise UsageError(f"{self.root}: cannot read manifest.parquet "
                             f"({str(exc).splitlines()[0]})") from None
        finally:
            con.close()
        if row is not None:
            raise self._incomplete_row(row[0])
        self._check_confined()

    def _check_confined(self) -> None:
        """I19: every manifest key is a confined store path, before anything is touched."""
        import duckdb

        from cleanup.core.names import I19
        from cleanup.core.paths import parse_store, unsafe_key_sql

        kind = parse_store(self.plan.store).kind
        con = duckdb.connect()
        try:
            rows = con.execute(f"SELECT key FROM {self.manifest_sql()} WHERE "
                               f"{unsafe_key_sql('key', kind)} LIMIT 1").fetchall()
        finally:
            con.close()
        if rows:
            raise InvariantViolation(I19, f"manifest key {str(rows[0][0])[:200]!r} is not a "
                                          "safe store path; nothing was touched",
                                     hint="a plan never holds such a key: re-plan")

    def iter_stage(self, stage: int, batch_size: int) -> Iterator[list[ObjectInfo]]:
        """The stage's manifest rows in key order, ``batch_size`` at a time."""
        import duckdb

        m = self.manifest_sql()
        con = duckdb.connect()
        try:
            reader = con.sql(
                f"SELECT key, size, epoch_us(last_modified) AS lm, etag FROM {m} "
                f"WHERE stage = {int(stage)} ORDER BY key").to_arrow_reader(batch_size)
            batch: list[ObjectInfo] = []
            for rb in reader:
                for key, size, lm, etag in zip(*(rb.column(i).to_pylist() for i in range(4)),
                                               strict=True):
                    if key is None or size is None or lm is None:
                        raise self._incomplete_row(key)
                    batch.append(ObjectInfo(key, int(size),
                                            _EPOCH + timedelta(microseconds=lm), etag))
                    if len(batch) == batch_size:
                        yield batch
                        batch = []
            if batch:
                yield batch
        finally:
            con.close()

    def _incomplete_row(self, key: str | None) -> UsageError:
        return UsageError(f"{self.root}: manifest row {key!r} has no size or last_modified "
                          "(NULL); this plan cannot be executed, restored or purged as is",
                          hint="make a new plan; quarantined objects stay under "
                               "_cleanup/quarantine/<plan-id>/ until then")

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Remove the private manifest copy (also done when the bundle is collected)."""
        if self._finalizer is not None:
            self._finalizer()
        if self._owned is not None:
            self._owned()
        self._copy = None
        self._state = None

    def __enter__(self) -> PlanBundle:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["MANIFEST", "PLAN_JSON", "BundleLayout", "PlanBundle", "parse_plan",
           "read_plan_bytes", "sig_path"]
