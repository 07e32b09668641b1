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
    """Open a local, S3, GCS or Azure store. Each cloud's client library is imported only
    for its own stores (a missing one is a usage error naming the extra to install)."""
    ref = url if isinstance(url, StoreRef) else parse_store(url)
    if ref.provider == "gcs":
        from cleanup.stores import gcs

        return gcs.GCSStore(ref, gcs.make_client(endpoint_url, what=f"store {ref.url}"),
                            endpoint_url)
    if ref.provider == "azure":
        from cleanup.stores.azure import AzureStore, make_service

        return AzureStore(ref, make_service(ref, endpoint_url, what=f"store {ref.url}"),
                          region=region)
    if ref.kind == "s3":
        from cleanup.stores.s3 import S3Store, make_client

        return S3Store(ref, make_client(endpoint_url, region, what=f"store {ref.url}"))
    from cleanup.stores.local import LocalStore

    return LocalStore(ref, region or "local", trust_mtime=trust_mtime)
