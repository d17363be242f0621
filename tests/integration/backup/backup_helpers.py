"""Helpers of the backup tests: a real OpenSSH SFTP server over TCP (`scripts/sftp_server.sh`) and outbox rows.

One server per test session, on a free port, with its own keys and data under `.run/` (sshd's
StrictModes refuses key files below a world-writable directory such as /tmp). Each test gets its own
remote directory (the SFTP client `chdir`s into it), a fresh migrated database, and the Airflow
connection `sftp_backup` pointing at the server with its host key pinned.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from erp_sync.store.ledger import RedisLedger
from erp_sync.store.migrations import apply_migrations
from tests.conftest import create_database, drop_database

PROJECT_DIR = Path(__file__).resolve().parents[3]
PG_ADMIN_DSN = os.environ.get("ERP_SYNC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
SCRIPT = PROJECT_DIR / "scripts" / "sftp_server.sh"


def another_database(redis_client: Any) -> Iterator[tuple[Any, RedisLedger]]:
    """A new migrated database and a fresh ledger namespace, dropped and cleared afterwards."""
    dsn = create_database()
    conn = psycopg2.connect(dsn)
    apply_migrations(conn)
    namespace = f"erpsync-test-{uuid.uuid4().hex[:10]}"
    yield conn, RedisLedger(redis_client, namespace=namespace)
    conn.close()
    drop_database(dsn)
    for key in redis_client.scan_iter(match=f"{namespace}:*", count=1000):
        redis_client.delete(key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SftpServer:
    port: int
    run_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "ERP_SFTP_PORT": str(self.port), "ERP_SFTP_RUN_DIR": str(self.run_dir)}

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def start(self) -> None:
        done = self.run("start")
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        done = self.run("stop")
        assert done.returncode == 0, done.stderr

    def connection_json(self) -> str:
        done = self.run("env")
        assert done.returncode == 0, done.stderr
        line = done.stdout.strip()
        prefix = "AIRFLOW_CONN_SFTP_BACKUP="
        assert line.startswith(prefix), line
        return line[len(prefix) :].strip("'")

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"


def open_sftp(conn_json: str, **hook_kwargs: Any) -> Any:
    """Connect the way the DAG does: `SFTPHook(ssh_conn_id="sftp_backup")` through `backup.connect`."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    from erp_sync.backup.remote import connect

    os.environ["AIRFLOW_CONN_SFTP_BACKUP"] = conn_json
    hook = SFTPHook(ssh_conn_id="sftp_backup", **hook_kwargs)
    return connect(hook.get_conn, host=hook.remote_host, port=hook.port)


# ---- building outbox content the way the loader does ---------------------------------------------


def stripe_list_body(records: list[dict[str, Any]], url: str = "/v1/customers") -> bytes:
    return json.dumps({"object": "list", "url": url, "has_more": False, "data": records}).encode()


def add_batch(
    conn: Any,
    *,
    batch_id: int,
    run_id: str,
    stream: str = "customers",
    source_system: str = "stripe",
    pages: list[bytes],
    created_at: datetime | None = None,
    cursor_before: datetime | None = None,
    cursor_after: datetime | None = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> list[int]:
    """A committed sync_batches row and its outbox pages (what a load would have written)."""
    created = created_at or datetime.now(UTC)
    digest = hashlib.sha256()
    for body in pages:
        digest.update(body)
    records = [len(json.loads(b).get("data", [])) for b in pages]
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO erp_sync.sync_batches (batch_id, run_id, source_system, stream, window_start,"
            " window_end, input_sha256, extracted, loaded_new, loaded_changed, skipped_unchanged, rejected,"
            " cursor_before, cursor_after, committed_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,0,0,0,%s,%s,%s)",
            (
                batch_id,
                run_id,
                source_system,
                stream,
                window_start,
                window_end,
                digest.hexdigest(),
                sum(records),
                sum(records),
                cursor_before,
                cursor_after,
                created,
            ),
        )
        ids = []
        for page_no, body in enumerate(pages, start=1):
            cur.execute(
                "INSERT INTO erp_sync.outbox (batch_id, run_id, source_system, stream, page_no, url,"
                " page_meta, record_count, content_gzip, sha256, created_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " RETURNING outbox_id",
                (
                    batch_id,
                    run_id,
                    source_system,
                    stream,
                    page_no,
                    f"https://api.example/v1/{stream}?page={page_no}",
                    json.dumps({"mode": "full", "default_version": 1_700_000_000}),
                    records[page_no - 1],
                    psycopg2.Binary(gzip.compress(body, mtime=0)),
                    hashlib.sha256(body).hexdigest(),
                    created,
                ),
            )
            ids.append(cur.fetchone()[0])
    conn.commit()
    return ids


def outbox_state(conn: Any) -> list[tuple[int, str | None, str | None]]:
    """(outbox_id, remote_path, backup_sha256) per row, in id order; backed_up_at implied by path."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT outbox_id, remote_path, backup_sha256, backed_up_at IS NOT NULL FROM erp_sync.outbox"
            " ORDER BY outbox_id"
        )
        rows = cur.fetchall()
    conn.commit()
    for _, path, _, marked in rows:
        assert (path is not None) == marked
    return [(r[0], r[1], r[2].strip() if r[2] else None) for r in rows]
