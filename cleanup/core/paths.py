"""Store URLs and the one reference resolver (I4 paths-agree).

A store is a local directory (``/path`` or ``file:///path``) or an object-store
bucket and prefix: S3 (``s3://bucket/prefix/``), Google Cloud Storage
(``gs://bucket/prefix/``) or Azure Blob Storage (``az://container/prefix/``, or
``az://container@account/prefix/`` to name the account). Keys are relative to the store root: for
``s3://b/p/`` the object ``s3://b/p/x/y`` has key ``x/y``. The reserved prefix
``_cleanup/`` sits at the root of every store.

Every reference -- at plan time, during reconciliation, for sentinels -- goes
through :func:`resolve_ref`, which classifies it as

``key``
    a store-relative key (exact bytes; compared with the inventory exactly),
``folder``
    a folder inside the store (``t/dir/``; ``""`` is the store root): it
    protects every key under it,
``foreign``
    a location outside the store (another bucket, root or host): counted and
    shown, and refused above ``max_foreign_refs`` unless that store is named,
``unresolvable``
    a spelling that cannot be placed without guessing: refuses the plan.

Equivalences (SPEC I4): schemes are case-insensitive; ``file:/p``,
``file://localhost/p`` and ``file:///p`` are equal; ``s3``, ``s3a``, ``s3n``
and S3 HTTPS URLs (virtual-hosted and path-style) are equal; ``gs://`` and
``https://storage.googleapis.com/bucket/key`` (or ``bucket.storage.googleapis.com``,
``storage.cloud.google.com``) are equal; ``az://container/key``,
``abfs[s]://container@account.dfs.core.windows.net/key``,
``wasb[s]://container@account.blob.core.windows.net/key`` and
``https://account.{blob,dfs}.core.windows.net/container/key`` are equal (an
``az://container/`` store that names no account takes every account's
``container`` as its own: a reference then protects rather than misses); ``.``, ``..`` and
doubled slashes are resolved for local stores only (in an object store
``a//b`` is its own key, and ``/k`` is refused as ambiguous); relative
references are resolved against a declared base (default: the store root);
percent-decoding happens only where the source's format defines it: always
for HTTPS URLs, and for everything when the source declares ``encoding =
"uri"`` (Delta's ``add.path``, for example).

At scale the engine resolves the common spellings with the SQL expression
:func:`fast_key_select` and sends the rest through :func:`resolve_ref`; a
property test checks that the two agree wherever the SQL answers.

:func:`near_miss_forms` gives the spellings a reference absent from the
inventory could have been meant as (NFC/NFD, percent- and ``+``-decoded, dot
segments resolved): one of those being an inventory key is a near-miss.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, unquote_plus

from cleanup.errors import UsageError

RESERVED_PREFIX = "_cleanup/"
S3_SCHEMES = ("s3", "s3a", "s3n")
GCS_SCHEMES = ("gs",)
AZURE_SCHEMES = ("az",)
AZURE_URI_SCHEMES = ("abfs", "abfss", "wasb", "wasbs")
# Object-store providers (StoreRef.provider) and the URL scheme of each.
PROVIDER_SCHEME = {"s3": "s3", "gcs": "gs", "azure": "az"}
_GCS_HOSTS = ("storage.googleapis.com", "storage.cloud.google.com")
_GCS_VHOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9._\-]*)\.storage\.googleapis\.com$")
_AZ_HOST = re.compile(r"^(?P<account>[a-z0-9]+)\.(?:blob|dfs)\.core\.windows\.net$")
ENCODINGS = ("literal", "uri")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.S)
# Virtual-hosted: bucket.s3.amazonaws.com, bucket.s3.REGION.amazonaws.com,
# bucket.s3-REGION.amazonaws.com, bucket.s3.dualstack.REGION.amazonaws.com (and .cn).
_S3_VHOST = re.compile(
    r"^(?P<bucket>[a-z0-9][a-z0-9.\-_]*?)\.s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?"
    r"\.amazonaws\.com(?:\.cn)?$")
_S3_PATH_HOST = re.compile(r"^s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?$")

RefClass = Literal["key", "folder", "foreign", "unresolvable"]


@dataclass(frozen=True)
class StoreRef:
    """Where a store lives. ``kind`` is ``"local"`` or ``"s3"`` (an object store: flat
    keys of at most 1,024 bytes, no dot-segment resolution).

    local: ``root`` is an absolute, normalized path without trailing slash.
    s3: ``bucket`` and ``prefix`` (``""`` or ending in ``/``); ``provider`` says whose
    object store: ``""`` (S3 or S3-compatible), ``"gcs"`` or ``"azure"`` (``bucket`` is
    the container; ``account`` the storage account, ``""`` when the URL names none).
    """

    kind: str
    root: str = ""
    bucket: str = ""
    prefix: str = ""
    provider: str = ""
    account: str = ""

    @property
    def cloud(self) -> str:
        """``local``, ``s3``, ``gcs`` or ``azure``."""
        return self.provider or self.kind

    @property
    def url(self) -> str:
        if self.kind == "s3":
            bucket = f"{self.bucket}@{self.account}" if self.account else self.bucket
            return f"{PROVIDER_SCHEME[self.cloud]}://{bucket}/{self.prefix}"
        return self.root

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class Resolved:
    """What one reference names. ``key`` is set for ``key`` and ``folder`` (a folder's
    key ends with ``/``, or is ``""`` for the store root); ``where`` names the other
    location of a ``foreign`` reference; ``reason`` explains ``unresolvable``."""

    cls: RefClass
    key: str | None = None
    where: str = ""
    reason: str = ""


def _file_url_path(rest: str) -> tuple[str | None, str]:
    """The absolute path of a ``file:`` URL (after the colon), or (None, host) for
    another host, or (None, "") when malformed."""
    if rest.startswith("//"):
        authority, sep, path = rest[2:].partition("/")
        if authority.lower() not in ("", "localhost"):
            return None, authority
        return "/" + path if sep else "/", ""
    if rest.startswith("/"):
        return rest, ""
    return None, ""


def parse_store(url: str) -> StoreRef:
    """Parse a store URL; raise :class:`UsageError` with the accepted forms otherwise."""
    if not url:
        raise UsageError("empty store URL", hint="give a directory or s3://bucket/prefix/")
    if "\x00" in url:
        raise UsageError("store URL contains a NUL character")
    m = _SCHEME_RE.match(url)
    scheme = m.group(1).lower() if m and "://" in url or (m and m.group(1).lower() == "file") \
        else ""
    if scheme in S3_SCHEMES + GCS_SCHEMES + AZURE_SCHEMES and m:
        provider = "gcs" if scheme in GCS_SCHEMES else "azure" if scheme in AZURE_SCHEMES \
            else ""
        form = f"{PROVIDER_SCHEME[provider or 's3']}://bucket/prefix/"
        rest = m.group(2)
        if not rest.startswith("//"):
            raise UsageError(f"store {url!r} is not an {form} URL")
        bucket, _, prefix = rest[2:].partition("/")
        account = ""
        if provider == "azure" and "@" in bucket:
            bucket, _, account = bucket.partition("@")
            if not re.fullmatch(r"[a-z0-9]+", account):
                raise UsageError(f"store {url!r}: {account!r} is not a storage account name",
                                 hint="use az://container/prefix/ or "
                                      "az://container@account/prefix/")
        if not bucket or "@" in bucket:
            raise UsageError(f"store {url!r} names no bucket", hint=f"use {form}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        segs = prefix[:-1].split("/") if prefix else []
        if prefix.startswith("/") or any(s in ("", ".", "..") for s in segs):
            raise UsageError(f"store {url!r} has an empty, '.' or '..' segment in its prefix")
        return StoreRef(kind="s3", bucket=bucket, prefix=prefix, provider=provider,
                        account=account)
    if scheme == "file" and m:
        fpath, host = _file_url_path(m.group(2))
        if fpath is None:
            raise UsageError(f"store {url!r}: only local file: URLs are stores"
                             + (f" (host {host!r})" if host else ""),
                             hint="use file:///path or a plain directory path")
        path = fpath
    elif scheme:
        raise UsageError(
            f"unsupported store scheme {scheme!r} in {url!r}",
            hint="stores are local directories, file:///path, s3://bucket/prefix/, "
                 "gs://bucket/prefix/ or az://container/prefix/",
        )
    else:
        path = url
    if not path.startswith("/"):
        path = os.path.abspath(path)
    root, _folder = _norm_abs(path)
    if root == "/":
        raise UsageError("refusing to use the file system root as a store")
    return StoreRef(kind="local", root=root)


def _norm_abs(path: str) -> tuple[str, bool]:
    """Resolve ``.``, ``..`` and empty segments of an absolute POSIX path (no symlinks:
    keys never follow them). Returns the path and whether it names a folder (it ended
    in ``/``, ``/.`` or ``/..``)."""
    parts: list[str] = []
    segs = path.split("/")
    for seg in segs:
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    folder = segs[-1] in ("", ".", "..")
    return "/" + "/".join(parts), folder


def _in_local(path: str, store: StoreRef, encoding: str) -> Resolved:
    if encoding == "uri":
        path = unquote(path)
    if "\x00" in path:
        return Resolved("unresolvable", reason="NUL character")
    norm, folder = _norm_abs(path)
    if norm == store.root:
        return Resolved("folder", "")
    if norm.startswith(store.root + "/"):
        key = norm[len(store.root) + 1:]
        return Resolved("folder", key + "/") if folder else Resolved("key", key)
    return Resolved("foreign", where=norm)


def _in_s3(bucket: str, path: str, store: StoreRef, provider: str = "",
           account: str = "") -> Resolved:
    """``path``: the object key within ``bucket`` (already decoded where the format says)
    of ``provider``'s object store (``""``: S3; ``azure``: in ``account``, ``""`` if the
    reference names none)."""
    scheme = PROVIDER_SCHEME[provider or "s3"]
    named = f"{bucket}@{account}" if account else bucket
    if store.kind != "s3" or store.provider != provider:
        return Resolved("foreign", where=f"{scheme}://{named}/")
    if bucket.lower() != store.bucket.lower() or (
            account and store.account and account.lower() != store.account.lower()):
        return Resolved("foreign", where=f"{scheme}://{named}/")
    if not path.startswith(store.prefix):
        return Resolved("foreign", where=f"{scheme}://{named}/{path.rpartition('/')[0]}/")
    key = path[len(store.prefix):]
    if key == "" or key.endswith("/"):
        return Resolved("folder", key)
    return Resolved("key", key)


def _https(ref: str, store: StoreRef) -> Resolved:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(ref)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        return Resolved("unresolvable", reason=f"malformed URL ({exc})")
    path = unquote(parts.path)  # a URL's path is percent-encoded by definition
    if "\x00" in path:
        return Resolved("unresolvable", reason="NUL character")
    if host in _GCS_HOSTS or _GCS_VHOST.match(host):
        gm = _GCS_VHOST.match(host)
        bucket, key = (gm.group("bucket"), path[1:]) if gm else path[1:].partition("/")[::2]
        if not bucket:
            return Resolved("unresolvable", reason="GCS URL names no bucket")
        return _in_s3(bucket, key, store, "gcs")
    am = _AZ_HOST.match(host)
    if am:
        container, _, key = path[1:].partition("/")
        if not container:
            return Resolved("unresolvable", reason="Azure URL names no container")
        return _in_s3(container, key, store, "azure", am.group("account"))
    vm = _S3_VHOST.match(host)
    if vm and not _S3_PATH_HOST.match(host):
        return _in_s3(vm.group("bucket"), path[1:], store)
    if _S3_PATH_HOST.match(host):
        bucket, _, key = path[1:].partition("/")
        if not bucket:
            return Resolved("unresolvable", reason="S3 URL names no bucket")
        return _in_s3(bucket, key, store)
    return Resolved("foreign", where=f"{parts.scheme.lower()}://{host}/")


def resolve_ref(ref: str, store: StoreRef, *, base: str | None = None,
                encoding: str = "literal") -> Resolved:
    """Classify one reference against ``store`` (see the module docstring)."""
    if encoding not in ENCODINGS:
        raise UsageError(f"unknown reference encoding {encoding!r}",
                         hint=f"use one of {', '.join(ENCODINGS)}")
    if ref == "":
        return Resolved("unresolvable", reason="empty reference")
    if "\x00" in ref:
        return Resolved("unresolvable", reason="NUL character")
    m = _SCHEME_RE.match(ref)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme in S3_SCHEMES:
            if not rest.startswith("//"):
                return Resolved("unresolvable", reason=f"{scheme}: URL without //bucket/")
            bucket, _, path = rest[2:].partition("/")
            if not bucket:
                return Resolved("unresolvable", reason="S3 URL names no bucket")
            if encoding == "uri":
                path = unquote(path)
            return _in_s3(bucket, path, store)
        if scheme in GCS_SCHEMES + AZURE_SCHEMES + AZURE_URI_SCHEMES:
            return _object_url(scheme, rest, store, encoding)
        if scheme == "file":
            fpath, host = _file_url_path(rest)
            if fpath is None:
                if host:
                    return Resolved("foreign", where=f"file://{host}/")
                return Resolved("unresolvable", reason="file: URL without an absolute path")
            if store.kind != "local":
                return Resolved("foreign", where="file:///")
            return _in_local(fpath, store, encoding)
        if scheme in ("http", "https"):
            return _https(ref, store)
        if rest.startswith("//"):
            authority = rest[2:].partition("/")[0]
            return Resolved("foreign", where=f"{scheme}://{authority}/")
        # "a:b" with no "//": a key that contains a colon, not a URL.
    if ref.startswith("/"):
        if store.kind == "local":
            return _in_local(ref, store, encoding)
        return Resolved("unresolvable",
                        reason="a leading '/' is ambiguous in an object store (a key of its "
                               "own, or an absolute path?)")
    if base is not None:
        joined = base if base.endswith("/") else base + "/"
        return resolve_ref(joined + ref, store, encoding=encoding)
    if store.kind == "local":
        return _in_local(store.root + "/" + ref, store, encoding)
    key = unquote(ref) if encoding == "uri" else ref
    if key.endswith("/"):
        return Resolved("folder", key)
    return Resolved("key", key)


def _object_url(scheme: str, rest: str, store: StoreRef, encoding: str) -> Resolved:
    """``gs://bucket/key``, ``az://container/key`` and the Hadoop Azure forms
    ``abfs[s]://container@account.dfs.core.windows.net/key`` (``wasb[s]``: ``.blob.``)."""
    if not rest.startswith("//"):
        return Resolved("unresolvable", reason=f"{scheme}: URL without //bucket/")
    authority, _, path = rest[2:].partition("/")
    if encoding == "uri":
        path = unquote(path)
    if scheme in GCS_SCHEMES:
        if not authority:
            return Resolved("unresolvable", reason="GCS URL names no bucket")
        return _in_s3(authority, path, store, "gcs")
    container, at, host = authority.partition("@")
    account = ""
    if scheme in AZURE_URI_SCHEMES:
        am = _AZ_HOST.match(host.lower())
        if not at or not container or am is None:
            return Resolved("unresolvable",
                            reason=f"{scheme}: URL is not {scheme}://container@account"
                                   ".dfs.core.windows.net/path")
        account = am.group("account")
    elif at:
        account = host.lower()
    if not container:
        return Resolved("unresolvable", reason="Azure URL names no container")
    return _in_s3(container, path, store, "azure", account)


