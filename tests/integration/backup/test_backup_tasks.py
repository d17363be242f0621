"""The DAG-facing entry points, with every connection coming from Airflow Connections (env vars)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from backup_helpers import add_batch, outbox_state, stripe_list_body

from erp_sync.backup.tasks import backup_outbox_task, backup_report_task, restore_task

pytestmark = pytest.mark.integration


@pytest.fixture
def airflow_conns(
    sftp_conn_env: str, migrated_pg_dsn: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = migrated_pg_dsn.rsplit("/", 1)[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERP_STAGING",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "schema": database,
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SYNC_STATE",
        json.dumps(
            {
                "conn_type": "redis",
                "host": "127.0.0.1",
                "port": 6379,
                "extra": {"db": 0, "namespace": redis_namespace},
            }
        ),
    )


def _customers_count(db: Any) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM erp_staging.customers")
        value = int(cur.fetchone()[0])
    db.commit()
    return value


def test_backup_task_drains_and_restore_task_rebuilds(airflow_conns: None, db: Any) -> None:
    customers = [
        {"id": f"cus_T{i}", "object": "customer", "created": 1_750_000_000 + i, "name": f"Customer {i}",
         "email": f"c{i}@example.com", "currency": "eur"}
        for i in range(7)
    ]  # fmt: skip
    add_batch(db, batch_id=1, run_id="scheduled__tasks", pages=[stripe_list_body(customers[:4]),
                                                               stripe_list_body(customers[4:])])  # fmt: skip

    summary = backup_outbox_task(keep_days=30, outbox_keep_days=30)

    assert summary["drain"]["rows_marked"] == 2 and summary["drain"]["records"] == 7
    assert summary["outbox_pruned"] == {"pages": 0, "bytes": 0}  # backed up just now: kept
    assert summary["retention"]["anchor_run_id"] == "scheduled__tasks"
    assert summary["retention"]["deleted_runs"] == []
    assert all(path for _, path, _ in outbox_state(db))

    assert _customers_count(db) == 0  # the outbox rows were written directly; staging is empty
    restored = restore_task(run_id="scheduled__tasks", restore_run_id="restore__test")
    assert restored["new"] == 7 and restored["rows_by_table"] == {"customers": 7}
    assert _customers_count(db) == 7
    again = restore_task(run_id="scheduled__tasks", restore_run_id="restore__test2")
    assert again["rows_written"] == 0 and again["batches_already_present"] == 1


def test_report_task_uploads_and_bad_restore_params_fail_before_connecting(airflow_conns: None) -> None:
    uploaded = backup_report_task("drift-test.csv", b"stream,currency\n")
    assert uploaded["path"].startswith("reports/") and uploaded["path"].endswith("/drift-test.csv")
    assert uploaded["size"] == 16
    with pytest.raises(ValueError, match="not both"):
        restore_task(run_id="x", date_from="2026-01-01", erp_conn_id="does_not_exist")


@pytest.mark.parametrize("change", [{"no_host_key_check": "true", "host_key": None}, {"host_key": None}])
def test_backup_target_must_pin_the_host_key(
    sftp_conn_env: str, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any]
) -> None:
    from erp_sync.backup.errors import BackupError
    from erp_sync.backup.tasks import backup_target

    conn = json.loads(sftp_conn_env)
    conn["extra"].update(change)
    conn["extra"] = {k: v for k, v in conn["extra"].items() if v is not None}
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_BACKUP", json.dumps(conn))
    with pytest.raises(BackupError, match="host_key"), backup_target():
        pass
