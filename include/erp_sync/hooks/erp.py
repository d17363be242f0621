"""The ERP staging database and the sync-state Redis, from Airflow Connections.

The postgres provider hands out psycopg 3 connections when SQLAlchemy 2 is installed; the store
layer is written against psycopg2 (COPY via `copy_expert`), so this builds a psycopg2 connection from
the same Connection fields. Extras are read by allowlist, never passed through wholesale.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import redis
from airflow.sdk import BaseHook

PG_EXTRAS_ALLOWED = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name")
REDIS_EXTRAS_ALLOWED = ("db", "namespace", "ssl", "ssl_ca_certs")
DEFAULT_NAMESPACE = "erpsync"


def erp_connection(conn_id: str = "erp_staging") -> psycopg2.extensions.connection:
    conn = BaseHook.get_connection(conn_id)
    extras = conn.extra_dejson
    kwargs: dict[str, Any] = {k: extras[k] for k in PG_EXTRAS_ALLOWED if k in extras}
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", "saas-erp-sync")
    return psycopg2.connect(
        host=conn.host or "127.0.0.1",
        port=conn.port or 5432,
        user=conn.login or None,
        password=conn.password or None,
        dbname=conn.schema or "postgres",
        **kwargs,
    )


def migrate_erp_staging(conn_id: str = "erp_staging") -> list[str]:
    """Bring the ERP staging database's schemas up to date; the migrations applied now, by name.
    Idempotent: a new empty database gets every migration, an up-to-date one none."""
    from erp_sync.store.migrations import apply_migrations

    conn = erp_connection(conn_id)
    try:
        return apply_migrations(conn)
    finally:
        conn.close()


def sync_state(conn_id: str = "sync_state") -> tuple[redis.Redis, str]:
    """The Redis client for ledger, counters and rate budget, and the key namespace to use."""
    conn = BaseHook.get_connection(conn_id)
    extras = conn.extra_dejson
    client = redis.Redis(
        host=conn.host or "127.0.0.1",
        port=conn.port or 6379,
        db=int(extras.get("db", 0)),
        username=conn.login or None,
        password=conn.password or None,
        ssl=bool(extras.get("ssl", False)),
        ssl_ca_certs=extras.get("ssl_ca_certs"),
        socket_timeout=30,
        socket_connect_timeout=10,
    )
    return client, str(extras.get("namespace", DEFAULT_NAMESPACE))
