"""How long a key may be in each kind of store, as pure functions and their SQL twin.

Lengths are in bytes of UTF-8, never in characters: ``é`` is 2 bytes, ``😀`` 4.

S3
    An object key -- the store's prefix included -- is at most
    :data:`S3_MAX_KEY_BYTES` (1024) bytes. There is no per-segment limit.
local (Linux)
    Each path component is at most :data:`NAME_MAX` (255) bytes, and the whole
    absolute path -- the store root included -- must be shorter than
    :data:`PATH_MAX` (4096 bytes, which counts the terminating NUL), i.e. at
    most 4095 bytes.

A plan that quarantines by copy/move puts ``key`` at
``_cleanup/quarantine/<plan id>/<key>`` in the same store (see
:func:`cleanup.stores.base.quarantine_key`), 85 bytes longer for a 64-hex plan id.
A key that fits the store but not its quarantine location cannot be
quarantined: :func:`too_long` and :func:`too_long_sql` answer "refuse it at
plan time" for both cases.

:func:`too_long_sql` is the DuckDB expression of :func:`too_long`; a property
test checks that the two agree. It uses ``strlen`` (bytes), never ``length``
(characters), and no lambdas (their syntax changed between DuckDB releases).
"""

from __future__ import annotations

import os

from cleanup.core.paths import RESERVED_PREFIX, StoreRef, sql_literal

S3_MAX_KEY_BYTES = 1024
NAME_MAX = 255
PATH_MAX = 4096  # includes the terminating NUL: a path may have at most PATH_MAX - 1 bytes
PLAN_ID_LEN = 64  # sha256 hex
QUARANTINE_DIR = RESERVED_PREFIX + "quarantine/"


def max_key_bytes(kind: str) -> int:
    """The longest full location the store accepts, in bytes.

    ``s3``: the object key with the store's prefix (1024). ``local``: the
    absolute path with the store root (PATH_MAX - 1 = 4095); each component is
    also limited to NAME_MAX bytes (see :func:`key_fits`).
    """
    if kind == "s3":
        return S3_MAX_KEY_BYTES
    if kind == "local":
        return PATH_MAX - 1
    raise ValueError(f"unknown store kind {kind!r}")


def _base_bytes(kind: str, root: str) -> bytes:
    """What the store puts before a key: the S3 prefix, or the local root and a slash."""
    if kind == "s3":
        return root.encode("utf-8")
    if kind == "local":
        base = os.fsencode(root)
        return base if base.endswith(b"/") else base + b"/"
    raise ValueError(f"unknown store kind {kind!r}")


def _root_of(ref: StoreRef) -> str:
    return ref.prefix if ref.kind == "s3" else ref.root


def _fits(kind: str, root: str, rel: str) -> bool:
    full = _base_bytes(kind, root) + rel.encode("utf-8")
    if len(full) > max_key_bytes(kind):
        return False
    if kind == "local":
        return all(len(part) <= NAME_MAX for part in rel.encode("utf-8").split(b"/"))
    return True


def key_fits(store_kind: str, root: str, key: str) -> bool:
    """Whether the store can hold ``key``. ``root`` is the S3 prefix (``""`` or ending
    in ``/``) or the local store's root directory."""
    return _fits(store_kind, root, key)


def quarantine_key_fits(store_kind: str, root: str, key: str, *,
                        plan_id_len: int = PLAN_ID_LEN) -> bool:
    """Whether ``_cleanup/quarantine/<plan id>/<key>`` fits the store (implies
    :func:`key_fits`: the quarantine location is longer and keeps the key's components)."""
    return _fits(store_kind, root, QUARANTINE_DIR + "p" * plan_id_len + "/" + key)


def too_long(ref: StoreRef, key: str, *, quarantine: bool = True,
             plan_id_len: int = PLAN_ID_LEN) -> bool:
    """True when ``key`` must be refused at plan time: it does not fit the store, or
    (``quarantine``) its quarantine location does not."""
    root = _root_of(ref)
    if quarantine:
        return not quarantine_key_fits(ref.kind, root, key, plan_id_len=plan_id_len)
    return not key_fits(ref.kind, root, key)


def _bytes_as_ascii_sql(expr: str) -> str:
    """SQL: ``expr`` with every non-ASCII character replaced by as many ``x`` as its
    UTF-8 encoding has bytes, so that a character count there is a byte count here."""
    out = expr
    for lo, hi, n in (("80", "7FF", 2), ("800", "FFFF", 3), ("10000", "10FFFF", 4)):
        out = f"regexp_replace({out}, '[\\x{{{lo}}}-\\x{{{hi}}}]', '{'x' * n}', 'g')"
    return out


def too_long_sql(column: str, store_ref: StoreRef, *, quarantine: bool = True,
                 plan_id_len: int = PLAN_ID_LEN) -> str:
    """DuckDB boolean expression: :func:`too_long` of the key in ``column`` (an SQL
    expression). NULL keys give false."""
    kind = store_ref.kind
    extra = len(QUARANTINE_DIR) + plan_id_len + 1 if quarantine else 0
    budget = max_key_bytes(kind) - len(_base_bytes(kind, _root_of(store_ref))) - extra
    col = f"({column})"
    whole = f"strlen({col}) > {budget}"
    if kind != "local":
        return f"coalesce({whole}, false)"
    # A component longer than NAME_MAX bytes. Only keys over NAME_MAX bytes in all
    # can have one, so the regular expressions run on those alone.
    part = (f"regexp_matches({_bytes_as_ascii_sql(col)}, "
            f"{sql_literal('[^/]{' + str(NAME_MAX + 1) + '}')})")
    return (f"coalesce({whole} OR (strlen({col}) > {NAME_MAX} AND {part}), false)")
