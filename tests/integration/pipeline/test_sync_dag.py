"""The saas_to_erp_sync DAG run for real (`airflow dags test`): one mapped sync task per Stripe
stream under Airflow's task runner, the outbox backed up to SFTP, and staging equal to the sandbox's
truth, with each stream's extract progress in the task logs and no secret in them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_end_to_end import assert_conservation, assert_staging_equals_truth

from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from tests.integration.backup.backup_helpers import SftpServer
from tests.integration.dag_runs import connections_env, dag_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYNC_DAG_ID = "saas_to_erp_sync"
STRIPE_STREAMS = ["charges", "credit_notes", "customers", "invoices", "refunds"]


@pytest.fixture(scope="module")
def dag_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=160, seed=12) as handle:
        yield handle


def test_the_nightly_dag_syncs_every_stripe_stream_and_backs_the_pages_up(
    airflow_home: Path,
    dag_sandbox: SandboxHandle,
    migrated_pg_dsn: str,
    redis_namespace: str,
    dag_sftp: SftpServer,
) -> None:
    env = connections_env(airflow_home, dag_sandbox, migrated_pg_dsn, redis_namespace, dag_sftp)
    states, output = dag_test(env, SYNC_DAG_ID, {"full_refresh": True})

    syncs = {task: state for task, state in states.items() if task.startswith("sync_stream[")}
    assert len(syncs) == len(STRIPE_STREAMS) and set(syncs.values()) == {"success"}, (states, output[-3000:])
    assert states["backup_raw_pages"] == "success", (states, output[-3000:])
    # each stream's extract progress reached its task's log
    for stream in STRIPE_STREAMS:
        assert f"extract {stream}: pages=" in output, output[-3000:]
    assert_staging_equals_truth(migrated_pg_dsn, dag_sandbox)
    assert_conservation(migrated_pg_dsn)
    assert dag_sandbox.secret_key not in output
