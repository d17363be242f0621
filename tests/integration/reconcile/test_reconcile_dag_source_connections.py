"""The erp_drift_reconciliation DAG run for real (`airflow dags test`) with two APIs, each behind its own
connection, as the sync reads them: Stripe's streams through `saas_api` (a secret-key sandbox) and the
orders API's through `orders_api` (an OAuth2 sandbox). Each stream is re-read through its own; a run
that names `orders` without the `orders_api` connection fails before any read, naming it, and a run of
Stripe streams alone does not need it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from erp_sync.clients.auth import BearerSecretKey, OAuth2ClientCredentials
from erp_sync.clients.client import SaaSClient
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store import drift
from erp_sync.streams import STREAMS
from tests.integration.dag_runs import connections_env, dag_test, latest_run_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "erp_drift_reconciliation"
ORDERS_ROUTE = "GET /api/v2/orders"
INVOICES_ROUTE = "GET /v1/invoices"


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=60, seed=21) as handle:
        yield handle


@pytest.fixture(scope="module")
def orders_api() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=60, seed=22, oauth=True) as handle:
        yield handle


def _orders_connection(sandbox: SandboxHandle) -> str:
    return json.dumps(
        {"conn_type": "http", "host": sandbox.base_url, "password": sandbox.client_secret,
         "extra": {"auth": "oauth2", "token_url": sandbox.token_url, "client_id": sandbox.client_id,
                   "timeout": 30}}
    )  # fmt: skip


def _env(airflow_home: Any, stripe_api: SandboxHandle, dsn: str, ns: str, orders: SandboxHandle | None):
    """The Stripe sandbox as `saas_api`; the orders sandbox as `orders_api`, or no such connection."""
    env = connections_env(airflow_home, stripe_api, dsn, ns, None)
    env.pop("AIRFLOW_CONN_ORDERS_API", None)  # scripts/env.sh's demo default must not stand in for it
    if orders is not None:
        env["AIRFLOW_CONN_ORDERS_API"] = _orders_connection(orders)
    return env


def _synced(
    stripe_api: SandboxHandle, orders_api: SandboxHandle, dsn: str, redis_client: Any, ns: str
) -> str:
    """Invoices from the Stripe sandbox and orders from the orders sandbox, each fully synced through its
    own client; returns the period's end."""
    end = datetime.now(UTC) + timedelta(days=1)
    clients = {
        "invoices": SaaSClient(stripe_api.base_url, BearerSecretKey(stripe_api.secret_key), page_size=100),
        "orders": SaaSClient(
            orders_api.base_url,
            OAuth2ClientCredentials(orders_api.token_url, orders_api.client_id, orders_api.client_secret),
            page_size=100,
        ),
    }
    conn = psycopg2.connect(dsn)
    try:
        for name, client in clients.items():
            sync_stream(
                spec=STREAMS[name], client=client, conn=conn, redis_client=redis_client,
                run_id=f"sync-{time.monotonic_ns()}", namespace=ns,
                window=WindowRequest(full_refresh=True, window_end=end),
            )  # fmt: skip
    finally:
        conn.close()
    return end.isoformat()


def _reset(*sandboxes: SandboxHandle) -> None:
    for sandbox in sandboxes:
        sandbox.admin.reset_counts()


def _routes(sandbox: SandboxHandle) -> dict[str, int]:
    return dict(sandbox.admin.request_counts()["by_route"])


def test_each_stream_is_re_read_through_its_own_source_system_s_connection(
    airflow_home, stripe_api, orders_api, migrated_pg_dsn, redis_client, redis_namespace
):
    end = _synced(stripe_api, orders_api, migrated_pg_dsn, redis_client, redis_namespace)
    env = _env(airflow_home, stripe_api, migrated_pg_dsn, redis_namespace, orders_api)
    _reset(stripe_api, orders_api)

    conf = {"period_start": "2020-01-01T00:00:00Z", "period_end": end, "streams": ["invoices", "orders"]}
    states, output = dag_test(env, DAG_ID, conf)

    assert states["reconcile"] == "success", output[-3000:]
    stripe_routes, orders_routes = _routes(stripe_api), _routes(orders_api)
    assert orders_routes.get(ORDERS_ROUTE, 0) >= 1 and ORDERS_ROUTE not in stripe_routes
    assert stripe_routes.get(INVOICES_ROUTE, 0) >= 1 and INVOICES_ROUTE not in orders_routes
    conn = psycopg2.connect(migrated_pg_dsn)
    try:
        report = drift.list_reports(conn)[0]
        assert report["status"] == "OK" and report["summary"]["records"]["orders"]["saas"] > 0
        counted = report["conservation"]["streams"]  # each stream's batches under its own source system
        assert sorted(counted) == ["invoices", "orders"] and report["conservation"]["balanced"]
        assert counted["orders"]["extracted"] == report["summary"]["records"]["orders"]["saas"]
    finally:
        conn.close()


def test_orders_without_their_connection_fail_before_any_read_and_stripe_alone_needs_none(
    airflow_home, stripe_api, orders_api, migrated_pg_dsn, redis_client, redis_namespace
):
    end = _synced(stripe_api, orders_api, migrated_pg_dsn, redis_client, redis_namespace)
    env = _env(airflow_home, stripe_api, migrated_pg_dsn, redis_namespace, None)
    _reset(stripe_api, orders_api)

    conf = {"period_start": "2020-01-01T00:00:00Z", "period_end": end, "streams": ["invoices", "orders"]}
    states, output = dag_test(env, DAG_ID, conf)

    assert states["reconcile"] == "failed", output[-3000:]
    assert (
        "streams orders (source system 'orders_api') are read through the connection 'orders_api'" in output
    )
    tries = latest_run_rows(
        env, DAG_ID, "SELECT try_number FROM task_instance", where="task_id = 'reconcile'"
    )
    assert tries == [(1,)]  # a configuration verdict: no retry
    assert stripe_api.admin.request_counts()["total"] == 0 and orders_api.admin.request_counts()["total"] == 0

    states, output = dag_test(env, DAG_ID, {**conf, "streams": ["invoices"]})
    assert states["reconcile"] == "success", output[-3000:]
    assert _routes(stripe_api).get(INVOICES_ROUTE, 0) >= 1 and orders_api.admin.request_counts()["total"] == 0
