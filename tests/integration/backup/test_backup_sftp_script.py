"""scripts/sftp_server.sh: idempotent start, honest status, and an `env` line whose pinned key is the
server's real host key."""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from typing import Any

import paramiko
import pytest
from backup_helpers import PROJECT_DIR, SftpServer, free_port

pytestmark = pytest.mark.integration


def test_second_start_is_a_no_op_and_status_reports_the_server(sftp_server: SftpServer) -> None:
    pid_before = (sftp_server.run_dir / "sshd.pid").read_text().strip()
    again = sftp_server.run("start")
    assert again.returncode == 0 and "already running" in again.stderr
    assert (sftp_server.run_dir / "sshd.pid").read_text().strip() == pid_before
    status = sftp_server.run("status")
    assert (
        status.returncode == 0
        and f"pid={pid_before}" in status.stdout
        and str(sftp_server.port) in status.stdout
    )


def test_env_pins_the_key_the_server_presents(sftp_server: SftpServer) -> None:
    conn = json.loads(sftp_server.connection_json())
    assert (conn["conn_type"], conn["host"], conn["port"], conn["login"]) == (
        "sftp", "127.0.0.1", sftp_server.port, "erpbackup")  # fmt: skip
    transport = paramiko.Transport(("127.0.0.1", sftp_server.port))
    try:
        transport.start_client(timeout=10)
        presented = transport.get_remote_server_key()
    finally:
        transport.close()
    assert conn["extra"]["host_key"] == f"{presented.get_name()} {presented.get_base64()}"
    assert conn["extra"]["key_file"].startswith(str(sftp_server.run_dir))


def test_stopped_server_reports_stopped_and_refuses_connections() -> None:
    server = SftpServer(port=free_port(), run_dir=PROJECT_DIR / ".run" / f"sftp-test-{uuid.uuid4().hex[:8]}")
    try:
        server.start()
        server.stop()
        status: Any = server.run("status")
        assert status.returncode == 3 and "stopped" in status.stdout
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert server.run("stop").returncode == 0  # stopping twice is fine
    finally:
        server.run("stop")
        shutil.rmtree(server.run_dir, ignore_errors=True)
