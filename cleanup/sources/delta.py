"""``cleanup snapshot delta://PATH``: the files a Delta Lake table still needs.

References are every file needed by any version inside the retention window,
as VACUUM counts it:

* the ``add`` actions of the latest version (the live files);
* every ``remove`` whose ``deletionTimestamp`` is inside the window
  (``taken_at - retention`` or later): a file removed recently is still read by
  time travel to the versions before its removal, however old the file itself
  is. A remove without a deletion timestamp is kept (VACUUM would count it as
  expired; keeping a file is the safe side);
* the deletion-vector files of those adds and removes (``storageType`` ``u``
  and ``p``; inline vectors have no file);
* the ``cdc`` files of every commit still in the log;
* the whole ``_delta_log/`` folder (also protected by I20 under the table root).

Paths: ``add.path`` is a percent-encoded relative URI (``city=New%2520York/...``
names the object ``city=New%20York/...``); it is decoded exactly once and
joined to the table root. The snapshot's references are absolute paths, so the
store may be the table or any folder above it.

The log is read directly (``_last_checkpoint``, the newest complete checkpoint,
the JSON commits after it, and the older JSON commits still present for their
removes), then cross-checked against delta-rs (``deltalake``) at the same
version: the live files must agree exactly, or the snapshot is refused.

Where the table lives: a local path or ``file:`` URL, or ``s3://bucket/prefix``
(also ``s3a``/``s3n``) read with boto3 and delta-rs, endpoint and credentials
from the AWS environment (``AWS_ENDPOINT_URL`` for S3-compatible servers).

taken_at is the time just before the log is listed, so a commit made after it
is not in the snapshot (only more references can appear, which is safe). It
comes from the store's clock: for a local table the local clock
(``taken_at_clock = local:delta-log``); on S3 the ``Date`` of the first LIST
response minus one second (it is truncated to whole seconds;
``store:s3-date``), with the store-minus-local skew measured for I15.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from cleanup.core.policy import FLOOR_MIN_BUFFER
from cleanup.core.timeutil import format_duration, format_time
from cleanup.errors import UsageError
from cleanup.sources.base import skew_from_bracket
from cleanup.sources.tables import TableSnapshot, decoded_location, join_location, local_root

SCHEME = "delta://"
DEFAULT_RETENTION = timedelta(days=7)
#: Below this, a retention is refused: readers of a version a day old must keep working.
RETENTION_FLOOR = FLOOR_MIN_BUFFER
RETENTION_KEY = "delta.deletedFileRetentionDuration"
LOG_DIR = "_delta_log"

_COMMIT_RE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint\.parquet$")
_MULTIPART_RE = re.compile(r"^(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet$")
_V2_CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(json|parquet)$")
_INTERVAL_RE = re.compile(r"^\s*(?:interval\s+)?(\d+)\s+([a-z]+?)s?\s*$", re.IGNORECASE)
_INTERVAL_UNITS = {
    "nanosecond": timedelta(microseconds=0.001), "microsecond": timedelta(microseconds=1),
    "millisecond": timedelta(milliseconds=1), "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_Z85 = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        ".-:+=^!/*?&<>()[]{}@%$#")
_Z85_VALUE = {c: i for i, c in enumerate(_Z85)}
# Only what the references need is read from a checkpoint (not the stats).
_CHECKPOINT_LEAVES = {"add": ("path", "deletionVector"),
                      "remove": ("path", "deletionTimestamp", "deletionVector"),
                      "metaData": ("configuration",)}


def parse_interval(text: str) -> timedelta:
    """A Delta table property duration (``interval 7 days``, ``interval 1 hour``)."""
    m = _INTERVAL_RE.match(text)
    if not m or m.group(2).lower() not in _INTERVAL_UNITS:
        raise UsageError(f"the table's {RETENTION_KEY} {text!r} is not a duration",
                         hint="give --retention explicitly, e.g. --retention 7d")
    return int(m.group(1)) * _INTERVAL_UNITS[m.group(2).lower()]


def z85_decode(text: str) -> bytes:
    """Z85 (ZeroMQ base-85), as Delta spells a deletion vector's UUID."""
    if len(text) % 5:
        raise ValueError("Z85 text length is not a multiple of 5")
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for c in text[i:i + 5]:
            value = value * 85 + _Z85_VALUE[c]
        out += value.to_bytes(4, "big")
    return bytes(out)


