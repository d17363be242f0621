"""What the repair tests read to show what a repair wrote, or that it wrote nothing."""

from __future__ import annotations

from typing import Any

import redis


def sql_rows(conn: Any, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else []
    conn.commit()
    return rows


def control_rows(conn: Any) -> tuple[int, int, int]:
    """(sync_batches, repair_tombstones, drift_reports) row counts."""
    return sql_rows(
        conn,
        "SELECT (SELECT count(*) FROM erp_sync.sync_batches), (SELECT count(*) FROM erp_sync.repair_tombstones),"
        " (SELECT count(*) FROM erp_sync.drift_reports)",
    )[0]


def ledger_size(redis_client: redis.Redis, ns: str) -> int:
    return sum(1 for _ in redis_client.scan_iter(match=f"{ns}:ledger:*", count=1000))


def ledger_entries(redis_client: redis.Redis, ns: str) -> dict[bytes, bytes | None]:
    """Every ledger key under `ns` and the row hash it holds."""
    return {key: redis_client.get(key) for key in redis_client.scan_iter(match=f"{ns}:ledger:*", count=1000)}


def staging(conn: Any, tables: tuple[str, ...]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(table, source_id) -> everything that changes when a row is rewritten."""
    rows = {}
    for table in tables:
        for source_id, *rest in sql_rows(
            conn,
            f"SELECT source_id, xmin::text, interface_status, row_sha256, source_version, sync_batch_id"
            f" FROM erp_staging.{table}",
        ):
            rows[(table, source_id)] = tuple(rest)
    return rows


def tamper_an_open_invoice(conn: Any) -> str:
    """Change an open invoice's total in staging: the next report finds it `amount_mismatch`, and its
    repair marks the row's hash unknown before it re-sends it."""
    [(source_id,)] = sql_rows(
        conn,
        "UPDATE erp_staging.ar_invoices SET total_amount = total_amount + 1 WHERE source_id = (SELECT"
        " min(source_id) FROM erp_staging.ar_invoices WHERE status = 'open') RETURNING source_id",
    )
    return str(source_id)


def unsync_a_paid_invoice(conn: Any) -> str:
    """Delete a paid invoice's staging header: the next report finds it `missing_in_erp`."""
    [(source_id,)] = sql_rows(
        conn,
        "DELETE FROM erp_staging.ar_invoices WHERE source_id = (SELECT max(source_id) FROM erp_staging.ar_invoices"
        " WHERE status = 'paid') RETURNING source_id",
    )
    return str(source_id)
