"""The Airflow hook over a real (env-var) Connection, and the Redis token bucket on the real Redis."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

from erp_sync.clients import BearerSecretKey, LocalTokenBucket, OAuth2ClientCredentials, RedisTokenBucket
from erp_sync.clients.auth import ApiKeyHeader
from erp_sync.clients.sources import MissingSourceConnectionError
from erp_sync.hooks.saas import SaaSApiHook, base_url_of, parse_timeout, source_clients
from erp_sync.streams import STREAMS

pytestmark = pytest.mark.integration


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", **fields}))


def test_hook_builds_an_oauth_client_from_allowlisted_extras(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    set_conn(
        monkeypatch,
        "saas_t1",
        host="api.example.test",
        port=8443,
        password="client-secret-xyz",
        extra={
            "auth": "oauth2",
            "token_url": "https://auth.example.test/token",
            "client_id": "cid",
            "scope": "read",
            "timeout": [2, 15],
            "page_size": 50,
            "max_rps": 4,
            "window_slices": 4,
            "verify": False,
        },
    )
    client = SaaSApiHook("saas_t1").get_client()
    out, err = capfd.readouterr()
    logged = out + err
    assert client.base_url == "https://api.example.test:8443"
    assert isinstance(client.auth, OAuth2ClientCredentials) and client.auth.scope == "read"
    assert client.timeout == (2.0, 15.0) and client.page_size == 50 and client.window_slices == 4
    assert isinstance(client.rate_limiter, LocalTokenBucket) and client.rate_limiter.rate_per_s == 4
    assert "ignoring unknown extras ['verify']" in logged  # never passed on (no verify=False sneaking in)
    assert "client-secret-xyz" not in logged + repr(client)


def test_hook_secret_key_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "saas_t2", host="https://api.example.test/", password="sk_test_abc")
    client = SaaSApiHook("saas_t2").get_client()
    assert isinstance(client.auth, BearerSecretKey) and client.window_slices == 1
    set_conn(
        monkeypatch,
        "saas_t3",
        host="http://127.0.0.1",
        port=9,
        password="k",
        extra={"auth": "api_key", "api_key_header": "X-Key"},
    )
    client = SaaSApiHook("saas_t3").get_client()
    assert isinstance(client.auth, ApiKeyHeader) and client.auth.header == "X-Key"
    assert client.base_url == "http://127.0.0.1:9"


def test_hook_uses_a_shared_redis_bucket_when_given_redis(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, redis_namespace: str
) -> None:
    set_conn(monkeypatch, "saas_t4", host="api.example.test", password="sk_x", extra={"max_rps": 2.5})
    client = SaaSApiHook("saas_t4").get_client(redis_client=redis_client, namespace=redis_namespace)
    assert isinstance(client.rate_limiter, RedisTokenBucket)
    assert client.rate_limiter.key == f"{redis_namespace}:ratelimit:saas_t4"


def test_hook_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "saas_t5", host="api.example.test", password="s", extra={"auth": "magic"})
    with pytest.raises(ValueError, match="auth"):
        SaaSApiHook("saas_t5").get_client()
    set_conn(monkeypatch, "saas_t6", host="api.example.test", password="s", extra={"auth": "oauth2"})
    with pytest.raises(ValueError, match="token_url"):
        SaaSApiHook("saas_t6").get_client()
    set_conn(monkeypatch, "saas_t7", host="api.example.test", password="s", extra={"window_slices": 2.5})
    with pytest.raises(ValueError, match="window_slices"):
        SaaSApiHook("saas_t7").get_client()


def test_source_clients_builds_each_source_system_s_client_from_its_connection_and_only_those(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_conn(monkeypatch, "saas_api", host="https://stripe.example.test", password="sk_test_abc")
    monkeypatch.delenv("AIRFLOW_CONN_ORDERS_API", raising=False)
    stripe_only = source_clients(["invoices", "charges"])
    assert stripe_only.source_systems == ["stripe"]  # no orders_api connection needed

    with pytest.raises(MissingSourceConnectionError) as raised:
        source_clients(["invoices", "orders"])
    assert raised.value.conn_id == "orders_api" and "streams orders (source system 'orders_api')" in str(
        raised.value
    )

    set_conn(
        monkeypatch, "orders_api", host="https://orders.example.test", password="client-secret",
        extra={"auth": "oauth2", "token_url": "https://orders.example.test/token", "client_id": "cid"},
    )  # fmt: skip
    both = source_clients(["invoices", "orders"])
    assert both.for_spec(STREAMS["orders"]).base_url == "https://orders.example.test"
    assert both.for_spec(STREAMS["invoices"]).base_url == "https://stripe.example.test"


def test_connection_field_helpers() -> None:
    assert base_url_of("api.stripe.com", None, None) == "https://api.stripe.com"
    assert base_url_of("localhost", "http", 8080) == "http://localhost:8080"
    assert base_url_of("http://localhost:8080", None, 8080) == "http://localhost:8080"
    assert (
        parse_timeout(None) == (5.0, 30.0)
        and parse_timeout(60) == (5.0, 60.0)
        and parse_timeout("3") == (3, 3)
    )


def test_redis_bucket_grants_the_burst_then_asks_to_wait(
    redis_client: redis.Redis, redis_namespace: str
) -> None:
    bucket = RedisTokenBucket(redis_client, f"{redis_namespace}:ratelimit:b1", rate_per_s=1, burst=3)
    waits = [bucket.try_acquire() for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 0 < waits[3] <= 1.0


def test_redis_bucket_is_shared_by_every_holder_of_the_key(
    redis_client: redis.Redis, redis_namespace: str
) -> None:
    """Two workers (two clients, two threads) hammering one key get exactly `burst` tokens together."""
    key = f"{redis_namespace}:ratelimit:shared"
    granted: list[int] = []

    def worker() -> None:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        bucket = RedisTokenBucket(client, key, rate_per_s=0.001, burst=10)
        granted.append(sum(1 for _ in range(20) if bucket.try_acquire() == 0))
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 10
    assert redis_client.ttl(key) > 0  # the bucket expires when idle; no stray keys forever
