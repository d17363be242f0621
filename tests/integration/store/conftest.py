"""Fixtures for the store tests: a ledger in a unique namespace (the connection, `conn`, is
tests/integration/conftest.py's)."""

from __future__ import annotations

import pytest
import redis

from erp_sync.store.ledger import RedisLedger


@pytest.fixture
def ledger(redis_client: redis.Redis, redis_namespace: str) -> RedisLedger:
    return RedisLedger(redis_client, namespace=redis_namespace)
