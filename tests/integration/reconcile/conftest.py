"""Fixtures for the reconcile integration tests.

`tests/conftest.py`'s `create_database` runs CREATE DATABASE inside `with conn:`, which psycopg2
wraps in a transaction block (refused by Postgres); until the lead fixes it, these tests create and
drop their own databases with a plain autocommit connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from tests.conftest import PG_ADMIN_DSN


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh, empty database for one test (overrides the shared fixture of the same name)."""
    name = f"erp_rec_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
