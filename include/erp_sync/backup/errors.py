"""Backup and restore errors: each says which server, which file and what to do about it."""

from __future__ import annotations

from typing import Any

import paramiko


class BackupError(RuntimeError):
    """Base class: the backup or restore could not complete; nothing unproven was marked or written."""


class BackupTargetUnavailable(BackupError):
    """The SFTP server could not be reached or an SFTP operation failed (network, auth, disk, ...)."""


class RemoteVerificationError(BackupError):
    """A file read back from the server does not hash to what was uploaded."""


class DrainBusy(BackupError):
    """Another drain of the same database is running; this one did nothing."""


class OutboxCorruptError(BackupError):
    """A stored page no longer matches its own SHA-256 in the outbox: refuse to back up a bad copy."""


class ManifestError(BackupError):
    """A manifest is missing, unreadable or not a manifest this code understands."""


class RestoreIntegrityError(BackupError):
    """A downloaded file does not match its manifest; the restore stops before writing anything."""


class PinnedHostKeyMismatch(paramiko.BadHostKeyException):
    """The server's host key is not the one pinned in the connection: refuse, never re-learn it.

    Still a `paramiko.BadHostKeyException` (so callers catching paramiko's class keep working), with
    a message that says what happened and how to fix it.
    """

    def __init__(self, target: str, hostname: str, got_key: Any, expected_key: Any) -> None:
        super().__init__(hostname, got_key, expected_key)
        self.target = target

    def __str__(self) -> str:
        return (
            f"SFTP server {self.target} presented host key {_describe(self.key)}, but the connection pins "
            f"{_describe(self.expected_key)}. Refusing to connect: either someone is intercepting the "
            "connection or the server's key was regenerated. Verify the new key out of band, then update "
            "the connection's `host_key` extra."
        )


def _describe(key: Any) -> str:
    try:
        return f"{key.get_name()} {key.fingerprint}"
    except Exception:  # a key object without a fingerprint still gets a message
        return repr(key)


class ReportRestoreConflict(BackupError):
    """A backed-up drift report's id or version is held by another report in the target database; the
    restore stops before writing anything (ADR 0025)."""
