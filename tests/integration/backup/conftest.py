"""A real OpenSSH SFTP server over TCP for the backup tests, started by `scripts/sftp_server.sh`.

One server per test session, on a free port, with its own keys and data under `.run/` (sshd's
StrictModes refuses key files below a world-writable directory such as /tmp). Each test gets its own
remote directory (the SFTP client `chdir`s into it), a fresh migrated database, and the Airflow
connection `sftp_backup` pointing at the server with its host key pinned.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from backup_helpers import (  # noqa: F401 -- the tests' helpers
    PG_ADMIN_DSN,
    PROJECT_DIR,
    SCRIPT,
    SftpServer,
    add_batch,
    another_database,
    free_port,
    open_sftp,
    outbox_state,
    stripe_list_body,
)

from erp_sync.store.ledger import RedisLedger


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    run_dir = PROJECT_DIR / ".run" / f"sftp-test-{uuid.uuid4().hex[:8]}"
    server = SftpServer(port=free_port(), run_dir=run_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def sftp_conn_env(sftp_server: SftpServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """`AIRFLOW_CONN_SFTP_BACKUP` for this test, as `scripts/sftp_server.sh env` prints it."""
    conn_json = sftp_server.connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_BACKUP", conn_json)
    return conn_json


@pytest.fixture
def remote_dir() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sftp(sftp_conn_env: str, remote_dir: str) -> Iterator[Any]:
    """A connected paramiko SFTPClient working inside this test's own remote directory."""
    client = open_sftp(sftp_conn_env)
    client.mkdir(remote_dir)
    client.chdir(remote_dir)
    yield client
    client.close()


@pytest.fixture
def empty_database(redis_client: Any) -> Iterator[tuple[Any, RedisLedger]]:
    """Another migrated database, empty, with its own ledger: where a disaster recovery restores to."""
    yield from another_database(redis_client)


@pytest.fixture
def db(migrated_pg_dsn: str) -> Iterator[Any]:
    conn = psycopg2.connect(migrated_pg_dsn)
    yield conn
    conn.close()
