"""Entry points for DAG tasks: build the connections from Airflow Connections, call the backup code.

This module imports Airflow only inside its functions, so `erp_sync.backup` stays importable (and
testable) without Airflow; the DAG files call these from their task bodies.

Connections: `sftp_backup` (sftp; key-based auth, host key pinned in the extras -- the provider's
`SFTPHook` refuses any other key), `erp_staging` (postgres) and `sync_state` (redis), the latter two
built by `erp_sync.hooks.erp` as psycopg2 / redis clients like the sync's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from erp_sync.backup.drain import backup_report, drain_outbox
from erp_sync.backup.errors import BackupError
from erp_sync.backup.remote import connect
from erp_sync.backup.report_restore import parse_restore_reports
from erp_sync.backup.restore import restore, validate_restore_params
from erp_sync.backup.retention import apply_retention
from erp_sync.store.outbox import prune_contents

log = logging.getLogger(__name__)

KEEP_DAYS_VARIABLE = "erp_sync_backup_keep_days"
DEFAULT_KEEP_DAYS = 30
# How long a page's content stays in the outbox after its SFTP copy was verified.
OUTBOX_KEEP_DAYS_VARIABLE = "erp_sync_outbox_keep_days"


def require_pinned_host_key(hook: Any, conn_id: str) -> None:
    """Backups go only to a server whose host key the connection pins: never learned, never skipped."""
    if getattr(hook, "no_host_key_check", False) or getattr(hook, "allow_host_key_change", False):
        raise BackupError(
            f"connection {conn_id!r} disables host key checking (no_host_key_check/allow_host_key_change); "
            "backups need the server's host key pinned in the `host_key` extra"
        )
    if getattr(hook, "host_key", None) is None:
        raise BackupError(
            f"connection {conn_id!r} has no `host_key` extra; pin the server's key "
            "(e.g. `ssh-ed25519 AAAA...`, as `scripts/sftp_server.sh env` prints it)"
        )


@contextmanager
def backup_target(sftp_conn_id: str = "sftp_backup") -> Iterator[Any]:
    """A connected `SFTPClient` for `sftp_conn_id`, closed afterwards; clear errors when it fails."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    hook = SFTPHook(ssh_conn_id=sftp_conn_id)
    require_pinned_host_key(hook, sftp_conn_id)
    sftp = connect(hook.get_conn, host=hook.remote_host, port=hook.port)
    try:
        yield sftp
    finally:
        hook.close_conn()
        if hook.client is not None:
            hook.client.close()


def keep_days_setting(variable: str = KEEP_DAYS_VARIABLE) -> int:
    """Days from an Airflow Variable (default 30): backup retention (`erp_sync_backup_keep_days`) or
    how long the outbox keeps a backed-up page's content (`erp_sync_outbox_keep_days`)."""
    from airflow.sdk import Variable

    raw = Variable.get(variable, default=str(DEFAULT_KEEP_DAYS))
    try:
        days = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Variable {variable} must be a whole number of days, not {raw!r}") from None
    if days < 1:
        raise ValueError(f"Variable {variable} must be at least 1, not {days}")
    return days


def backup_outbox_task(
    *,
    sftp_conn_id: str = "sftp_backup",
    erp_conn_id: str = "erp_staging",
    keep_days: int | None = None,
    apply_retention_after: bool = True,
    outbox_keep_days: int | None = None,
) -> dict[str, Any]:
    """Drain the outbox to SFTP (verified, then marked), apply retention, then prune the outbox of
    page contents backed up more than `outbox_keep_days` ago; a small summary for XCom."""
    from erp_sync.hooks.erp import erp_connection

    days = keep_days if keep_days is not None else keep_days_setting()
    outbox_days = (
        outbox_keep_days if outbox_keep_days is not None else keep_days_setting(OUTBOX_KEEP_DAYS_VARIABLE)
    )
    conn = erp_connection(erp_conn_id)
    try:
        with backup_target(sftp_conn_id) as sftp:
            drained = drain_outbox(sftp, conn)
            log.info("backup: %s", drained.as_dict())
            summary: dict[str, Any] = {"drain": drained.as_dict()}
            if apply_retention_after:
                kept = apply_retention(sftp, conn, days)
                log.info("retention (%d days): %s", days, kept.as_dict())
                summary["retention"] = kept.as_dict()
        pruned = prune_contents(conn, outbox_days)
        conn.commit()
        log.info(
            "outbox: cleared the content of %d pages backed up over %d days ago", pruned.pages, outbox_days
        )
        summary["outbox_pruned"] = pruned.as_dict()
    finally:
        conn.close()
    return summary


def backup_report_task(name: str, data: bytes, *, sftp_conn_id: str = "sftp_backup") -> dict[str, Any]:
    """Upload one drift report file to `reports/{YYYY}/{MM}/{name}`, verified; its path, size, SHA-256."""
    with backup_target(sftp_conn_id) as sftp:
        remote = backup_report(sftp, name, data)
    return {"path": remote.path, "size": remote.size, "sha256": remote.sha256}


def restore_task(
    *,
    run_id: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    restore_run_id: str | None = None,
    restore_reports: bool = True,
    sftp_conn_id: str = "sftp_backup",
    erp_conn_id: str = "erp_staging",
    state_conn_id: str = "sync_state",
) -> dict[str, Any]:
    """Restore a run or a date range from SFTP into `erp_staging`, with its drift reports unless
    `restore_reports` is false (see `erp_sync.backup.restore`)."""
    from erp_sync.hooks.erp import erp_connection, sync_state
    from erp_sync.store.ledger import RedisLedger

    validate_restore_params(run_id, date_from, date_to)  # before connecting to anything
    parse_restore_reports(restore_reports)
    redis_client, namespace = sync_state(state_conn_id)
    conn = erp_connection(erp_conn_id)
    try:
        with backup_target(sftp_conn_id) as sftp:
            result = restore(
                sftp,
                conn,
                RedisLedger(redis_client, namespace=namespace),
                run_id=run_id,
                date_from=date_from,
                date_to=date_to,
                restore_run_id=restore_run_id,
                restore_reports=restore_reports,
            )
    finally:
        conn.close()
        redis_client.close()
    log.info("restore: %s", result.as_dict())
    return result.as_dict()
