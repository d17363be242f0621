"""The removed-line soft delete on a big, never-analyzed staging table: right rows, index-driven plan.

A bulk load leaves `ar_invoice_lines` without statistics (the planner then believes it holds a few
hundred rows); the statement must still reach lines per parent through `ar_invoice_lines_invoice`
instead of testing every line against the kept ids (139 s in the 100,000-invoice benchmark).
"""

from __future__ import annotations

from typing import Any

import pytest

from erp_sync.store.loader import _retire_statement

pytestmark = pytest.mark.integration

INVOICES = 100_000
LINES_PER_INVOICE = 3  # 300,000 lines
BATCH_STEP = 100  # every 100th invoice gets a newer version that dropped its third line


def _fill_without_statistics(conn: Any) -> None:
    with conn.cursor() as cur:
        for table in ("ar_invoices", "ar_invoice_lines"):
            # A test database of our own: keep autovacuum from analyzing it behind the test's back.
            cur.execute(f"ALTER TABLE erp_staging.{table} SET (autovacuum_enabled = false)")
        cur.execute(
            "INSERT INTO erp_staging.ar_invoices SELECT 'stripe', 'in_' || lpad(i::text, 7, '0'), 'cus_1',"
            " 'N', 'open', 'USD', 1, 0, 1, now(), NULL, repeat('a', 64), 100, 1"
            " FROM generate_series(1, %s) i",
            (INVOICES,),
        )
        cur.execute(
            "INSERT INTO erp_staging.ar_invoice_lines SELECT 'stripe',"
            " 'in_' || lpad(i::text, 7, '0') || ':il_' || j, 'in_' || lpad(i::text, 7, '0'), j, 'Seat', 1,"
            " 'USD', 1, repeat('a', 64), 100, 1 FROM generate_series(1, %s) i, generate_series(1, %s) j",
            (INVOICES, LINES_PER_INVOICE),
        )
        cur.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'ar_invoice_lines'"
            " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
        )
        assert cur.fetchone()[0] == 0
    conn.commit()


def _params() -> dict[str, Any]:
    parents = [f"in_{i:07d}" for i in range(1, INVOICES + 1, BATCH_STEP)]
    return {
        "ids": parents,
        "versions": [200] * len(parents),
        "batch_id": 7,
        "system": "stripe",
        "kept": [f"{p}:il_{j}" for p in parents for j in (1, 2)],
        "deleted": [],  # tombstones among the parents (ADR 0015)
    }


def test_retire_reaches_lines_through_the_parent_index_without_statistics(conn):
    _fill_without_statistics(conn)
    sql = _retire_statement("ar_invoice_lines", "invoice_source_id", "ar_invoices")
    params = _params()
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
    conn.rollback()

    assert "Seq Scan on ar_invoice_lines" not in plan
    assert "<> ALL" not in plan
    lines_scans = [line for line in plan.splitlines() if "on ar_invoice_lines_invoice" in line]
    assert lines_scans, plan
    assert "(invoice_source_id = p.parent_id)" in plan  # the index is probed per parent
    assert "Anti Join" in plan  # kept lines excluded by a (hashed) anti-join, not per-row array tests


def test_retire_soft_deletes_exactly_the_dropped_lines(conn):
    _fill_without_statistics(conn)
    params = _params()
    with conn.cursor() as cur:
        cur.execute(_retire_statement("ar_invoice_lines", "invoice_source_id", "ar_invoices"), params)
        retired = sorted(cur.fetchall())
        cur.execute(
            "SELECT source_id, source_version, sync_batch_id FROM erp_staging.ar_invoice_lines"
            " WHERE interface_status = 'DELETED' ORDER BY source_id"
        )
        deleted = cur.fetchall()
    conn.rollback()

    expected = sorted((f"{p}:il_3", p) for p in params["ids"])
    assert retired == expected
    assert deleted == [(f"{p}:il_3", 200, 7) for p in sorted(params["ids"])]
