"""Drift reconciliation: ERP staging against an independent re-read of the SaaS. Wiring only; the logic
lives in `erp_sync.reconcile_run` and `erp_sync.core.reconcile`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLColumnCheckOperator
from airflow.sdk import Param, Variable, dag, task, task_group

from erp_sync.assets import STAGING_ASSET
from erp_sync.operators.links import XCOM_REPORT_ID_KEY, DriftReportLink

DOC = """
### ERP drift reconciliation

Compares `erp_staging` with an independent re-read of the SaaS (list endpoints by `created`, never the
sync's own files or rows), per stream, currency and status (counts and sums), then record by record:
missing in ERP, missing in SaaS, amount mismatch, status mismatch, each with the ERP row's sync batch.
Writes an immutable, versioned report (`erp_sync.drift_reports`, shown on the Drift Reports page) with
JSON/CSV/HTML renderings backed up to SFTP (`sftp_backup`).

**Runs** after every sync (scheduled on the `erp_staging` asset: the sync's window and month-to-date)
and on demand. **Params**: `period_start` / `period_end` (ISO-8601 UTC; a manual run without them
reconciles everything up to now), `streams`, `tolerances` (e.g. `{"invoices:JPY": {"abs_minor": 5,
"rel": "0.001"}}`), `repair` (re-send exactly what the latest report for the period found missing or
mismatched, then reconcile again), `saas_lookback_days` (default 1: also list records created up to N
days before the period, for records dated inside it but created earlier, such as an invoice created
late on the day before and finalized an hour later; 0 lists by the period alone),
`lookup_missing_limit` (default 1000: records the ERP holds and the listing did not return are asked for
by id, one request each, and compared when they exist and fall in the period, such as a draft finalized
days after it was created; the rest stay `missing_in_saas`; 0 turns it off). The ERP side is
`erp_staging` unless the Variable `erp_sync_reconcile_erp_sql` maps streams to SQL over the ERP's posted
tables (columns `source_id, currency_code, status, <amounts>, sync_batch_id`; parameters
`%(period_start)s`, `%(period_end)s`).

**Connections**: each stream is re-read, looked up by id and repaired through its own source system's
connection (`erp_sync.clients.sources.SOURCE_CONNECTIONS`, as the sync: `saas_api` for the Stripe
streams, `orders_api` for `orders`), built only for the source systems the run's `streams` need. A run of
Stripe streams needs no `orders_api` connection; a run naming `orders` without it fails before any read,
without a retry, naming the connection.

**Records gone from the SaaS** (ADR 0020): with `repair`, each record the report found `missing_in_saas`
is asked for by id before anything is written. One the SaaS confirms gone (a 404 with the stream's gone
code, `resource_missing` for Stripe, ADR 0029; or a `"deleted": true` stub) is staged as a tombstone
(`interface_status = 'DELETED'`, its invoice lines retired), as a deletion event would have staged it: a
full refresh cannot see deletions, and Stripe keeps its events 30 days. One that exists, or any other
answer, is left alone; a lookup that fails (5xx, timeout, credentials) fails the task with nothing
tombstoned. `repair_tombstones` (default true; false turns this off), `max_tombstones` (default 1000 per
stream) and `max_tombstone_share` (default 0.5 of the ERP records the report compared for the stream): a
connection to the wrong account answers every lookup with a 404, so more gone records than either limit
fail the task before any write, naming the stream, the count and the param to raise. The re-check report's
summary (`repair.tombstones`) says how many were tombstoned per stream, and which. A re-send whose 404
does not say the record is missing (a wrong base URL) fails the task without a retry before any write,
naming the URL.

`backup_repair` (with `repair`, whatever the reconcile's outcome) drains the outbox to SFTP, as the
sync's `backup_raw_pages` does: the repair's re-sent pages and its tombstone documents (ADR 0022) are
backed up now, not at the next sync.

`reconcile` fails when drift exceeds tolerance and logs what drifted, by how much and where the report
is. The `table_invariants` checks (common.sql operators) fail on broken keys, orphan lines or invoice
lines that do not add up to the invoice's subtotal (`invoice_lines_sum_to_subtotal`: each live line's
`amount` less its own item-level `discount_amount`, against `subtotal_amount`, or `total_amount` where
no subtotal is staged; a live invoice staged with its lines' digest and without live lines adds up to 0;
ADR 0016, 0019, 0024). The drift
report's `invariants` name the records behind a failed one (`violations`: how many, the first 20 ids).
"""

STAGING_TABLES = ("ar_invoices", "ar_invoice_lines", "ar_receipts", "ar_credit_memos")
ERP_CONN_ID = "erp_staging"


@dag(
    dag_id="erp_drift_reconciliation",
    schedule=[STAGING_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["erp-sync", "reconciliation"],
    doc_md=DOC,
    default_args={"owner": "data-engineering", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "period_start": Param(
            None, type=["null", "string"], description="Period start, ISO-8601 UTC (inclusive)."
        ),
        "period_end": Param(
            None, type=["null", "string"], description="Period end, ISO-8601 UTC (exclusive)."
        ),
        "streams": Param([], type="array", items={"type": "string"}, description="Streams; empty = default."),
        "tolerances": Param({}, type="object", description="Per stream / stream:CURRENCY: abs_minor, rel."),
        "repair": Param(False, type="boolean", description="Re-send what the latest report found, re-check."),
        "saas_lookback_days": Param(
            1, type="integer", minimum=0, description="List the SaaS this many days before the period too."
        ),
        "lookup_missing_limit": Param(
            1000,
            type="integer",
            minimum=0,
            description="Ask the SaaS by id for up to this many records only the ERP holds (0: never).",
        ),
        "repair_tombstones": Param(
            True,
            type="boolean",
            description="With repair: stage records the SaaS answers as gone (a 404 with the stream's"
            " gone code) DELETED.",
        ),
        "max_tombstones": Param(
            1000,
            type="integer",
            minimum=1,
            description="With repair: refuse, before any write, over this many tombstones per stream.",
        ),
        "max_tombstone_share": Param(
            0.5,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            description="With repair: refuse when more than this share of a stream's ERP records is gone.",
        ),
    },
)
def erp_drift_reconciliation() -> None:
    @task(multiple_outputs=False)
    def check_params(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fail before any read when a parameter is wrong (e.g. period_end before period_start)."""
        from datetime import UTC, datetime

        from airflow.sdk.exceptions import AirflowFailException

        from erp_sync.core.params import InvalidParamError
        from erp_sync.reconcile_run import conf_from_params, parse_request

        try:
            request = parse_request(
                conf_from_params(params, Variable.get(ERP_SQL_VARIABLE, default=None, deserialize_json=True)),
                now=datetime.now(UTC),
            )
        except InvalidParamError as exc:  # a retry cannot fix a parameter: fail now, no retry
            raise AirflowFailException(str(exc)) from None
        return {
            "period_start": request.period_start.isoformat(),
            "period_end": request.period_end.isoformat(),
        }

    @task(execution_timeout=timedelta(hours=2), multiple_outputs=False)
    def reconcile(params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
        """Reconcile (and repair on request); red when drift exceeds tolerance."""
        from datetime import UTC, datetime

        from airflow.sdk.exceptions import AirflowFailException

        from erp_sync.clients.errors import UnconfirmedNotFoundError
        from erp_sync.clients.sources import MissingSourceConnectionError
        from erp_sync.core.tombstones import TombstoneLimitError
        from erp_sync.hooks.erp import erp_connection, sync_state
        from erp_sync.hooks.saas import source_clients
        from erp_sync.reconcile_run import (
            DriftExceededError,
            conf_from_params,
            periods_for_run,
            run_request,
            sync_window_for_runs,
        )

        now = datetime.now(UTC)
        events = context.get("triggering_asset_events") or {}
        source_runs = [
            e.source_run_id for evs in events.values() for e in evs if getattr(e, "source_run_id", None)
        ]
        redis_client, namespace = sync_state()
        conn = erp_connection(ERP_CONN_ID)
        clients = None
        try:
            window = sync_window_for_runs(conn, source_runs)
            requests = periods_for_run(
                conf_from_params(params, Variable.get(ERP_SQL_VARIABLE, default=None, deserialize_json=True)),
                now=now,
                scheduled_window=window,
                asset_triggered=bool(events),
            )
            # each stream through its own source system's connection; only those the streams need
            streams = {name for request in requests for name in request.streams}
            try:
                clients = source_clients(streams, redis_client=redis_client, namespace=namespace)
            except MissingSourceConnectionError as exc:  # configuration: a retry finds it missing too
                raise AirflowFailException(str(exc)) from None
            backup = _backup_function()
            outcomes = []
            for request in requests:
                try:
                    outcome = run_request(
                        conn=conn,
                        clients=clients,
                        request=request,
                        redis_client=redis_client,
                        namespace=namespace,
                        dag_id=context["dag"].dag_id,
                        run_id=context["run_id"],
                        backup=backup,
                    )
                # a verdict on the lookups, a wrong base URL or by-id path (ADR 0020, 0023): a retry
                # gets the same answer
                except (TombstoneLimitError, UnconfirmedNotFoundError) as exc:
                    raise AirflowFailException(str(exc)) from None
                for report in outcome.reports:
                    print(report.message)
                outcomes.append(outcome)
                # the "Drift report" button (DriftReportLink) opens the newest report of this run
                context["ti"].xcom_push(key=XCOM_REPORT_ID_KEY, value=outcome.reports[-1].report_id)
        finally:
            conn.close()
            if clients is not None:
                clients.close()
        drifted = [o.reports[-1] for o in outcomes if o.reports[-1].status != "OK"]
        if drifted:  # a verdict, not a transient failure: fail without retrying (alerts fire)
            raise AirflowFailException(str(DriftExceededError("\n".join(r.message for r in drifted))))
        print("Within tolerance: " + "; ".join(f"report {o.reports[-1].report_id} OK" for o in outcomes))
        return {"runs": [o.xcom() for o in outcomes]}

    @task(retries=5, retry_delay=timedelta(minutes=5), trigger_rule="all_done", multiple_outputs=False)
    def backup_repair(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """With `repair`: back up what it wrote (re-sent pages, tombstone documents) to SFTP now."""
        from airflow.sdk.exceptions import AirflowSkipException

        from erp_sync.backup.tasks import backup_outbox_task

        if not (params or {}).get("repair"):
            raise AirflowSkipException("no repair in this run: it wrote nothing to the outbox")
        return backup_outbox_task()

    @task_group
    def table_invariants() -> None:
        """Staging tables' own rules, checked with the common.sql operators."""
        from erp_sync.reconcile_run import INVARIANTS

        for table in STAGING_TABLES:
            SQLColumnCheckOperator(
                task_id=f"keys_{table}",
                conn_id=ERP_CONN_ID,
                table=f"erp_staging.{table}",
                column_mapping={
                    "source_system": {"null_check": {"equal_to": 0}},
                    "source_id": {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}},
                },
                accept_none=True,
            )
        for name in ("no_orphan_invoice_lines", "invoice_lines_sum_to_subtotal"):
            SQLCheckOperator(task_id=name, conn_id=ERP_CONN_ID, sql=INVARIANTS[name])

    checked = check_params()
    reconciled = reconcile()
    reconciled.operator.operator_extra_links = (DriftReportLink(),)
    checked >> reconciled >> backup_repair()
    checked >> table_invariants()


ERP_SQL_VARIABLE = "erp_sync_reconcile_erp_sql"


def _backup_function() -> Any:
    """`erp_sync.backup.drain.backup_report` over `sftp_backup`, or None when either is unavailable."""
    import logging

    log = logging.getLogger("airflow.task")
    try:
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        from erp_sync.backup.drain import backup_report
    except ImportError as exc:
        log.warning("report backup unavailable (%s): backup_path stays empty", exc)
        return None

    def backup(name: str, data: bytes) -> str:
        with SFTPHook(ssh_conn_id="sftp_backup").get_managed_conn() as sftp:
            return str(backup_report(sftp, name, data).path)

    return backup


erp_drift_reconciliation()
