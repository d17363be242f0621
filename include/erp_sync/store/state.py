"""The stream cursor: `erp_sync.stream_state.cursor_value`, the exclusive end of the last window
whose every batch has committed. It only moves inside a load transaction (with the batch that
completes the window) and never moves backwards (a backfill of an older window leaves it alone).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def get_cursor(conn: Any, source_system: str, stream: str) -> datetime | None:
    """The stream's committed cursor (tz-aware UTC), or None before its first complete window.

    Reads in the caller's transaction when one is open; otherwise ends its own read.
    """
    idle = conn.info.transaction_status == 0  # TRANSACTION_STATUS_IDLE
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT cursor_value FROM erp_sync.stream_state WHERE source_system = %s AND stream = %s",
                (source_system, stream),
            )
            row = cur.fetchone()
    finally:
        if idle and not conn.autocommit:
            conn.rollback()
    return row[0].astimezone(UTC) if row and row[0] is not None else None


def advance_cursor(
    cur: Any,
    source_system: str,
    stream: str,
    cursor_after: datetime,
    *,
    batch_id: int,
    run_id: str,
) -> datetime:
    """Move the cursor to `cursor_after` (never backwards) in the caller's transaction; returns it.

    Call only inside the load transaction of the batch that completes the window.
    """
    if cursor_after.tzinfo is None:
        raise ValueError("cursor_after must be timezone-aware")
    cur.execute(
        """
        INSERT INTO erp_sync.stream_state AS s
            (source_system, stream, cursor_value, last_batch_id, last_run_id, updated_at)
        VALUES (%s, %s, %s, %s, %s, now())
        ON CONFLICT (source_system, stream) DO UPDATE SET
            cursor_value = GREATEST(s.cursor_value, excluded.cursor_value),
            last_batch_id = excluded.last_batch_id,
            last_run_id = excluded.last_run_id,
            updated_at = now()
        RETURNING cursor_value
        """,
        (source_system, stream, cursor_after, batch_id, run_id),
    )
    value: datetime = cur.fetchone()[0]
    return value.astimezone(UTC)
