"""Fixtures for the store tests: a migrated database, a connection, a ledger in a unique namespace.

`pg_dsn` is redefined here because the shared one opens its admin connection with `with conn:`,
which in psycopg2 2.9 starts a transaction even in autocommit mode (CREATE DATABASE then fails).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis

from erp_sync.store.ledger import RedisLedger
from erp_sync.store.migrations import apply_migrations

PG_ADMIN_DSN = os.environ.get("ERP_SYNC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")

pytestmark = pytest.mark.integration


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def make_database() -> str:
    name = f"erp_store_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def drop_database(dsn: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


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


REDIS_URL = os.environ.get("ERP_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")
