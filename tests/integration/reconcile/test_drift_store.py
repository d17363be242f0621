"""Drift report storage against a real Postgres: versions, immutability, content hash, read helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import psycopg2
import pytest

from erp_sync.core.reconcile import reconcile
from erp_sync.store.drift import (
    ReportHeader,
    conservation_for_period,
    get_items,
    get_report,
    latest_report,
    list_reports,
    set_backup_path,
    verify_report,
    write_report,
)

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)


def _drift_result():
    saas = pd.DataFrame(
        [
            {
                "stream": "invoices",
                "source_id": "in_a",
                "currency_code": "USD",
                "status": "paid",
                "total_amount": Decimal("10.00"),
            },
            {
                "stream": "invoices",
                "source_id": "in_b",
                "currency_code": "KWD",
                "status": "open",
                "total_amount": Decimal("1.234"),
            },
        ]
    )
    erp = pd.DataFrame(
        [
            {
                "stream": "invoices",
                "source_id": "in_b",
                "currency_code": "KWD",
                "status": "open",
                "total_amount": Decimal("1.235"),
                "sync_batch_id": 42,
            },
        ]
    )
    return reconcile(saas, erp, {"invoices": ("total_amount",)})


def _header(result, **extra) -> ReportHeader:
    return ReportHeader(
        period_start=START,
        period_end=END,
        streams=["invoices"],
        status=result.status,
        summary={"items": result.item_counts()},
        run_id="test",
        **extra,
    )


def test_report_is_stored_with_totals_items_and_a_verifiable_hash(conn):
    result = _drift_result()
    stored = write_report(conn, _header(result), result.totals, result.items)
    assert stored.version == 1 and stored.item_count == 2
    report = get_report(conn, stored.report_id)
    assert report["status"] == "DRIFT" and report["item_count"] == 2
    assert report["content_sha256"] == stored.content_sha256
    kwd = next(
        t for t in report["totals"] if t["currency_code"].strip() == "KWD" and t["metric"] == "total_amount"
    )
    assert kwd["difference"] == Decimal("0.001")
    items = {i["source_id"]: i for i in get_items(conn, stored.report_id)}
    assert items["in_a"]["kind"] == "missing_in_erp" and items["in_a"]["saas_amount"] == "10.000"
    assert items["in_b"]["kind"] == "amount_mismatch" and items["in_b"]["erp_batch_id"] == 42
    assert items["in_b"]["difference"] == "0.001" and items["in_b"]["metric"] == "total_amount"
    assert verify_report(conn, stored.report_id)


def test_rerun_for_the_same_period_writes_a_new_version_and_keeps_the_old(conn):
    result = _drift_result()
    first = write_report(conn, _header(result), result.totals, result.items)
    second = write_report(conn, _header(result), result.totals, result.items)
    assert (first.version, second.version) == (1, 2)
    assert first.content_sha256 == second.content_sha256  # same findings, same content
    assert latest_report(conn, START, END, ["invoices"])["report_id"] == second.report_id
    assert [r["report_id"] for r in list_reports(conn)] == [second.report_id, first.report_id]
    assert get_report(conn, first.report_id) is not None


def test_reports_cannot_be_edited_or_deleted_but_backup_path_is_set_once(conn):
    result = _drift_result()
    stored = write_report(conn, _header(result), result.totals, result.items)
    set_backup_path(conn, stored.report_id, "/backup/drift/1")
    assert get_report(conn, stored.report_id)["backup_path"] == "/backup/drift/1"
    for sql in (
        "UPDATE erp_sync.drift_reports SET status = 'OK' WHERE report_id = %s",
        "UPDATE erp_sync.drift_reports SET backup_path = 'elsewhere' WHERE report_id = %s",
        "DELETE FROM erp_sync.drift_report_items WHERE report_id = %s",
        "UPDATE erp_sync.drift_report_totals SET erp_sum = 0 WHERE report_id = %s",
    ):
        with pytest.raises(psycopg2.Error, match="immutable"), conn.cursor() as cur:
            cur.execute(sql, (stored.report_id,))
        conn.rollback()
    assert verify_report(conn, stored.report_id)


def test_tampered_stored_content_fails_verification(conn):
    result = _drift_result()
    stored = write_report(conn, _header(result), result.totals, result.items)
    with conn.cursor() as cur:  # a superuser bypassing the trigger, as an attacker would
        cur.execute("ALTER TABLE erp_sync.drift_report_items DISABLE TRIGGER drift_report_items_immutable")
        cur.execute(
            "UPDATE erp_sync.drift_report_items SET erp_amount = 1.234 WHERE report_id = %s",
            (stored.report_id,),
        )
    conn.commit()
    assert not verify_report(conn, stored.report_id)


def test_items_are_paged_and_filtered(conn):
    result = _drift_result()
    stored = write_report(conn, _header(result), result.totals, result.items)
    assert len(get_items(conn, stored.report_id, limit=1)) == 1
    assert [i["item_no"] for i in get_items(conn, stored.report_id, limit=1, offset=1)] == [2]
    assert [i["source_id"] for i in get_items(conn, stored.report_id, kind="missing_in_erp")] == ["in_a"]


def test_conservation_sums_batches_committed_in_the_period(conn):
    with conn.cursor() as cur:
        for batch_id, committed in ((1, "2026-11-02"), (2, "2026-11-03"), (3, "2026-12-05")):
            cur.execute(
                """INSERT INTO erp_sync.sync_batches (batch_id, run_id, source_system, stream, input_sha256,
                       extracted, loaded_new, loaded_changed, skipped_unchanged, rejected, committed_at)
                   VALUES (%s, 'r', 'stripe', 'invoices', repeat('a', 64), 10, 6, 1, 2, 1, %s)""",
                (batch_id, committed + "T00:00:00Z"),
            )
    conn.commit()
    figures = conservation_for_period(conn, START, END, {"stripe": ["invoices"]})
    inv = figures["streams"]["invoices"]
    assert (inv["batches"], inv["extracted"], inv["loaded_new"], inv["rejected"]) == (2, 20, 12, 2)
    assert inv["balanced"] and figures["balanced"]


def test_conservation_counts_each_stream_under_its_own_source_system(conn):
    rows = ((1, "stripe", "invoices", 10), (2, "orders_api", "orders", 7), (3, "orders_api", "invoices", 99))
    with conn.cursor() as cur:
        for batch_id, system, stream, extracted in rows:
            cur.execute(
                """INSERT INTO erp_sync.sync_batches (batch_id, run_id, source_system, stream, input_sha256,
                       extracted, loaded_new, loaded_changed, skipped_unchanged, rejected, committed_at)
                   VALUES (%s, 'r', %s, %s, repeat('a', 64), %s, %s, 0, 0, 0, '2026-11-02T00:00:00Z')""",
                (batch_id, system, stream, extracted, extracted),
            )
    conn.commit()
    figures = conservation_for_period(conn, START, END, {"stripe": ["invoices"], "orders_api": ["orders"]})
    counted = {name: (s["batches"], s["extracted"]) for name, s in figures["streams"].items()}
    assert counted == {"invoices": (1, 10), "orders": (1, 7)}  # not orders_api's batch of an "invoices"


def test_empty_report_is_ok_with_zero_items(conn):
    result = reconcile(pd.DataFrame(), pd.DataFrame(), {"invoices": ("total_amount",)})
    stored = write_report(conn, _header(result), result.totals, result.items)
    report = get_report(conn, stored.report_id)
    assert (report["status"], report["item_count"], report["totals"]) == ("OK", 0, [])
    assert verify_report(conn, stored.report_id)
