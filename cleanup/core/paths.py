"""Store URLs and the canonical store-relative key form (I4 paths-agree).

A store is a local directory (``/path`` or ``file:///path``) or an S3 bucket and
prefix (``s3://bucket/prefix/``). Keys are relative to the store root: for
``s3://b/p/`` the object ``s3://b/p/x/y`` has key ``x/y``. The reserved prefix
``_cleanup/`` sits at the root of every store.

Reference normalization exists twice: :func:`normalize_ref` (Python, used for
single keys such as sentinels and in property tests) and
:func:`normalize_ref_sql` (a DuckDB expression, used at scale). A property test
checks that the two agree on arbitrary input.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from cleanup.errors import UsageError

RESERVED_PREFIX = "_cleanup/"
S3_SCHEMES = ("s3", "s3a", "s3n")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True)
class StoreRef:
    """Where a store lives. ``kind`` is ``"local"`` or ``"s3"``.

    local: ``root`` is an absolute, normalized path without trailing slash.
    s3: ``bucket`` and ``prefix`` (``""`` or ending in ``/``).
    """

    kind: str
    root: str = ""
    bucket: str = ""
    prefix: str = ""

    @property
    def url(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return self.root

    def __str__(self) -> str:
        return self.url


def parse_store(url: str) -> StoreRef:
    """Parse a store URL; raise :class:`UsageError` with the accepted forms otherwise."""
    if not url:
        raise UsageError("empty store URL", hint="give a directory or s3://bucket/prefix/")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in S3_SCHEMES:
        rest = url.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UsageError(f"store {url!r} names no bucket", hint="use s3://bucket/prefix/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix.startswith("/") or "//" in prefix:
            raise UsageError(f"store {url!r} has an empty path segment in its prefix")
        return StoreRef(kind="s3", bucket=bucket, prefix=prefix)
    if scheme == "file":
        path = url[len("file://") :]
    elif scheme:
        raise UsageError(
            f"unsupported store scheme {scheme!r} in {url!r}",
            hint="stores are local directories, file:///path or s3://bucket/prefix/",
        )
    else:
        path = url
    if not path.startswith("/"):
        import os

        path = os.path.abspath(path)
    root = posixpath.normpath(path)
    if root == "/":
        raise UsageError("refusing to use the file system root as a store")
    return StoreRef(kind="local", root=root)


def _ref_prefixes(store: StoreRef) -> list[str]:
    """The absolute forms that a reference into ``store`` may start with."""
    if store.kind == "s3":
        return [f"{scheme}://{store.bucket}/{store.prefix}" for scheme in S3_SCHEMES]
    return [f"file://{store.root}/", f"{store.root}/"]


def normalize_ref(ref: str, store: StoreRef) -> str | None:
    """Map a metadata reference to a store-relative key, or ``None`` if out of scope.

    Accepted forms: a store-relative key (``x/y``); an S3 URL with scheme s3, s3a
    or s3n naming this bucket and prefix; for local stores an absolute path or
    ``file://`` URL under the root. Anything else (another bucket, another
    scheme, an absolute path into an S3 store) is out of scope, which is safe
    because out-of-scope references cannot make a key in this store a candidate
    ... but they are counted, and a snapshot with no in-scope reference is
    refused (I4), since that means the paths do not agree.
    """
    for prefix in _ref_prefixes(store):
        if ref.startswith(prefix):
            key = ref[len(prefix) :]
            return key or None
    if _SCHEME_RE.match(ref) or ref.startswith("/"):
        return None
    return ref or None


def sql_literal(value: str) -> str:
    """Quote ``value`` as a DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


def normalize_ref_sql(column: str, store: StoreRef) -> str:
    """The DuckDB expression equivalent of :func:`normalize_ref` over ``column``."""
    whens = []
    for prefix in _ref_prefixes(store):
        lit = sql_literal(prefix)
        # substr counts code points in DuckDB, as len() does in Python.
        whens.append(
            f"WHEN starts_with({column}, {lit}) THEN "
            f"nullif(substr({column}, {len(prefix) + 1}), '')"
        )
    # contains(':') first: the regex only runs on the few keys that could have a scheme.
    whens.append(
        f"WHEN (contains({column}, ':') AND "
        f"regexp_matches({column}, '^[A-Za-z][A-Za-z0-9+.\\-]*:')) "
        f"OR starts_with({column}, '/') THEN NULL"
    )
    return f"(CASE {' '.join(whens)} ELSE nullif({column}, '') END)"


def is_reserved(key: str) -> bool:
    """True for keys under the tool's own ``_cleanup/`` prefix."""
    return key.startswith(RESERVED_PREFIX)
