"""Verified SFTP backups of raw extract pages and drift reports, retention, and restore.

Airflow-free: every function takes a paramiko `SFTPClient` (what `SFTPHook(...).get_conn()` returns)
and a DB-API connection. `erp_sync.backup.tasks` holds the thin entry points DAG tasks call.
"""

from erp_sync.backup.drain import DrainResult, backup_report, drain_outbox
from erp_sync.backup.errors import (
    BackupError,
    BackupTargetUnavailable,
    DrainBusy,
    ManifestError,
    OutboxCorruptError,
    PinnedHostKeyMismatch,
    RemoteVerificationError,
    RestoreIntegrityError,
)
from erp_sync.backup.remote import RemoteFile, connect, put_verified

__all__ = [
    "BackupError",
    "BackupTargetUnavailable",
    "DrainBusy",
    "DrainResult",
    "ManifestError",
    "OutboxCorruptError",
    "PinnedHostKeyMismatch",
    "RemoteFile",
    "RemoteVerificationError",
    "RestoreIntegrityError",
    "backup_report",
    "connect",
    "drain_outbox",
    "put_verified",
]
