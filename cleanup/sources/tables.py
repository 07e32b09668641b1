"""Shared pieces of the lakehouse table sources (Delta Lake, Apache Iceberg).

A table source returns a :class:`TableSnapshot`: a :class:`RawSnapshot` that also
declares the *table roots* it covers (absolute local paths or URLs, as the
references are spelled). ``finalize_snapshot`` records them in the snapshot's
metadata (``cleanup.table_roots``, a JSON list), and the planner uses them for
I20 table-metadata: under a declared root, ``_delta_log/``, ``metadata/`` and
every path component starting with ``_`` or ``.`` are never candidates, and a
table root in the scope that no declared root covers refuses the plan.

References are written with ``--ref-encoding literal``: each source decodes what
its format encodes (Delta's percent-encoded ``add.path``) exactly once, here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cleanup.errors import UsageError
from cleanup.sources.base import RawSnapshot


@dataclass(frozen=True)
class TableSnapshot(RawSnapshot):
    """A reference set read from table metadata, with the table roots it covers."""

    table_roots: tuple[str, ...] = ()


def encode_roots(roots: tuple[str, ...] | list[str]) -> str:
    """The ``cleanup.table_roots`` metadata value: a JSON list, sorted, distinct."""
    return json.dumps(sorted(set(roots)), ensure_ascii=False)


def decode_roots(text: str | None) -> tuple[str, ...]:
    """Inverse of :func:`encode_roots`; a malformed value is a usage error (a damaged
    snapshot file), never silently empty (that would switch I20 off)."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        raise UsageError(f"the snapshot's table_roots metadata is not JSON: {text[:80]!r}",
                         hint="re-create the snapshot with `cleanup snapshot`") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError("the snapshot's table_roots metadata is not a list of strings",
                         hint="re-create the snapshot with `cleanup snapshot`")
    return tuple(value)


def local_root(path_or_uri: str, what: str) -> str:
    """The absolute local directory a ``delta://`` / table location names.

    Accepts a plain path (relative to the working directory) and ``file:`` URLs
    (``file:/p``, ``file:///p``, ``file://localhost/p``, percent-decoded once as a
    URL's path is). Other schemes are refused: only local tables are read here.
    """
    text = path_or_uri
    if text.lower().startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"{what}: file URL on another host ({parts.netloc!r})")
        text = unquote(parts.path)
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(f"{what}: {scheme}:// tables are not supported yet",
                         hint="give a local path, a file:/// URL or an s3:// URL")
    if not text:
        raise UsageError(f"{what}: no path given")
    root = os.path.abspath(text)
    if not os.path.isdir(root):
        raise UsageError(f"{what}: {root} is not a directory")
    return root


def join_location(root: str, rel: str) -> str:
    """``root`` + ``/`` + ``rel`` for a local path or a URL root (no double slash)."""
    return root.rstrip("/") + "/" + rel.lstrip("/")


def decoded_location(uri: str) -> str:
    """A percent-encoded location (Delta's ``add.path`` when it is absolute) -> the
    reference we record, decoded exactly once.

    ``file:`` URLs become plain absolute paths; other URLs (``s3://...``) keep their
    scheme and authority with the path decoded. Iceberg locations are *not* passed
    here: Iceberg writes them literally, and the resolver (I4) reads them as they are.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return unquote(parts.path)
    return f"{scheme}://{parts.netloc}{unquote(parts.path)}"
