"""The erp_rejections_replay DAG run for real (`airflow dags test`): quarantined records are replayed
through the normal load once their cause is fixed, and `backup_outbox` backs the replayed batches up
to SFTP in the same run, not at the next sync."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from test_end_to_end import assert_staging_equals_truth, sync_in_process

from erp_sync.core.money import ACCEPTED_CURRENCIES_ENV
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from tests.integration.backup.backup_helpers import SftpServer
from tests.integration.dag_runs import connections_env, dag_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "erp_rejections_replay"


@pytest.fixture(scope="module")
def dag_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=80, seed=21) as handle:
        yield handle


def _replay_pages(dsn: str) -> list[tuple[str | None, object]]:
    """(remote path, when its backup was verified) of each replayed batch's page in the outbox."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT remote_path, backed_up_at FROM erp_sync.outbox WHERE page_meta->>'mode' = 'replay'"
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_the_replay_dag_loads_the_fixed_rejections_and_backs_its_batches_up(
    airflow_home: Path,
    dag_sandbox: SandboxHandle,
    migrated_pg_dsn: str,
    redis_namespace: str,
    dag_sftp: SftpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ACCEPTED_CURRENCIES_ENV, "USD,EUR,GBP,JPY")  # the ERP has not enabled KWD yet
    first = sync_in_process(dag_sandbox, migrated_pg_dsn, redis_namespace)
    assert sum(result.rejected for result in first.values()) > 0, "the seeded data has KWD records"
    monkeypatch.delenv(ACCEPTED_CURRENCIES_ENV)  # ... and now it has

    env = connections_env(airflow_home, dag_sandbox, migrated_pg_dsn, redis_namespace, dag_sftp)
    states, output = dag_test(env, DAG_ID, {})

    assert states["replay"] == "success", (states, output[-3000:])
    assert states["backup_outbox"] == "success", (states, output[-3000:])
    pages = _replay_pages(migrated_pg_dsn)
    assert pages, "the replay wrote its batches' pages to the outbox"
    for remote_path, backed_up_at in pages:
        assert backed_up_at is not None and remote_path is not None
        assert (dag_sftp.data_dir / remote_path).is_file()
    assert_staging_equals_truth(migrated_pg_dsn, dag_sandbox)
