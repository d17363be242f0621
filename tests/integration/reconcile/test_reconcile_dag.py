"""The erp_drift_reconciliation DAG run for real (`airflow dags test`) against Postgres, Redis, the
sandbox and an OpenSSH SFTP server: a bad period fails in check_params before any read; a clean period
succeeds and backs the report up; drift turns the reconcile task red and its log says what and where."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store import drift
from erp_sync.streams import STREAMS
from tests.integration.backup.backup_helpers import SftpServer
from tests.integration.dag_runs import connections_env, dag_test, latest_run_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "erp_drift_reconciliation"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=120, seed=4) as handle:
        yield handle


@pytest.fixture(scope="module")
def sftp(dag_sftp: SftpServer) -> SftpServer:
    return dag_sftp


def _report_link(env: dict[str, str]) -> str | None:
    """The "Drift report" extra link the worker stored for the latest run's reconcile task."""
    rows = latest_run_rows(
        env, DAG_ID, "SELECT value FROM xcom", where="task_id = 'reconcile' AND key = '_link_DriftReportLink'"
    )
    return json.loads(rows[0][0]) if rows else None


def _full_sync(sandbox: SandboxHandle, dsn: str, redis_client: Any, ns: str) -> datetime:
    end = datetime.now(UTC) + timedelta(days=1)
    conn = psycopg2.connect(dsn)
    try:
        for name in ("invoices", "charges", "credit_notes"):
            client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=100)
            sync_stream(
                spec=STREAMS[name], client=client, conn=conn, redis_client=redis_client, run_id="sync-dag",
                window=WindowRequest(full_refresh=True, window_end=end), namespace=ns,
            )  # fmt: skip
    finally:
        conn.close()
    return end


def test_impossible_period_fails_in_check_params_before_any_read(airflow_home, sandbox, migrated_pg_dsn):
    sandbox.admin.reset_counts()
    env = connections_env(airflow_home, sandbox, migrated_pg_dsn, "unused", None)
    states, output = dag_test(
        env, DAG_ID, {"period_start": "2026-11-10T00:00:00Z", "period_end": "2026-11-01T00:00:00Z"}
    )
    assert states["check_params"] == "failed"
    assert states["reconcile"] == "upstream_failed"
    assert states["backup_repair"] == "skipped"  # no repair asked for: nothing of this run to back up
    assert "period_end 2026-11-01T00:00:00+00:00 is before period_start 2026-11-10T00:00:00+00:00" in output
    assert sandbox.admin.request_counts()["total"] == 0


def test_dag_succeeds_within_tolerance_and_fails_red_on_drift(
    airflow_home, sandbox, sftp, migrated_pg_dsn, redis_client, redis_namespace
):
    end = _full_sync(sandbox, migrated_pg_dsn, redis_client, redis_namespace)
    env = connections_env(airflow_home, sandbox, migrated_pg_dsn, redis_namespace, sftp)
    conf = {"period_start": "2020-01-01T00:00:00Z", "period_end": end.isoformat()}

    states, output = dag_test(env, DAG_ID, conf)
    assert states["reconcile"] == "success", output[-3000:]
    assert states["backup_repair"] == "skipped"
    assert "within tolerance" in output
    assert all(state == "success" for task, state in states.items() if task.startswith("table_invariants."))
    conn = psycopg2.connect(migrated_pg_dsn)
    try:
        ok = drift.list_reports(conn)[0]
        assert ok["status"] == "OK" and ok["dag_id"] == DAG_ID
        assert _report_link(env) == f"/drift-reports/reports/{ok['report_id']}"
        backed_up = sftp.data_dir / ok["backup_path"]  # the JSON; CSV, totals CSV and HTML beside it
        assert json.loads(backed_up.read_bytes())["report"]["report_id"] == ok["report_id"]
        siblings = {p.suffix for p in backed_up.parent.glob(backed_up.name.removesuffix(".json") + "*")}
        assert siblings == {".json", ".csv", ".html"}
        with conn.cursor() as cur:  # drift that breaks no table invariant: a status and a foreign row
            cur.execute(
                "UPDATE erp_staging.ar_invoices SET status = 'void' WHERE source_id = "
                "(SELECT min(source_id) FROM erp_staging.ar_invoices WHERE status = 'open')"
            )
            cur.execute(
                """INSERT INTO erp_staging.ar_invoices (source_system, source_id, status, currency_code,
                       total_amount, amount_paid, amount_due, issued_at, row_sha256, source_version,
                       sync_batch_id)
                   VALUES ('stripe', 'in_foreign', 'open', 'KWD', 1.5, 0, 1.5, now(), repeat('f', 64), 1, 1)"""
            )
        conn.commit()
    finally:
        conn.close()

    states, output = dag_test(env, DAG_ID, conf)
    assert states["reconcile"] == "failed"
    assert "DRIFT beyond tolerance" in output
    assert "invoices KWD open total_amount: SaaS" in output and "difference 1.500" in output
    assert "'missing_in_saas': 1" in output and "'status_mismatch': 1" in output
    assert "make reconcile CONF=" in output
    conn = psycopg2.connect(migrated_pg_dsn)
    try:
        latest = drift.list_reports(conn)[0]
        assert latest["status"] == "DRIFT" and f"drift report {latest['report_id']}" in output
        assert _report_link(env) == f"/drift-reports/reports/{latest['report_id']}"  # even on a red task
    finally:
        conn.close()


