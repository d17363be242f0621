"""Thin operators over `erp_sync.pipeline`: connections in, a small summary out (to XCom)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context

from erp_sync.clients.sources import connection_for
from erp_sync.core.params import parse_sync_params


def window_inputs(context: Context) -> dict[str, Any]:
    """Scheduled runs sync up to their data interval's end; manual runs use the params' window or
    run up to now (Airflow 3 manual runs may have no logical date or data interval)."""
    dag_run = context["dag_run"]
    scheduled = str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled")
    return {"data_interval_end": context.get("data_interval_end") if scheduled else None}


class SaaSStreamSyncOperator(BaseOperator):
    """Sync one declared stream for this run's window: extract, validate, transform, dedupe, load."""

    template_fields: Sequence[str] = ("stream",)
    ui_color = "#d8ecf3"

    def __init__(
        self,
        *,
        stream: str,
        saas_conn_id: str | None = None,
        erp_conn_id: str = "erp_staging",
        state_conn_id: str = "sync_state",
        batch_records: int | None = None,  # None: by the window's mode (`pipeline.batch_sizes`)
        lookback: timedelta = timedelta(minutes=10),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stream = stream
        self.saas_conn_id = saas_conn_id
        self.erp_conn_id = erp_conn_id
        self.state_conn_id = state_conn_id
        self.batch_records = batch_records
        self.lookback = lookback

    def execute(self, context: Context) -> dict[str, Any]:
        from erp_sync.hooks.erp import erp_connection, sync_state
        from erp_sync.hooks.saas import SaaSApiHook
        from erp_sync.pipeline import WindowRequest, sync_stream
        from erp_sync.streams import STREAMS, get_stream

        params = parse_sync_params(dict(context["params"]), STREAMS, STREAMS)
        spec = get_stream(self.stream)
        redis_client, namespace = sync_state(self.state_conn_id)
        conn_id = self.saas_conn_id or connection_for(spec.source_system)
        client = SaaSApiHook(saas_conn_id=conn_id).get_client(redis_client=redis_client, namespace=namespace)
        request = WindowRequest(
            window_start=params.window_start,
            window_end=params.window_end,
            full_refresh=params.full_refresh,
            lookback=self.lookback,
            **window_inputs(context),
        )
        conn = erp_connection(self.erp_conn_id)
        try:
            result = sync_stream(
                spec=spec,
                client=client,
                conn=conn,
                redis_client=redis_client,
                run_id=context["run_id"],
                window=request,
                namespace=namespace,
                batch_records=self.batch_records,
                dry_run=params.dry_run,
            )
        finally:
            conn.close()
            client.close()
        summary = result.summary()
        if params.dry_run:
            summary["samples"] = result.dry_run_samples
            self.log.info("DRY RUN for %s, nothing written: %s", spec.name, summary)
        else:
            self.log.info("stream %s done: %s", spec.name, summary)
        return summary
