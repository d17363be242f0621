"""Shared fixtures: real services only (Postgres, Redis over TCP). Each test session gets its own
Postgres database and its own Redis key namespace, so parallel runs never see each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
import redis

PG_ADMIN_DSN = os.environ.get("ERP_SYNC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ERP_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _admin_conn() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    return conn


def _admin_execute(sql: str) -> None:
    """Run one statement outside any transaction (CREATE/DROP DATABASE refuse to run inside one)."""
    conn = _admin_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(prefix: str = "erp_test") -> str:
    """Create an empty database and return its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def drop_database(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh, empty Postgres database for one test."""
    dsn = create_database()
    yield dsn
    drop_database(dsn)


@pytest.fixture
def migrated_pg_dsn(pg_dsn: str) -> str:
    """A fresh database with every migration applied."""
    from erp_sync.store.migrations import apply_migrations

    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    return pg_dsn


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def redis_namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted after the test."""
    ns = f"erpsync-test-{uuid.uuid4().hex[:10]}"
    yield ns
    for key in redis_client.scan_iter(match=f"{ns}:*", count=1000):
        redis_client.delete(key)