def dv_reference(root: str, dv: dict[str, Any] | None) -> str | None:
    """The file a deletion-vector descriptor names (None for inline or no vector)."""
    if not dv:
        return None
    kind = dv.get("storageType")
    where = dv.get("pathOrInlineDv") or ""
    if kind == "u":
        if len(where) < 20:
            raise UsageError(f"deletion vector {where!r}: too short for a Z85 UUID")
        prefix, encoded = where[:-20], where[-20:]
        try:
            ident = uuid.UUID(bytes=z85_decode(encoded))
        except (KeyError, ValueError):
            raise UsageError(f"deletion vector {where!r}: not a Z85 UUID") from None
        name = f"deletion_vector_{ident}.bin"
        return join_location(root, f"{prefix}/{name}" if prefix else name)
    if kind == "p":
        return _file_reference(root, where)
    if kind == "i":
        return None
    raise UsageError(f"deletion vector of unknown storage type {kind!r}",
                     hint="this Delta protocol feature is not supported yet")


def _file_reference(root: str, path: str) -> str:
    """``add.path``/``remove.path``/``cdc.path`` -> an absolute reference, decoded once."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", path):
        return decoded_location(path)
    return join_location(root, unquote(path))


@dataclass
class _Tombstone:
    path: str
    deletion_ms: int | None
    dv: dict[str, Any] | None


@dataclass
class LogState:
    """What replaying the log gave: live files, tombstones, CDC files, the table's
    configuration, and the version read with its commit time."""

    version: int
    live: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    tombstones: list[_Tombstone] = field(default_factory=list)
    cdc: set[str] = field(default_factory=set)
    configuration: dict[str, str] = field(default_factory=dict)
    commit_time: datetime | None = None


class LogIO:
    """Reads one table's ``_delta_log/``: a local directory, or an S3 prefix through
    boto3 (endpoint and credentials from the AWS environment, ``AWS_ENDPOINT_URL``
    included). ``root`` is the table's location spelled as references are."""

    def __init__(self, location: str) -> None:
        self.s3: Any = None
        self.bucket = self.prefix = ""
        self.server_date: datetime | None = None
        if location.lower().startswith(("s3://", "s3a://", "s3n://")):
            from urllib.parse import urlsplit

            from cleanup.stores.s3 import make_client

            parts = urlsplit(location)
            self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
            if not self.bucket:
                raise UsageError(f"{SCHEME}{location}: no bucket")
            self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
            self.s3 = make_client(os.environ.get("AWS_ENDPOINT_URL") or None,
                                  what=f"Delta table {self.root}")
        else:
            self.root = local_root(location, f"{SCHEME}{location}")

    def _key(self, name: str) -> str:
        return "/".join(p for p in (self.prefix, LOG_DIR, name) if p)

    def list_log(self) -> list[str]:
        """The names in ``_delta_log/`` (not below it)."""
        if self.s3 is None:
            log = os.path.join(self.root, LOG_DIR)
            try:
                return os.listdir(log)
            except FileNotFoundError:
                raise UsageError(f"{self.root} is not a Delta table (no {LOG_DIR}/)") from None
            except OSError as exc:
                raise UsageError(f"cannot list {log}: {exc.strerror}") from None
        base = self._key("") + "/"
        names: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call(self.s3.list_objects_v2, **kwargs)
            if self.server_date is None:
                self.server_date = _http_date(resp)
            names += [o["Key"][len(base):] for o in resp.get("Contents", [])]
            token = resp.get("NextContinuationToken")
            if not token:
                break
        if not names:
            raise UsageError(f"{self.root} is not a Delta table (no {LOG_DIR}/)")
        return names

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise UsageError(f"{SCHEME}{self.root}: {str(exc).splitlines()[0]}") from None

    def read(self, name: str) -> bytes:
        if self.s3 is None:
            with open(os.path.join(self.root, LOG_DIR, name), "rb") as fh:
                return fh.read()
        resp = self._call(self.s3.get_object, Bucket=self.bucket, Key=self._key(name))
        return bytes(resp["Body"].read())

    def mtime(self, name: str) -> datetime:
        if self.s3 is None:
            return datetime.fromtimestamp(
                os.stat(os.path.join(self.root, LOG_DIR, name)).st_mtime, UTC)
        resp = self._call(self.s3.head_object, Bucket=self.bucket, Key=self._key(name))
        return resp["LastModified"].astimezone(UTC)  # type: ignore[no-any-return]

    def where(self, name: str) -> str:
        return join_location(self.root, f"{LOG_DIR}/{name}")


