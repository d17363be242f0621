"""Fixtures for the store tests: a connection to a migrated database (the shared `migrated_pg_dsn`)
and a ledger in a unique namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis

from erp_sync.store.ledger import RedisLedger


@pytest.fixture
def conn(migrated_pg_dsn: str) -> Iterator[Any]:
    connection = psycopg2.connect(migrated_pg_dsn)
    yield connection
    connection.close()


@pytest.fixture
def ledger(redis_client: redis.Redis, redis_namespace: str) -> RedisLedger:
    return RedisLedger(redis_client, namespace=redis_namespace)
