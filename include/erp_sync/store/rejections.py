"""Stored rejections and their replay.

A rejected record stays in `erp_sync.rejections` (PENDING) until a replay loads it: the replay DAG
reads `pending_rejections(...)`, pushes each raw payload back through validate -> transform -> load,
and the load marks the ones that went through REPLAYED in its own transaction (`load_batch(...,
replayed_ids=...)`); a record rejected again keeps its row with the new reason (`record_new_reason`)
and one more attempt. Nothing here deletes a row: none is ever dropped silently.

These functions work inside the caller's transaction and do not commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from erp_sync.core.batch import Rejection


@dataclass(frozen=True)
class StoredRejection:
    """A row of erp_sync.rejections."""

    rejection_id: int
    source_system: str
    stream: str
    source_id: str | None
    reason_code: str
    message: str
    raw_payload: str
    batch_id: int | None
    status: str
    attempts: int
    created_at: datetime
    deleted: bool  # the record came from a deletion event: replayed as a tombstone

    def as_rejection(self) -> Rejection:
        """The core value, carrying its id (so a load updates this row instead of adding one)."""
        return Rejection(
            stream=self.stream,
            reason_code=self.reason_code,
            message=self.message,
            raw_payload=self.raw_payload,
            source_id=self.source_id,
            rejection_id=self.rejection_id,
            deleted=self.deleted,
        )


_COLUMNS = (
    "rejection_id, source_system, stream, source_id, reason_code, message, raw_payload, batch_id, "
    "status, attempts, created_at, deleted"
)


def pending_rejections(
    conn: Any,
    stream: str | None = None,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    *,
    source_system: str | None = None,
    limit: int | None = None,
) -> list[StoredRejection]:
    """PENDING rejections, oldest first, filtered by stream, reason code, ids and source system."""
    clauses = ["status = 'PENDING'"]
    params: list[Any] = []
    for column, value in (("stream", stream), ("reason_code", reason), ("source_system", source_system)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if ids is not None:
        clauses.append("rejection_id = ANY(%s)")
        params.append([int(i) for i in ids])
    sql = f"SELECT {_COLUMNS} FROM erp_sync.rejections WHERE {' AND '.join(clauses)} ORDER BY rejection_id"  # noqa: S608
    if limit is not None:
        sql += " LIMIT %s"
        params.append(int(limit))
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return [StoredRejection(*row) for row in cur.fetchall()]


def mark_replayed(conn: Any, ids: Sequence[int], replay_batch_id: int) -> int:
    """Mark PENDING rejections REPLAYED by the given batch; returns how many changed."""
    if not ids:
        return 0
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE erp_sync.rejections SET status = 'REPLAYED', replayed_at = now(), replay_batch_id = %s,"
            " attempts = attempts + 1 WHERE rejection_id = ANY(%s) AND status = 'PENDING'",
            (replay_batch_id, [int(i) for i in ids]),
        )
        return int(cur.rowcount)


def record_new_reason(
    conn: Any, rejection_id: int, reason_code: str, message: str, batch_id: int | None = None
) -> None:
    """A replayed record failed again: keep it PENDING with its new reason and one more attempt."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE erp_sync.rejections SET reason_code = %s, message = %s, attempts = attempts + 1,"
            " batch_id = coalesce(%s, batch_id) WHERE rejection_id = %s AND status = 'PENDING'",
            (reason_code, message, batch_id, rejection_id),
        )
        if cur.rowcount != 1:
            raise LookupError(f"rejection {rejection_id} is not PENDING (or does not exist)")