def _http_date(resp: Any) -> datetime | None:
    from email.utils import parsedate_to_datetime

    text = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(text).astimezone(UTC) if text else None
    except (TypeError, ValueError):
        return None


def _log_listing(io: LogIO) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Commit files by version and complete classic checkpoints (their parts) by version."""
    commits: dict[int, str] = {}
    single: dict[int, list[str]] = {}
    parts: dict[tuple[int, int], list[str]] = {}
    for name in io.list_log():
        if m := _COMMIT_RE.match(name):
            commits[int(m.group(1))] = name
        elif m := _CHECKPOINT_RE.match(name):
            single[int(m.group(1))] = [name]
        elif m := _MULTIPART_RE.match(name):
            parts.setdefault((int(m.group(1)), int(m.group(3))), []).append(name)
        elif _V2_CHECKPOINT_RE.match(name):
            raise UsageError(f"{io.where(name)}: V2 checkpoints are not supported yet",
                             hint="this table uses the v2Checkpoint feature; nothing was read")
    checkpoints = dict(single)
    for (version, total), files in parts.items():
        if len(set(files)) == total:  # an incomplete multi-part checkpoint is not used
            checkpoints.setdefault(version, sorted(files))
    return commits, checkpoints


def _checkpoint_rows(io: LogIO, name: str, column: str) -> list[dict[str, Any]]:
    """The rows of one action column of a checkpoint, with only the fields references
    need (never the stats); rows of other actions (NULL in this column) skipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = io.where(name)
    source: Any = (os.path.join(io.root, LOG_DIR, name) if io.s3 is None
                   else pa.BufferReader(io.read(name)))
    try:
        schema = pq.read_schema(source)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: unreadable checkpoint ({exc})") from None
    if column not in schema.names:
        return []
    have = {f.name for f in schema.field(column).type}
    leaves = [leaf for leaf in _CHECKPOINT_LEAVES[column] if leaf in have]
    if not leaves or ("path" in _CHECKPOINT_LEAVES[column] and "path" not in leaves):
        raise UsageError(f"{where}: checkpoint column {column} has no "
                         f"{_CHECKPOINT_LEAVES[column][0]}")
    try:
        table = pq.read_table(source, columns=[f"{column}.{leaf}" for leaf in leaves])
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: unreadable checkpoint ({exc})") from None
    key = leaves[0]
    return [r for r in table.to_pylist() if r.get(key) is not None]


def _read_checkpoint(io: LogIO, files: list[str], state: LogState) -> None:
    for name in files:
        for add in _checkpoint_rows(io, name, "add"):
            state.live[add["path"]] = add.get("deletionVector")
        for rm in _checkpoint_rows(io, name, "remove"):
            state.tombstones.append(_Tombstone(rm["path"], rm.get("deletionTimestamp"),
                                               rm.get("deletionVector")))
        for meta in _checkpoint_rows(io, name, "metaData"):
            conf = meta.get("configuration") or {}
            state.configuration = dict(conf.items() if isinstance(conf, dict) else conf)