def normalize_ref(ref: str, store: StoreRef) -> str | None:
    """The store-relative key a plain reference names, or None (folder, foreign,
    unresolvable). For single values such as sentinels."""
    r = resolve_ref(ref, store)
    return r.key if r.cls == "key" else None


def sql_literal(value: str) -> str:
    """Quote ``value`` as a DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


def _simple_tail_sql(expr: str) -> str:
    """SQL: ``expr`` is a relative path with no dot segment, doubled or trailing slash."""
    return (f"({expr} <> '' AND NOT contains({expr}, '//') AND NOT contains({expr}, '/./') "
            f"AND NOT contains({expr}, '/../') AND NOT starts_with({expr}, '/') "
            f"AND NOT starts_with({expr}, './') AND NOT starts_with({expr}, '../') "
            f"AND NOT ends_with({expr}, '/') AND NOT ends_with({expr}, '/.') "
            f"AND NOT ends_with({expr}, '/..') AND {expr} NOT IN ('.', '..') "
            f"AND NOT contains({expr}, chr(0)))")


def fast_prefixes(store: StoreRef) -> list[str]:
    """Exact spellings of the store root that the SQL fast path strips."""
    if store.kind == "s3" and store.provider:
        scheme = PROVIDER_SCHEME[store.provider]
        named = [store.bucket] + ([f"{store.bucket}@{store.account}"] if store.account else [])
        return [f"{scheme}://{b}/{store.prefix}" for b in named]
    if store.kind == "s3":
        return [f"{s}://{store.bucket}/{store.prefix}" for s in S3_SCHEMES]
    return [f"{store.root}/", f"file://{store.root}/", f"file:{store.root}/",
            f"file://localhost{store.root}/"]


def fast_key_select(source: str, store: StoreRef, encoding: str = "literal") -> str:
    """A DuckDB SELECT over relation ``source`` (column ``key``) giving ``ref`` and
    ``fk``: the key of the common spellings of a reference, NULL for every other
    spelling (which :func:`resolve_ref` then classifies).

    Wherever ``fk`` is not NULL it equals ``resolve_ref(ref).key`` with class ``key``.
    The tail after a root spelling is computed once per row (an inner SELECT), then
    checked once: ten times cheaper than repeating ``substr`` in every predicate.
    """
    whens = " ".join(
        f"WHEN starts_with(key, {sql_literal(p)}) THEN substr(key, {len(p) + 1})"
        for p in fast_prefixes(store))  # substr counts code points, as len() does
    extra = " AND NOT contains(t, '%')" if encoding == "uri" else ""
    return (f"SELECT ref, CASE WHEN t IS NOT NULL AND {_simple_tail_sql('t')}{extra} "
            f"THEN t END AS fk FROM (SELECT key AS ref, CASE {whens} "
            f"WHEN NOT contains(key, ':') THEN key END AS t FROM {source})")


def _dot_resolved(key: str) -> str | None:
    norm, folder = _norm_abs("/" + key)
    out = norm[1:] + ("/" if folder and norm != "/" else "")
    return out if out and out != key else None


def near_miss_forms(key: str) -> set[str]:
    """Spellings that a reference ``key`` absent from the inventory may have meant:
    NFC and NFD forms, percent- and ``+``-decoded forms (and their NFC/NFD), the key
    with dot segments and doubled slashes resolved, a leading ``/`` dropped."""
    forms: set[str] = set()
    decoded = {key, unquote(key), unquote_plus(key), key.replace("+", " ")}
    for d in decoded:
        forms.update({d, unicodedata.normalize("NFC", d), unicodedata.normalize("NFD", d)})
    for f in list(forms):
        dot = _dot_resolved(f)
        if dot:
            forms.add(dot)
        if f.startswith("/"):
            forms.add(f.lstrip("/"))
    forms.discard(key)
    forms.discard("")
    return forms


def fold_sql(expr: str) -> str:
    """DuckDB list of the folded forms of ``expr`` (NFC of it, of its percent-decoded and
    its ``+``-decoded form) for near-miss joins; ``try`` keeps invalid escapes literal."""
    return (f"list_distinct([nfc_normalize({expr}), "
            f"nfc_normalize(coalesce(try(url_decode({expr})), {expr})), "
            f"nfc_normalize(coalesce(try(url_decode(replace({expr}, '+', ' '))), {expr}))])")


def needs_fold_sql(expr: str) -> str:
    """SQL: ``expr`` could fold to something else (has ``%``, ``+`` or non-ASCII)."""
    return (f"(contains({expr}, '%') OR contains({expr}, '+') "
            f"OR strlen({expr}) <> length({expr}))")


def ancestors(key: str) -> list[str]:
    """The folders containing ``key``, as folder keys: ``a/b/c`` -> ``["", "a/", "a/b/"]``."""
    out = [""]
    pos = key.find("/")
    while pos != -1:
        out.append(key[: pos + 1])
        pos = key.find("/", pos + 1)
    return out


def unsafe_key_reason(key: str, *, kind: str, reserved_ok: bool = False) -> str | None:
    """Why ``key`` may not be used as a store path (I19 confinement), or None.

    Refused everywhere: empty, NUL, a leading ``/`` (absolute), a ``.`` or ``..``
    segment, and -- unless ``reserved_ok`` (the tool's own bookkeeping) -- the
    reserved prefix. Local stores also refuse empty segments (``a//b`` would name
    ``a/b``, another file).
    """
    if key == "":
        return "empty key"
    if "\x00" in key:
        return "NUL character"
    if key.startswith("/"):
        return "absolute path"
    segs = key.split("/")
    if any(s in (".", "..") for s in segs):
        return "'.' or '..' segment"
    if kind == "local" and "" in segs[:-1]:
        return "empty path segment"
    if not reserved_ok and key.startswith(RESERVED_PREFIX):
        return f"inside the reserved prefix {RESERVED_PREFIX}"
    return None


def confined(key: str, *, kind: str, reserved_ok: bool = False) -> str:
    """``key`` if it is a safe store path (see :func:`unsafe_key_reason`); otherwise refuse
    with I19: every store path goes through this one check."""
    from cleanup.core.names import I19
    from cleanup.errors import InvariantViolation

    reason = unsafe_key_reason(key, kind=kind, reserved_ok=reserved_ok)
    if reason is not None:
        raise InvariantViolation(I19, f"key {key[:200]!r} is not a safe store path ({reason})",
                                 hint="nothing was touched; a plan never holds such a key, "
                                      "so the plan or the manifest is not what was planned")
    return key


def unsafe_key_sql(column: str, kind: str) -> str:
    """SQL twin of :func:`unsafe_key_reason` (with ``reserved_ok=False``) as a boolean."""
    c = f"({column})"
    cond = (f"{c} = '' OR contains({c}, chr(0)) OR starts_with({c}, '/') "
            f"OR starts_with({c}, {sql_literal(RESERVED_PREFIX)}) "
            f"OR regexp_matches({c}, '(^|/)\\.\\.?(/|$)')")
    if kind == "local":
        cond += f" OR regexp_matches({c}, '//')"
    return f"coalesce({cond}, true)"


def is_reserved(key: str) -> bool:
    """True for keys under the tool's own ``_cleanup/`` prefix."""
    return key.startswith(RESERVED_PREFIX)
