"""Helpers shared by fixtures and tests that must not import conftest."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest


def unavailable(msg: str) -> NoReturn:
    """A real component this test needs is missing. In CI that is a failure (an
    integration test that cannot run proves nothing); locally the skip says why."""
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI=true: integration tests must run)")
    pytest.skip(msg)


PG_HOST = "127.0.0.1:5432"


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 (URL), dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(f"postgresql://postgres@{PG_HOST}/postgres", autocommit=True,
                                connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL server at {PG_HOST} is unreachable: "
                    f"{str(exc).strip().splitlines()[0]}")
    name = f"cleanup_test_{uuid.uuid4().hex}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{PG_HOST}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