#: in a commit at or before the checkpoint only removes and CDC files matter: a line
#: holding neither word cannot be one, and is not parsed (most lines are adds)
_OLD_COMMIT_NEEDLES = ('"remove"', '"cdc"')


def _commit_actions(io: LogIO, name: str, only: tuple[str, ...] = ()
                    ) -> Iterator[dict[str, Any]]:
    """The actions of one commit file, one line at a time (a commit may hold millions);
    with ``only``, just the lines that contain one of those strings."""
    where = io.where(name)
    try:
        if io.s3 is None:
            with open(os.path.join(io.root, LOG_DIR, name), encoding="utf-8") as fh:
                for line in fh:
                    if line.strip() and (not only or any(n in line for n in only)):
                        yield json.loads(line)
        else:
            needles = tuple(n.encode() for n in only)
            for raw in io.read(name).splitlines():
                if raw.strip() and (not needles or any(n in raw for n in needles)):
                    yield json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: unreadable commit ({exc})") from None


def _apply_commit(actions: Iterable[dict[str, Any]], state: LogState, *,
                  replay: bool) -> int | None:
    """Apply one commit's actions; ``replay=False`` (commits older than the checkpoint)
    only collects removes and CDC files. Returns the commit's timestamp (ms) if it
    records one."""
    committed: int | None = None
    for action in actions:
        info = action.get("commitInfo")
        if isinstance(info, dict):
            ms = info.get("inCommitTimestamp", info.get("timestamp"))
            if isinstance(ms, int):
                committed = ms
        if "add" in action and replay:
            add = action["add"]
            state.live[add["path"]] = add.get("deletionVector")
        elif "remove" in action:
            rm = action["remove"]
            if replay:
                state.live.pop(rm["path"], None)
            state.tombstones.append(_Tombstone(rm["path"], rm.get("deletionTimestamp"),
                                               rm.get("deletionVector")))
        elif "cdc" in action:
            state.cdc.add(action["cdc"]["path"])
        elif "metaData" in action and replay:
            state.configuration = dict(action["metaData"].get("configuration") or {})
    return committed


def read_log(io: LogIO) -> LogState:
    """Replay the Delta log that ``io`` reads (see the module docstring)."""
    commits, checkpoints = _log_listing(io)
    if not commits and not checkpoints:
        raise UsageError(f"{io.root} is not a Delta table ({LOG_DIR}/ has no commit)")
    latest = max([*commits, *checkpoints])
    base = max((v for v in checkpoints if v <= latest), default=-1)
    missing = [v for v in range(base + 1, latest + 1) if v not in commits]
    if missing:
        raise UsageError(f"{io.root}: the Delta log has no commit {missing[0]} (between "
                         f"checkpoint {base} and version {latest})",
                         hint="the log is incomplete; nothing was read")
    state = LogState(latest)
    if base >= 0:
        _read_checkpoint(io, checkpoints[base], state)
    for version in sorted(commits):
        replay = version > base
        committed = _apply_commit(
            _commit_actions(io, commits[version], () if replay else _OLD_COMMIT_NEEDLES),
            state, replay=replay)
        if version == latest:
            state.commit_time = (
                datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=committed)
                if committed is not None else io.mtime(commits[version]))
    if state.commit_time is None:  # the latest version is a checkpoint without its commit
        state.commit_time = io.mtime(checkpoints[base][0])
    return state


def effective_retention(requested: timedelta | None, configuration: dict[str, str]) -> timedelta:
    """``--retention``, else the table's ``delta.deletedFileRetentionDuration``, else 7
    days; refused below the floor (24h) or below the table's own retention."""
    table = parse_interval(configuration[RETENTION_KEY]) if configuration.get(
        RETENTION_KEY) else None
    retention = requested if requested is not None else (table or DEFAULT_RETENTION)
    if retention < RETENTION_FLOOR:
        raise UsageError(
            f"retention {format_duration(retention)} is below the floor "
            f"{format_duration(RETENTION_FLOOR)}"
            + ("" if requested is not None else f" (the table's {RETENTION_KEY})"),
            hint=f"give --retention {format_duration(RETENTION_FLOOR)} or more: readers of "
                 "recent versions must keep their files")
    if table is not None and retention < table:
        raise UsageError(
            f"--retention {format_duration(retention)} is below the table's {RETENTION_KEY} "
            f"{format_duration(table)}",
            hint="the table promises time travel over its own retention; drop --retention")
    return retention


