"""Local directory store.

``last_modified`` is ``max(mtime, ctime)``: mtime alone can be set to any past
time (``cp -p``, ``rsync -t``, ``touch -d``), which would make a file copied in
a minute ago look years old. ctime cannot be set back by users and changes on
every write and rename, so the maximum is never earlier than the real write.
Keeping a file we could have deleted is fine; deleting a fresh one is not.

``--trust-mtime`` (recorded in the inventory and shown by ``show``) uses mtime
alone, for stores whose files were backdated on purpose, such as the demo.

The etag is ``<size>-<mtime_ns>-<inode>``: cheap, and it changes whenever the
content is rewritten or replaced, which is what the executor's re-check needs.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cleanup.core.paths import RESERVED_PREFIX, StoreRef
from cleanup.errors import UsageError
from cleanup.stores.base import ClockProbe, ObjectInfo, quarantine_key

_US = timedelta(microseconds=1)


def _time_of(st: os.stat_result, trust_mtime: bool = False) -> datetime:
    ns = st.st_mtime_ns if trust_mtime else max(st.st_mtime_ns, st.st_ctime_ns)
    us = ns // 1000
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


class LocalStore:
    def __init__(self, ref: StoreRef, region: str = "local", trust_mtime: bool = False) -> None:
        self.ref = ref
        # trust_mtime: use mtime alone (files backdated on purpose, e.g. the demo).
        # Unsafe for real stores; recorded in the inventory and shown to reviewers.
        self.trust_mtime = trust_mtime
        self._region = region
        self.root = Path(ref.root)
        if not self.root.is_dir():
            raise UsageError(f"store {ref.root} is not a directory")

    @property
    def precision(self) -> timedelta:
        # Times are truncated from nanoseconds to microseconds.
        return _US

    def iter_objects(self) -> Iterator[ObjectInfo]:
        reserved = RESERVED_PREFIX.rstrip("/")
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                entries = list(os.scandir(self.root / rel if rel else self.root))
            except FileNotFoundError:
                continue  # removed while listing: it no longer exists, nothing to list
            for entry in entries:
                key = f"{rel}/{entry.name}" if rel else entry.name
                if not rel and entry.name == reserved:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(key)
                elif entry.is_file(follow_symlinks=False):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(
                        key=key,
                        size=st.st_size,
                        last_modified=_time_of(st, self.trust_mtime),
                        etag=f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}",
                    )
                # Symlinks and special files are not objects: never listed, never deleted.

    def probe_clock(self) -> ClockProbe:
        d = self.root / RESERVED_PREFIX / "clock"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"probe-{uuid.uuid4().hex}"
        before = datetime.now(UTC)
        p.write_bytes(b"clock probe\n")
        after = datetime.now(UTC)
        try:
            st = p.stat()
        finally:
            p.unlink(missing_ok=True)
        return ClockProbe(_time_of(st), _US, before, after)

    def region(self) -> str:
        return self._region

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise UsageError(f"key {key!r} escapes the store root")
        return p

    def put_if_absent(self, key: str, data: bytes) -> bool:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        d = base if prefix.endswith("/") or not prefix else base.parent
        if not d.is_dir():
            return []
        root = self.root.resolve()
        out = [str(p.relative_to(root)) for p in d.rglob("*") if p.is_file()]
        return sorted(k for k in out if k.startswith(prefix))

    def put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def delete_key(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _info(self, key: str) -> ObjectInfo | None:
        try:
            st = os.lstat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, last_modified=_time_of(st, self.trust_mtime),
                          etag=f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}")

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        out = {}
        for k in keys:
            info = self._info(k)
            if info is not None:
                out[k] = info
        return out

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for o in objs:
            src, dst = self._path(o.key), self._path(quarantine_key(plan_id, o.key))
            cur = self._info(o.key)
            if cur is None:
                out[o.key] = "missing"
                continue
            if cur.etag != o.etag or cur.size != o.size:
                out[o.key] = "changed"
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(src, dst)  # atomic; inode and mtime move with it
            except FileNotFoundError:
                out[o.key] = "missing"
                continue
            moved = self._info(quarantine_key(plan_id, o.key))
            if moved is None or moved.etag != o.etag:
                # Rewritten between our check and the rename: put it back untouched.
                try:
                    os.link(dst, src)
                    os.unlink(dst)
                except FileExistsError:
                    pass  # a newer object is at the key again; the old one stays quarantined
                out[o.key] = "changed"
                continue
            out[o.key] = None
        return out

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for o in objs:
            cur = self._info(o.key)
            if cur is None:
                out[o.key] = "missing"
            elif cur.etag != o.etag or cur.size != o.size:
                out[o.key] = "changed"
            else:
                self._path(o.key).unlink(missing_ok=True)
                out[o.key] = None
        return out

    def restore(self, plan_id: str, key: str) -> str:
        q, dst = self._path(quarantine_key(plan_id, key)), self._path(key)
        if not q.exists():
            return "not-quarantined"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(q, dst)  # fails if something was written at the key: never overwrite
        except FileExistsError:
            return "exists"
        os.unlink(q)
        return "restored"

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        n = 0
        for k in keys:
            q = self._path(quarantine_key(plan_id, k))
            if q.exists():
                q.unlink()
                n += 1
        return n
