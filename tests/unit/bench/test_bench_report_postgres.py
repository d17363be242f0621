"""The bench report names the stages that ran beside Postgres's autovacuum or its checkpoints."""

from __future__ import annotations

from typing import Any

from bench.report import _beside_autovacuum
from bench.run import postgres_activity


def test_only_stages_that_met_an_autovacuum_worker_are_listed() -> None:
    stages: list[dict[str, Any]] = [
        {"stage": "cold_sync", "autovacuum": {"before": [], "after": []}},
        {
            "stage": "delta",
            "autovacuum": {
                "before": ["erp_bench_x: autovacuum: VACUUM erp_staging.ar_invoices"],
                "after": [],
            },
        },
        {"stage": "floor_copy"},  # a run from before the field existed
    ]
    assert _beside_autovacuum(stages) == [
        "- delta: at start erp_bench_x: autovacuum: VACUUM erp_staging.ar_invoices, at end none"
    ]


def test_the_workers_are_read_from_this_machines_postgres() -> None:
    work, _ = postgres_activity()
    assert work != ["(not readable)"]  # the bench's admin DSN answers here
    assert all(": " in line for line in work)


def test_pipeline_stages_during_which_postgres_checkpointed_are_listed() -> None:
    from bench.report import _during_checkpoints

    stages = [
        {"stage": "delta", "postgres_checkpoints": {"checkpoints": 1, "buffers_checkpoint": 20_000}},
        {"stage": "delta_settled", "postgres_checkpoints": {"checkpoints": 0, "buffers_checkpoint": 0}},
        {"stage": "peer_dlt_cold", "postgres_checkpoints": {"checkpoints": 3, "buffers_checkpoint": 9}},
    ]
    assert _during_checkpoints(stages) == ["- delta: 1 checkpoint(s), 20,000 buffers written by them"]
    _, counters = postgres_activity()
    assert set(counters) == {
        "checkpoints",
        "buffers_checkpoint",
        "buffers_backend",
        "wal_records",
        "wal_fpi",
        "wal_bytes",
    }
    assert all(value >= 0 for value in counters.values())


def test_the_staging_tables_state_is_read_before_a_sync_stage() -> None:
    import uuid

    import psycopg2

    from bench.run import PG_ADMIN_DSN, staging_table_state

    name = f"erp_benchtest_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    assert dsn != PG_ADMIN_DSN
    try:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA erp_staging; CREATE TABLE erp_staging.ar_invoices (id int)")
            cur.execute("INSERT INTO erp_staging.ar_invoices SELECT generate_series(1, 50)")
            cur.execute("ANALYZE erp_staging.ar_invoices")
        conn.close()
        state = staging_table_state(dsn)
        assert set(state) == {"ar_invoices"}
        assert state["ar_invoices"]["reltuples"] == 50
        assert state["ar_invoices"]["last_analyze"] is not None
        assert staging_table_state(None) == {}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