def _deltalake_live_paths(io: LogIO, version: int) -> set[str]:
    try:
        import deltalake
        import pyarrow as pa
    except ImportError:
        raise UsageError("reading Delta tables needs the deltalake package",
                         hint="pip install 'cleanup[delta]'") from None
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if io.s3 is not None and endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.lower().startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    try:
        table = deltalake.DeltaTable(io.root, version=version, storage_options=options or None)
        adds = pa.table(table.get_add_actions(flatten=False))
    except Exception as exc:  # noqa: BLE001 - delta-rs raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{io.root}: delta-rs cannot load version {version} ({first})") from None
    return set(adds.column("path").to_pylist())


def references(root: str, state: LogState, window_start: datetime) -> list[str]:
    """The absolute references of a replayed log (see the module docstring)."""
    start_ms = int((window_start - datetime(1970, 1, 1, tzinfo=UTC))
                   / timedelta(milliseconds=1))
    refs: set[str] = {join_location(root, LOG_DIR) + "/"}
    for path, dv in state.live.items():
        refs.add(_file_reference(root, path))
        if (ref := dv_reference(root, dv)) is not None:
            refs.add(ref)
    for t in state.tombstones:
        if t.deletion_ms is None or t.deletion_ms >= start_ms:
            refs.add(_file_reference(root, t.path))
            if (ref := dv_reference(root, t.dv)) is not None:
                refs.add(ref)
    refs.update(_file_reference(root, p) for p in state.cdc)
    return sorted(refs)


def delta_source(location: str, retention: timedelta | None, tmp_parquet: str) -> TableSnapshot:
    """Read the Delta table at ``location`` (``delta://PATH`` with the scheme removed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cleanup.sources.sql import _staged

    try:
        import deltalake  # noqa: F401 - fail early, before reading anything
    except ImportError:
        raise UsageError("reading Delta tables needs the deltalake package",
                         hint="pip install 'cleanup[delta]'") from None
    io = LogIO(location)
    root = io.root
    before = datetime.now(UTC)  # before the log is listed: later commits are not in it
    state = read_log(io)
    after = datetime.now(UTC)
    taken_at, clock, skew = before, "local:delta-log", None
    if io.server_date is not None:
        # The store's own clock: the Date of the first LIST response, whole seconds, so
        # one second earlier is no later than the moment the listing began.
        taken_at, clock = io.server_date - timedelta(seconds=1), "store:s3-date"
        skew = skew_from_bracket(io.server_date, before - timedelta(seconds=1), after)
    retention = effective_retention(retention, state.configuration)
    theirs = _deltalake_live_paths(io, state.version)
    if theirs != set(state.live):
        only_ours = sorted(set(state.live) - theirs)[:3]
        only_theirs = sorted(theirs - set(state.live))[:3]
        raise UsageError(
            f"{root}: the Delta log read here and delta-rs disagree on the live files of "
            f"version {state.version} (here only: {only_ours}, delta-rs only: {only_theirs})",
            hint="nothing was written; report this with the table's _delta_log/")
    refs = references(root, state, taken_at - retention)
    pq.write_table(pa.table({"key": pa.array(refs, pa.string())}), tmp_parquet)
    committed = format_time(state.commit_time) if state.commit_time else "unknown"
    source = (f"delta:{root} version {state.version} committed {committed} "
              f"retention {format_duration(retention)}")
    return TableSnapshot(_staged(tmp_parquet), taken_at, clock, source, skew,
                         table_roots=(root,))