def test_repair_over_max_tombstones_fails_red_before_any_write_and_within_it_tombstones(
    airflow_home, sandbox, sftp, migrated_pg_dsn, redis_client, redis_namespace
):
    """The tombstone params reach the repair (ADR 0020): over `max_tombstones` the reconcile task fails
    once, without a retry, saying which stream, how many and which param to raise; within it the rows
    the SaaS answers as gone are staged DELETED and the re-check is OK."""
    end = _full_sync(sandbox, migrated_pg_dsn, redis_client, redis_namespace)
    env = connections_env(airflow_home, sandbox, migrated_pg_dsn, redis_namespace, sftp)
    foreign = ["in_foreign_1", "in_foreign_2"]  # the SaaS answers 404 resource_missing for both
    conn = psycopg2.connect(migrated_pg_dsn)
    try:
        with conn.cursor() as cur:
            for source_id in foreign:
                cur.execute(
                    """INSERT INTO erp_staging.ar_invoices (source_system, source_id, status, currency_code,
                           total_amount, amount_paid, amount_due, issued_at, row_sha256, source_version,
                           sync_batch_id)
                       VALUES ('stripe', %s, 'open', 'USD', 2.5, 0, 2.5, now(), repeat('f', 64), 1, 1)""",
                    (source_id,),
                )
        conn.commit()
        conf = {"period_start": "2020-01-01T00:00:00Z", "period_end": end.isoformat(), "repair": True}

        states, output = dag_test(env, DAG_ID, {**conf, "max_tombstones": 1})
        assert states["reconcile"] == "failed", output[-3000:]
        tries = latest_run_rows(
            env, DAG_ID, "SELECT try_number FROM task_instance", where="task_id = 'reconcile'"
        )
        assert tries == [(1,)]
        assert "repair refused before any write: stream invoices: the SaaS answers 2 of the records" in output
        assert "raise max_tombstones for this run" in output
        assert _invoice_statuses(conn, foreign) == {"PENDING"}

        states, output = dag_test(env, DAG_ID, {**conf, "max_tombstones": 2})
        assert states["reconcile"] == "success", output[-3000:]
        assert _invoice_statuses(conn, foreign) == {"DELETED"}
        recheck = drift.list_reports(conn)[0]
        assert (
            recheck["status"] == "OK"
            and recheck["summary"]["repair"]["tombstones"]["invoices"]["tombstoned"] == 2
        )
        # The repair's tombstone document (ADR 0022) is on the SFTP server after this run, not the next sync's.
        assert states["backup_repair"] == "success", output[-3000:]
        [(remote_path, backed_up_at)] = _tombstone_documents(conn)
        assert backed_up_at is not None and (sftp.data_dir / remote_path).is_file()
    finally:
        conn.close()


def _tombstone_documents(conn: Any) -> list[tuple[str | None, Any]]:
    """(remote path, when its backup was verified) of each repair tombstone document in the outbox."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT remote_path, backed_up_at FROM erp_sync.outbox WHERE page_meta->>'mode' = 'repair_tombstones'"
        )
        rows = cur.fetchall()
    conn.rollback()
    return rows


def _invoice_statuses(conn: Any, ids: list[str]) -> set[str]:
    """The interface statuses staged for these invoices."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT interface_status FROM erp_staging.ar_invoices WHERE source_id = ANY(%s)", (ids,)
        )
        statuses = {status for (status,) in cur.fetchall()}
    conn.rollback()
    return statuses
