"""Helpers shared by fixtures and tests that must not import conftest."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest


def unavailable(msg: str) -> NoReturn:
    """A real component this test needs is missing: that is a failure, locally as in CI
    (an integration test that cannot run proves nothing). `.ci/run` installs them all."""
    pytest.fail(f"{msg} (integration tests must run: `bash .ci/run` installs what they need)")


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
