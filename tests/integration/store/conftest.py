"""Fixtures for the store tests: a migrated database, a connection, a ledger in a unique namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis
from store_factories import drop_database, make_database

from erp_sync.store.ledger import RedisLedger
from erp_sync.store.migrations import apply_migrations


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    dsn = make_database()
    yield dsn
    drop_database(dsn)


@pytest.fixture
def migrated_pg_dsn(pg_dsn: str) -> str:
    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    return pg_dsn


@pytest.fixture
def conn(migrated_pg_dsn: str) -> Iterator[Any]:
    connection = psycopg2.connect(migrated_pg_dsn)
    yield connection
    connection.close()


@pytest.fixture
def ledger(redis_client: redis.Redis, redis_namespace: str) -> RedisLedger:
    return RedisLedger(redis_client, namespace=redis_namespace)
