"""Running a DAG for real in tests: a migrated Airflow home (SQLite) per test module, the
connections as environment variables, and `airflow dags test` with the run's task states."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erp_sync.sandbox.testing import SandboxHandle
from tests.integration.backup.backup_helpers import SftpServer, free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
AIRFLOW = PROJECT_DIR / ".venv" / "bin" / "airflow"


@pytest.fixture(scope="module")
def dag_sftp() -> Iterator[SftpServer]:
    """An OpenSSH SFTP server for a DAG's backup tasks, one per test module."""
    server = SftpServer(port=free_port(), run_dir=PROJECT_DIR / ".run" / f"sftp-dag-{uuid.uuid4().hex[:8]}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    done = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=base_env(home), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return home


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_DIR / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        PYTHONPATH=str(PROJECT_DIR / "include"),
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def connections_env(
    home: Path, sandbox: SandboxHandle, dsn: str, ns: str, sftp: SftpServer | None
) -> dict[str, str]:
    env = base_env(home)
    env["AIRFLOW_CONN_SAAS_API"] = json.dumps(
        {"conn_type": "http", "host": sandbox.base_url, "password": sandbox.secret_key,
         "extra": {"auth": "secret_key", "timeout": 30}}
    )  # fmt: skip
    env["AIRFLOW_CONN_ERP_STAGING"] = json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
         "schema": dsn.rsplit("/", 1)[1]}
    )  # fmt: skip
    env["AIRFLOW_CONN_SYNC_STATE"] = json.dumps(
        {"conn_type": "redis", "host": "127.0.0.1", "port": 6379, "extra": {"db": 0, "namespace": ns}}
    )
    if sftp is not None:
        env["AIRFLOW_CONN_SFTP_BACKUP"] = sftp.connection_json()
    return env


def dag_test(env: dict[str, str], dag_id: str, conf: dict[str, Any]) -> tuple[dict[str, str], str]:
    """Run the DAG once; return {task_id: state} of that run (a mapped task's instances as
    `task_id[map_index]`) and its output."""
    done = subprocess.run(
        [str(AIRFLOW), "dags", "test", dag_id, "-c", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    rows = latest_run_rows(env, dag_id, "SELECT task_id, map_index, state FROM task_instance")
    states = {task if index < 0 else f"{task}[{index}]": state for task, index, state in rows}
    return states, done.stdout + done.stderr


def latest_run_rows(env: dict[str, str], dag_id: str, select: str, where: str = "") -> list[tuple[Any, ...]]:
    """`select ... WHERE where` (a query without its WHERE) for the DAG's latest run, from the Airflow DB."""
    latest = "run_id = (SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)"
    db = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    try:
        return db.execute(f"{select} WHERE {where + ' AND ' if where else ''}{latest}", (dag_id,)).fetchall()
    finally:
        db.close()
