"""A real Airflow api-server with the Drift reports plugin, for the plugin and browser tests.

One server per pytest process (started on first use, stopped at session end): SQLite metadata under
a temp AIRFLOW_HOME, SimpleAuthManager with fixed passwords, the repo's `plugins/` folder, and the
`erp_staging` connection pointing at a fresh, migrated and seeded Postgres database.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg2

from tests.browser.seed import Seeded, apply_schema, seed_reports

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")
USERS = {
    "admin": ("admin", "admin-pw-test"),
    "auditor": ("viewer", "auditor-pw-test"),
    "outsider": ("", "out-pw"),
    # Per-DAG access (tests/browser/scoped_auth_manager.py): the reconciliation DAG only / another DAG only.
    "recon_auditor": ("viewer", "recon-pw-test"),
    "sync_operator": ("viewer", "sync-pw-test"),
}
START_DEADLINE_S = 180


@dataclass
class AirflowServer:
    base_url: str
    home: Path
    pg_dsn: str
    seeded: Seeded
    process: subprocess.Popen[bytes]
    env: dict[str, str]  # the server's environment, for CLI commands against the same metadata DB

    def password(self, user: str) -> str:
        return USERS[user][1]

    def token(self, user: str = "auditor") -> str:
        resp = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": user, "password": self.password(user)},
            timeout=30,
        )
        resp.raise_for_status()
        return resp.json()["access_token"]

    def log_tail(self, chars: int = 4000) -> str:
        log = self.home / "api-server.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""


PG_ADMIN_DSN = os.environ.get("ERP_SYNC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(sql: str) -> None:
    # Not `with conn:` -- psycopg2 2.9 opens a transaction there even in autocommit mode, and
    # CREATE/DROP DATABASE refuse to run inside one (tests/conftest.py's helpers trip on this).
    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(prefix: str) -> str:
    """An empty database of our own; its DSN."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    _admin(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def drop_database(dsn: str) -> None:
    """Drop a database this module created."""
    _admin(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, pg_dsn: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    # plugins/ is deliberately not on PYTHONPATH: Airflow adds its plugins folder to sys.path itself,
    # as in `make ui` and the Astro image, and the test should prove that is enough.
    pythonpath = os.pathsep.join([str(REPO / "include"), str(REPO)])
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PYTHONPATH": pythonpath,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__AUTH_MANAGER": "tests.browser.scoped_auth_manager.PerDagSimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, (r, _) in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_ERP_STAGING": pg_dsn,
            "_AIRFLOW_PROCESS_CONTEXT": "server",
        }
    )
    return env


def _wait_until_up(server: AirflowServer) -> None:
    """Poll the health endpoint until the server answers (a start-up deadline, not a test assertion)."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"api-server exited early:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/api/v2/monitor/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"api-server did not come up in {START_DEADLINE_S}s:\n{server.log_tail()}")


def start_server(*, big_items: int = 10_000) -> AirflowServer:
    """Create and seed the database, migrate Airflow's metadata, start `airflow api-server`."""
    home = Path(tempfile.mkdtemp(prefix="erp-ui-airflow-"))
    (home / "dags").mkdir()
    pg_dsn = create_database("erp_ui_test")
    try:
        with psycopg2.connect(pg_dsn) as conn:
            apply_schema(conn)
            seeded = seed_reports(conn, big_items=big_items)
        conn.close()
        port = free_port()
        env = _env(home, pg_dsn, port)
        passwords = {user: pw for user, (_, pw) in USERS.items()}
        (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(passwords) + "\n")
        subprocess.run(
            [str(AIRFLOW_BIN), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600
        )
        log = (home / "api-server.log").open("wb")
        process = subprocess.Popen(
            [str(AIRFLOW_BIN), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        drop_database(pg_dsn)
        shutil.rmtree(home, ignore_errors=True)
        raise
    server = AirflowServer(f"http://127.0.0.1:{port}", home, pg_dsn, seeded, process, env)
    try:
        _wait_until_up(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: AirflowServer) -> None:
    """Stop the api-server's whole process group (it forks workers), then drop its database."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    drop_database(server.pg_dsn)
    if not os.environ.get("ERP_SYNC_KEEP_AIRFLOW_HOME"):
        shutil.rmtree(server.home, ignore_errors=True)


_shared: AirflowServer | None = None


def shared_server(request) -> AirflowServer:  # type: ignore[no-untyped-def]
    """The process-wide server; the first session-scoped fixture that asks registers its teardown."""
    global _shared
    if _shared is None:
        _shared = start_server()
        server = _shared

        def _stop() -> None:
            global _shared
            stop_server(server)
            _shared = None

        request.session.config.add_cleanup(_stop)
    return _shared
