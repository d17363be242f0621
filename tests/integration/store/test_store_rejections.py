"""Rejections are stored with their reasons and replayed without ever being dropped."""

from __future__ import annotations

from decimal import Decimal

import pytest
from store_factories import Invoice, bad_record, expected_invoices, invoice_batch, staging_invoices

from erp_sync.store.loader import load_batch
from erp_sync.store.rejections import mark_replayed, pending_rejections, record_new_reason

pytestmark = pytest.mark.integration


def _seed(conn, ledger):
    good = Invoice("in_ok", 100, Decimal("5.00"))
    key, mapped, pages = invoice_batch(
        [good], rejections=[bad_record("in_fix", "INVALID_FIELD"), bad_record("in_still", "UNKNOWN_CURRENCY")]
    )
    load_batch(conn, ledger, key, mapped, pages, batch_id=1, cursor_after=None)
    return good


def test_pending_rejections_filter_by_stream_reason_and_id(conn, ledger):
    _seed(conn, ledger)
    everything = pending_rejections(conn)
    assert [(r.source_id, r.reason_code, r.batch_id, r.status) for r in everything] == [
        ("in_fix", "INVALID_FIELD", 1, "PENDING"),
        ("in_still", "UNKNOWN_CURRENCY", 1, "PENDING"),
    ]
    assert [r.source_id for r in pending_rejections(conn, reason="UNKNOWN_CURRENCY")] == ["in_still"]
    assert [r.source_id for r in pending_rejections(conn, ids=[everything[0].rejection_id])] == ["in_fix"]
    assert pending_rejections(conn, stream="customers") == []
    assert everything[0].raw_payload == bad_record("in_fix").raw_payload


def test_replay_loads_fixed_records_and_keeps_the_rest_with_their_new_reason(conn, ledger):
    good = _seed(conn, ledger)
    stored = {r.source_id: r for r in pending_rejections(conn)}
    conn.rollback()  # a load starts from no open transaction
    fixed = Invoice("in_fix", 100, Decimal("7.50"))
    again = stored["in_still"].as_rejection()
    again = type(again)(
        again.stream,
        "UNKNOWN_CURRENCY",
        "XTS is still unknown",
        again.raw_payload,
        again.source_id,
        again.rejection_id,
    )
    key, mapped, pages = invoice_batch([fixed], rejections=[again], run_id="replay-1", tag="replay")
    result = load_batch(
        conn,
        ledger,
        key,
        mapped,
        pages,
        batch_id=2,
        cursor_after=None,
        replayed_ids=[r.rejection_id for r in stored.values()],
    )
    assert (result.loaded_new, result.rejected) == (1, 1)
    assert staging_invoices(conn) == expected_invoices([good, fixed])

    with conn.cursor() as cur:
        cur.execute(
            "SELECT source_id, status, reason_code, message, attempts, replay_batch_id "
            "FROM erp_sync.rejections ORDER BY rejection_id"
        )
        rows = cur.fetchall()
    conn.rollback()
    assert rows == [
        ("in_fix", "REPLAYED", "INVALID_FIELD", "total is not a number", 1, 2),
        ("in_still", "PENDING", "UNKNOWN_CURRENCY", "XTS is still unknown", 1, None),
    ]
    assert [r.source_id for r in pending_rejections(conn)] == ["in_still"]


def test_mark_replayed_and_record_new_reason(conn, ledger):
    _seed(conn, ledger)
    fix, still = pending_rejections(conn)
    assert mark_replayed(conn, [fix.rejection_id], replay_batch_id=9) == 1
    assert mark_replayed(conn, [fix.rejection_id], replay_batch_id=10) == 0  # only once
    record_new_reason(conn, still.rejection_id, "MISSING_ID", "no id yet")
    conn.commit()
    with pytest.raises(LookupError):
        record_new_reason(conn, fix.rejection_id, "X", "already replayed")
    conn.rollback()
    (left,) = pending_rejections(conn)
    assert (left.source_id, left.reason_code, left.attempts) == ("in_still", "MISSING_ID", 1)
