"""Helpers shared by fixtures and tests that must not import conftest."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(msg: str) -> NoReturn:
    """A real component this test needs is missing. In CI that is a failure (an
    integration test that cannot run proves nothing); locally the skip says why."""
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI=true: integration tests must run)")
    pytest.skip(msg)
