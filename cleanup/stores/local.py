"""Local directory store.

``last_modified`` is ``max(mtime, ctime)``: mtime alone can be set to any past
time (``cp -p``, ``rsync -t``, ``touch -d``), which would make a file copied in
a minute ago look years old. ctime cannot be set back by users and changes on
every write and rename, so the maximum is never earlier than the real write.
Keeping a file we could have deleted is fine; deleting a fresh one is not.

``--trust-mtime`` (recorded in the inventory and shown by ``show``) uses mtime
alone, for stores whose files were backdated on purpose, such as the demo.

The etag is ``<size>-<mtime_ns>-<ctime_ns>-<inode>`` (:func:`_etag`): cheap, and
it changes whenever the content is rewritten or replaced, even in place at the
same size with mtime set back, which is what the executor's re-check needs.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, confined
from cleanup.errors import UsageError
from cleanup.stores.base import Checksums, ClockProbe, ObjectInfo, quarantine_key

_US = timedelta(microseconds=1)


def _time_of(st: os.stat_result, trust_mtime: bool = False) -> datetime:
    ns = st.st_mtime_ns if trust_mtime else max(st.st_mtime_ns, st.st_ctime_ns)
    us = ns // 1000
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _etag(st: os.stat_result) -> str:
    """``<size>-<mtime_ns>-<ctime_ns>-<inode>``: changes on any rewrite or replacement.

    mtime alone is not enough: a same-size in-place rewrite followed by
    ``os.utime`` (``touch -d``, ``rsync -t``) restores size, mtime and inode;
    ctime cannot be set back by users, so it gives that rewrite away.
    """
    return f"{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}-{st.st_ino}"


def _same_content(a: os.stat_result, b: os.stat_result) -> bool:
    """Same file, not rewritten: inode, size and mtime agree (a rename changes ctime)."""
    return (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns) == (
        b.st_ino, b.st_dev, b.st_size, b.st_mtime_ns)


def _tmp_sibling(p: Path) -> Path:
    """A unique hidden temp name next to ``p`` (same directory, so same file system).

    The name starts with a dot and stays within NAME_MAX whatever ``p``'s name is.
    """
    stem = p.name.encode()[:100].decode(errors="ignore")
    return p.with_name(f".{stem}.{uuid.uuid4().hex}.tmp")


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively, write all of ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the entry is still there
    finally:
        os.close(fd)


def _os_error(exc: OSError) -> str:
    """The outcome string for a key the file system refused (``error: File name too long``)."""
    return f"error: {exc.strerror or exc.__class__.__name__}"


# A path the file system cannot hold (too long, a file where a directory should be, too
# many symlinks) names no object: lookups treat it as absent instead of failing.
_NO_SUCH_PATH = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP)


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
        """Every regular file but the root's ``_cleanup/``, symlinks never followed.

        A name that is not UTF-8 (``b'bad\\xff.bin'``) comes back as Python decodes
        file names: with surrogate escapes (``'bad\\udcff.bin'``), so
        ``os.fsencode(key)`` gives its exact bytes. The inventory stores those in
        ``key_raw`` (see :mod:`cleanup.formats`).
        """
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
                        etag=_etag(st),
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
        confined(key, kind="local", reserved_ok=True)  # I19: the one join of every path
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise UsageError(f"key {key!r} escapes the store root")
        return p

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write a complete temp file, then hard-link it into place.

        ``link`` fails if the key exists, like ``O_EXCL``, but the key only ever
        appears with all of its content: a concurrent reader never sees an empty
        or partial object (the audit chain hashes what it reads).
        """
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(p)
        try:
            _write_new(tmp, data)
            try:
                os.link(tmp, p)
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(p.parent)
        return True

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        """Compare-and-swap under an exclusive ``flock`` of a sibling lock file:
        :class:`ReplaceableStore`."""
        import fcntl

        if etag is None:
            return self.put_if_absent(key, data)
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p.with_name(f".{p.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return False
            if _etag(st) != etag:
                return False
            tmp = _tmp_sibling(p)
            try:
                _write_new(tmp, data)
                os.replace(tmp, p)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(p.parent)
            return True
        finally:
            os.close(fd)

    def conditional_writes_honoured(self) -> bool:
        """Always: ``link`` refuses an existing name on every file system that has it
        (one that lacks it raises, it never silently overwrites). :class:`ConditionalStore`."""
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
        tmp = _tmp_sibling(p)  # unique: two writers never share (and truncate) one temp
        try:
            _write_new(tmp, data)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(p.parent)

    def delete_key(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _info(self, key: str) -> ObjectInfo | None:
        try:
            st = os.lstat(self._path(key))
        except OSError as exc:
            if exc.errno in _NO_SUCH_PATH:
                return None
            raise
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, last_modified=_time_of(st, self.trust_mtime),
                          etag=_etag(st))

    def current(self, keys: Sequence[str]) -> dict[str, ObjectInfo]:
        out = {}
        for k in keys:
            info = self._info(k)
            if info is not None:
                out[k] = info
        return out

    def quarantine(self, plan_id: str, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        """Move each object with one ``rename``; a key the file system refuses (a
        quarantine path longer than PATH_MAX, a permission) is reported as
        ``error: <reason>`` and left where it is, never raised half-way through a batch."""
        out: dict[str, str | None] = {}
        for o in objs:
            qkey = quarantine_key(plan_id, o.key)
            src, dst = self._path(o.key), self._path(qkey)
            try:
                before = os.lstat(src)
            except OSError as exc:
                out[o.key] = "missing" if exc.errno in _NO_SUCH_PATH else _os_error(exc)
                continue
            if not stat.S_ISREG(before.st_mode):
                out[o.key] = "missing"
                continue
            if _etag(before) != o.etag or before.st_size != o.size:
                out[o.key] = "changed"
                continue
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, dst)  # atomic: the object moves whole, or not at all
            except FileNotFoundError:
                out[o.key] = "missing"
                continue
            except OSError as exc:
                out[o.key] = _os_error(exc)  # nothing moved
                continue
            # Moved. A rename changes ctime, so compare what a rewrite changes instead.
            try:
                after: os.stat_result | None = os.lstat(dst)
            except OSError:
                after = None
            if after is None or _same_content(before, after):
                out[o.key] = None
                continue
            # Rewritten between our check and the rename: put it back untouched.
            try:
                os.link(dst, src)
                os.unlink(dst)
            except OSError:
                pass  # a newer object is at the key again; the old one stays quarantined
            out[o.key] = "changed"
        return out

    def delete(self, objs: Sequence[ObjectInfo]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for o in objs:
            try:
                cur = self._info(o.key)
                if cur is None:
                    out[o.key] = "missing"
                elif cur.etag != o.etag or cur.size != o.size:
                    out[o.key] = "changed"
                else:
                    self._path(o.key).unlink(missing_ok=True)
                    out[o.key] = None
            except OSError as exc:
                out[o.key] = _os_error(exc)  # not removed
        return out

    def restore(self, plan_id: str, key: str) -> str:
        q, dst = self._path(quarantine_key(plan_id, key)), self._path(key)
        try:
            os.lstat(q)
        except OSError as exc:
            if exc.errno in _NO_SUCH_PATH:  # e.g. never quarantined: its path was too long
                return "not-quarantined"
            return _os_error(exc)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(q, dst)  # fails if something was written at the key: never overwrite
        except FileExistsError:
            return "exists"
        except OSError as exc:
            return _os_error(exc)
        q.unlink(missing_ok=True)
        return "restored"

    def purge(self, plan_id: str, keys: Sequence[str]) -> int:
        n = 0
        for k in keys:
            try:
                self._path(quarantine_key(plan_id, k)).unlink()
            except OSError as exc:
                if exc.errno in _NO_SUCH_PATH:
                    continue  # not quarantined (or its quarantine path could never exist)
                raise
            n += 1
        return n

    # --- copy verification (cleanup.retire): read-only ---------------------------------

    def _open_regular(self, key: str) -> int | None:
        """A read-only descriptor of the regular file at ``key`` (symlinks not followed),
        or None if there is none."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            if exc.errno in _NO_SUCH_PATH or exc.errno == errno.ELOOP:
                return None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def checksums(self, key: str) -> Checksums | None:
        """sha256 and md5 of the file, computed by reading it (a file system states no
        checksum); the file's etag and time as of the read. A file rewritten while it is
        read is read again."""
        import hashlib

        for _attempt in range(3):
            fd = self._open_regular(key)
            if fd is None:
                return None
            with os.fdopen(fd, "rb") as fh:
                before = os.fstat(fh.fileno())
                sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
                    md5.update(chunk)
                after = os.fstat(fh.fileno())
            if _etag(before) == _etag(after):
                return Checksums(key=key, size=after.st_size,
                                 sums={"sha256": sha.hexdigest(), "md5": md5.hexdigest()},
                                 etag=_etag(after),
                                 last_modified=_time_of(after, self.trust_mtime))
        raise UsageError(f"{self.ref.url}: {key} kept changing while it was read")

    def read_chunks(self, key: str, chunk_size: int) -> Iterator[bytes] | None:
        fd = self._open_regular(key)
        if fd is None:
            return None
        fh = os.fdopen(fd, "rb")

        def chunks() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(chunk_size):
                    yield chunk

        return chunks()
