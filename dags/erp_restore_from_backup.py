"""Restore ERP staging from the verified SFTP backups. Wiring only: the logic is `erp_sync.backup`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

DOC = """
### Restore ERP staging from SFTP backups

Give **either** `run_id` (a sync run whose backup to restore) **or** a date range `date_from` /
`date_to` (YYYY-MM-DD, inclusive; either end may be left empty). The parameters are checked before
anything is read or written. Then the staging database's schemas are brought up to date, as the sync
does, so a disaster recovery can restore into a new, empty database.

The restore downloads every file the selected manifests name and checks each one's size and SHA-256
against its manifest **before writing anything**: one mismatch stops the run and names the file. The
pages then go through the sync's own path (record selection, validation, mapping, Redis dedupe, the
version-guarded upsert), so restoring over staging that already holds the data writes no row, and
restoring into emptied staging rebuilds it. A repair's tombstone batch is backed up as one document,
checked with the files before anything is written, and staged again through the repair's own rules:
records it proved gone stay deleted, with their evidence (ADR 0022). Runs may be restored one by one,
in any order: a tombstone whose record is not staged yet waits for it, and the restore that stages
the record tombstones it; the result's `tombstones_waiting` says how many still wait (ADR 0026).

With `restore_reports` (default true) the drift reports written on the selected days (or by the
selected run) come back too, so the Drift Reports page shows them as before: each report's files are
proven against the sidecar manifest uploaded with them and its JSON decoded and checked whole, with the
other files, **before anything is written**; each keeps its report id, version, totals, items and
backup path. A report the database holds already is counted and left; one whose id or version another
report holds here stops the restore before any write. Reports backed up before their sidecar existed
are counted and left on the server (ADR 0025). Connections: `sftp_backup`, `erp_staging`, `sync_state`.
"""


@dag(
    dag_id="erp_restore_from_backup",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["erp-sync", "backup", "restore"],
    doc_md=DOC,
    # The restore is idempotent (dedupe + version guard), so a retry after a dropped link is safe.
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "run_id": Param(None, type=["null", "string"], description="The sync run whose backup to restore."),
        "date_from": Param(None, type=["null", "string"], description="First day to restore (YYYY-MM-DD)."),
        "date_to": Param(None, type=["null", "string"], description="Last day to restore (YYYY-MM-DD)."),
        "restore_reports": Param(
            True,
            type="boolean",
            description="Also restore the drift reports written on those days (or by that run).",
        ),
    },
)
def erp_restore_from_backup() -> None:
    @task(retries=0, multiple_outputs=False)
    def check_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fail fast on a bad request: nothing is read or written before this passes."""
        from erp_sync.backup.report_restore import parse_restore_reports
        from erp_sync.backup.restore import validate_restore_params

        given = params or {}
        selection = validate_restore_params(given.get("run_id"), given.get("date_from"), given.get("date_to"))
        return {
            "run_id": selection.run_id,
            "date_from": selection.date_from.isoformat() if selection.date_from else None,
            "date_to": selection.date_to.isoformat() if selection.date_to else None,
            "restore_reports": parse_restore_reports(given.get("restore_reports")),
        }

    @task
    def apply_migrations() -> list[str]:
        """Bring the ERP staging database's schemas up to date: a disaster recovery restores into a new,
        empty database."""
        from erp_sync.hooks.erp import migrate_erp_staging

        return migrate_erp_staging()

    @task(multiple_outputs=False)
    def restore_from_sftp(selection: dict[str, Any]) -> dict[str, Any]:
        """Verify every backed-up file against its manifest, then reload through dedupe and load, then
        write the drift reports."""
        from erp_sync.backup.tasks import restore_task

        dag_run = get_current_context()["dag_run"]
        return restore_task(restore_run_id=f"restore__{dag_run.run_id}", **selection)

    selection = check_params()
    selection >> apply_migrations() >> restore_from_sftp(selection)


erp_restore_from_backup()
