"""Replay quarantined records after their cause is fixed. Wiring only: logic in erp_sync.pipeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from erp_sync.streams import STREAMS

DOC = """
### Replay rejections

Pushes PENDING rows of `erp_sync.rejections` back through validate → transform → dedupe → load, after
the mapping or the source is fixed. Each one ends **REPLAYED** or stays PENDING with its new reason and
one more attempt — none is ever dropped. Params filter what is replayed: `stream`, `reason_code`,
`rejection_ids` (all empty: every pending rejection). `backup_outbox` then drains the outbox to SFTP,
as the sync's `backup_raw_pages` does, so the replayed batches are backed up now, not at the next sync.
"""


@dag(
    dag_id="erp_rejections_replay",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["erp-sync", "rejections"],
    doc_md=DOC,
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "stream": Param(None, type=["null", "string"], enum=[None, *sorted(STREAMS)]),
        "reason_code": Param(None, type=["null", "string"]),
        "rejection_ids": Param([], type="array", items={"type": "integer"}),
    },
)
def erp_rejections_replay() -> None:
    @task(multiple_outputs=False)
    def replay(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        from erp_sync.core.params import InvalidParamError
        from erp_sync.hooks.erp import erp_connection, sync_state
        from erp_sync.pipeline import replay_rejections

        params = dict(params or {})
        stream = params.get("stream") or None
        if stream is not None and stream not in STREAMS:
            raise InvalidParamError("stream", f"unknown stream {stream!r}; known: {sorted(STREAMS)}")
        ids = params.get("rejection_ids") or None
        if ids is not None and not all(isinstance(i, int) and i > 0 for i in ids):
            raise InvalidParamError("rejection_ids", f"expected positive integers, got {ids!r}")
        redis_client, namespace = sync_state()
        conn = erp_connection()
        try:
            result = replay_rejections(
                conn=conn,
                redis_client=redis_client,
                run_id=str(run_id),
                namespace=namespace,
                stream=stream,
                reason=params.get("reason_code") or None,
                ids=ids,
            )
        finally:
            conn.close()
        summary = result.summary()
        print(f"replayed {result.replayed} of {result.selected}; still rejected: {summary}")
        return summary

    @task(retries=5, retry_delay=timedelta(minutes=5), trigger_rule="all_done", multiple_outputs=False)
    def backup_outbox() -> dict[str, Any]:
        """Drain the outbox (the replayed batches' pages) to SFTP, verified."""
        from erp_sync.backup.tasks import backup_outbox_task

        return backup_outbox_task()

    replay() >> backup_outbox()


erp_rejections_replay()
