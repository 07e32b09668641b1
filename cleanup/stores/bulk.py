"""Optional store capabilities for moving many objects at once (issue 18).

Ask for one with :func:`cleanup.stores.base.capability`; a store without it is driven
key by key through the :class:`~cleanup.stores.base.Store` methods, with the same
outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class BulkRestoreStore(Protocol):
    """Optional: :meth:`Store.restore` of many keys at once (S3: one listing of the keys
    and one of their quarantine copies per 1,000 keys, concurrent conditional copies,
    one DeleteObjects of the restored copies)."""

    def restore_many(self, plan_id: str, keys: Sequence[str]) -> dict[str, str]:
        """:meth:`Store.restore`'s outcome for every key of ``keys`` (``restored``,
        ``exists``, ``not-quarantined``); never overwrites, idempotent. What cannot be
        done is raised as :class:`cleanup.errors.StoreError` after the others are done."""
        ...
