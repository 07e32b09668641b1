"""Stores: where files live. :func:`open_store` picks the adapter by URL scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cleanup.core.paths import StoreRef, parse_store

if TYPE_CHECKING:
    from cleanup.stores.base import Store


def open_store(
    url: str | StoreRef,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    trust_mtime: bool = False,
) -> Store:
    """Open a local or S3 store. boto3 is imported only for S3 stores."""
    ref = url if isinstance(url, StoreRef) else parse_store(url)
    if ref.kind == "s3":
        from cleanup.stores.s3 import S3Store, make_client

        return S3Store(ref, make_client(endpoint_url, region, what=f"store {ref.url}"))
    from cleanup.stores.local import LocalStore

    return LocalStore(ref, region or "local", trust_mtime=trust_mtime)
