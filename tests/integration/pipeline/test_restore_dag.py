"""The erp_restore_from_backup DAG run for real (`airflow dags test`) as a disaster recovery: the nightly
sync's backups on SFTP restored into a new database that has no schema yet, through a Redis namespace
that has no ledger, end with staging equal to the SaaS's truth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_end_to_end import assert_conservation, assert_staging_equals_truth

from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from tests.conftest import create_database, drop_database
from tests.integration.backup.backup_helpers import SftpServer
from tests.integration.dag_runs import connections_env, dag_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYNC_DAG_ID = "saas_to_erp_sync"
RESTORE_DAG_ID = "erp_restore_from_backup"


@pytest.fixture(scope="module")
def dag_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=60, seed=31) as handle:
        yield handle


@pytest.fixture
def new_database() -> Iterator[str]:
    """A database as a disaster recovery finds it: created, empty, no schema."""
    dsn = create_database()
    yield dsn
    drop_database(dsn)


def test_a_restore_into_a_new_database_without_a_schema_rebuilds_staging(
    airflow_home: Path,
    dag_sandbox: SandboxHandle,
    migrated_pg_dsn: str,
    new_database: str,
    redis_namespace: str,
    dag_sftp: SftpServer,
) -> None:
    first_day = datetime.now(UTC).date()
    synced_env = connections_env(airflow_home, dag_sandbox, migrated_pg_dsn, redis_namespace, dag_sftp)
    states, output = dag_test(synced_env, SYNC_DAG_ID, {"full_refresh": True})
    assert states["backup_raw_pages"] == "success", (states, output[-3000:])

    recovered_env = connections_env(
        airflow_home, dag_sandbox, new_database, f"{redis_namespace}:dr", dag_sftp
    )
    conf = {"date_from": first_day.isoformat(), "date_to": datetime.now(UTC).date().isoformat()}
    states, output = dag_test(recovered_env, RESTORE_DAG_ID, conf)

    assert states["restore_from_sftp"] == "success", (states, output[-3000:])
    assert states["apply_migrations"] == "success", (states, output[-3000:])
    assert_staging_equals_truth(new_database, dag_sandbox)
    assert_conservation(new_database)
