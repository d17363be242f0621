"""Fixtures shared by the integration tests of several folders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from tests.integration.dag_runs import airflow_home, dag_sftp  # noqa: F401  (fixtures)


@pytest.fixture
def conn(migrated_pg_dsn: str) -> Iterator[Any]:
    """A connection to a migrated database (the session's `migrated_pg_dsn`)."""
    connection = psycopg2.connect(migrated_pg_dsn)
    yield connection
    connection.close()
