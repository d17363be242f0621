"""Nightly SaaS → ERP staging sync. Wiring only: the logic lives in `erp_sync`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from erp_sync.assets import STAGING_ASSET
from erp_sync.operators.sync import SaaSStreamSyncOperator
from erp_sync.streams import STREAMS

DOC = """
### SaaS → ERP staging sync

Extracts each stream's deltas from the SaaS (`saas_api`), validates and maps them to the ERP's staging
schema, dedupes against the Redis ledger (`sync_state`) and loads them into `erp_staging` in ACID
batches, exactly once in effect. Raw pages go to an outbox that `backup_raw_pages` drains to SFTP
(`sftp_backup`). A finished sync updates the `erp_staging` asset, which schedules
`erp_drift_reconciliation`.

**Params** (all optional): `streams` (default: all), `full_refresh`, `dry_run` (counts and samples, writes
nothing), `window_start` / `window_end` (ISO-8601 with timezone; manual runs only). A scheduled run syncs
`[cursor - 10 min, data_interval_end)`; a manual run without a window syncs from the cursor to now.
"""

STREAM_NAMES = sorted(STREAMS)
# The nightly default: the Stripe preset. Streams of other sources (e.g. `orders`, served by the
# `orders_api` connection) run when named in `streams`.
DEFAULT_STREAMS = sorted(name for name, spec in STREAMS.items() if spec.source_system == "stripe")


@dag(
    dag_id="saas_to_erp_sync",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["erp-sync", "stripe", "nightly"],
    doc_md=DOC,
    default_args={
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
    },
    params={
        "streams": Param(
            [],
            type="array",
            items={"type": "string", "enum": STREAM_NAMES},
            description="Streams to sync; empty means the Stripe preset.",
        ),
        "full_refresh": Param(False, type="boolean", description="Re-list everything by created window."),
        "dry_run": Param(False, type="boolean", description="Report what would change; write nothing."),
        "window_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Manual window start (ISO-8601 with timezone).",
        ),
        "window_end": Param(
            None, type=["null", "string"], format="date-time", description="Manual window end (exclusive)."
        ),
    },
)
def saas_to_erp_sync() -> None:
    @task(retries=0)
    def check_params(params: dict[str, Any] | None = None) -> list[str]:
        """Fail before any read or write when a parameter is wrong; return the streams to sync."""
        from erp_sync.core.params import parse_sync_params

        parsed = parse_sync_params(dict(params or {}), STREAMS, DEFAULT_STREAMS)
        return parsed.streams

    @task
    def apply_migrations() -> list[str]:
        """Bring the ERP staging database's schemas up to date (a new empty database just works)."""
        from erp_sync.hooks.erp import migrate_erp_staging

        return migrate_erp_staging()

    streams = check_params()
    migrated = apply_migrations()

    synced = SaaSStreamSyncOperator.partial(
        task_id="sync_stream",
        pool="saas_api",
        max_active_tis_per_dagrun=4,
        execution_timeout=timedelta(hours=3),
    ).expand(stream=streams)
    migrated >> synced

    @task(outlets=[STAGING_ASSET], multiple_outputs=False)
    def publish_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
        """One line per stream in the log; the asset event schedules reconciliation."""
        from erp_sync.core.summary import sync_summary_table

        table = sync_summary_table(list(summaries))
        print(table)
        return {"streams": [s["stream"] for s in summaries], "dry_run": any(s["dry_run"] for s in summaries)}

    @task(retries=5, retry_delay=timedelta(minutes=5), trigger_rule="all_done", multiple_outputs=False)
    def backup_raw_pages() -> dict[str, Any]:
        """Drain the outbox of raw pages to SFTP, verified; an outage delays backups, loses none."""
        from erp_sync.backup.tasks import backup_outbox_task

        return backup_outbox_task()

    publish_summary(synced.output)
    synced >> backup_raw_pages()


saas_to_erp_sync()
