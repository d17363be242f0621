"""Reconciliation end to end against real Postgres, Redis and the sandbox: a clean sync reconciles OK,
tampering is found record by record with exact per-currency differences, repair restores exactly the
damaged records, an empty period is OK and an impossible period fails before any read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
import redis

from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.sources import SourceClients
from erp_sync.core.params import InvalidParamError
from erp_sync.core.reconcile import currency_exponent
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.reconcile_run import parse_request, reconcile_period, run_request
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store import drift
from erp_sync.store.locks import StreamLockedError, stream_lock
from erp_sync.streams import STREAMS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYNCED = ("customers", "invoices", "charges", "refunds", "credit_notes")
FAR_FUTURE = timedelta(days=1)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=240, seed=4) as handle:  # 120 USD, 31 JPY, 11 KWD invoices
        yield handle


def _client(sandbox: SandboxHandle) -> SaaSClient:
    return SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=50)


def _clients(sandbox: SandboxHandle) -> SourceClients:
    return SourceClients({"stripe": _client(sandbox)})


def _full_sync(sandbox: SandboxHandle, conn: Any, redis_client: redis.Redis, ns: str) -> datetime:
    end = datetime.now(UTC) + FAR_FUTURE
    for name in SYNCED:
        sync_stream(
            spec=STREAMS[name],
            client=_client(sandbox),
            conn=conn,
            redis_client=redis_client,
            run_id="sync-1",
            window=WindowRequest(full_refresh=True, window_end=end),
            namespace=ns,
            batch_records=100,
        )
    return end


def _run(conn: Any, sandbox: SandboxHandle, conf: dict[str, Any], redis_client=None, ns="erpsync"):
    request = parse_request(conf, now=datetime.now(UTC))
    return run_request(
        conn=conn, clients=_clients(sandbox), request=request, redis_client=redis_client, namespace=ns,
        run_id="reconcile-test",
    )  # fmt: skip


def _rows(conn: Any, sql: str, args: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall()
    conn.commit()
    return rows


def _snapshot(conn: Any, table: str) -> dict[str, tuple]:
    """source_id -> (xmin, loaded_at): changes whenever the row is rewritten."""
    rows = _rows(conn, f"SELECT source_id, xmin::text, loaded_at FROM erp_staging.{table}")
    return {r[0]: (r[1], r[2]) for r in rows}


def _pick(conn: Any, currency: str, n: int, exclude: set[str], status: str | None = None) -> list[tuple]:
    sql = "SELECT source_id, total_amount, status FROM erp_staging.ar_invoices WHERE currency_code = %s"
    args: tuple = (currency,)
    if status:
        sql += " AND status = %s"
        args += (status,)
    rows = [r for r in _rows(conn, sql + " ORDER BY source_id", args) if r[0] not in exclude]
    assert len(rows) >= n, f"sandbox has too few {currency} invoices for the scenario"
    return rows[:n]


def _currency_diffs(report: dict[str, Any]) -> dict[str, Decimal]:
    diffs: dict[str, Decimal] = {}
    for t in report["totals"]:
        if t["stream"] == "invoices" and t["metric"] == "total_amount":
            cur = t["currency_code"].strip()
            diffs[cur] = diffs.get(cur, Decimal(0)) + t["difference"]
    return {c: d for c, d in diffs.items() if d != 0}


def test_clean_sync_is_ok_then_tampering_is_found_exactly_and_repair_restores_exactly(
    sandbox, conn, redis_client, redis_namespace
):
    ns = redis_namespace
    end = _full_sync(sandbox, conn, redis_client, ns)
    period = {"period_start": "2020-01-01T00:00:00Z", "period_end": end.isoformat()}

    # 1. clean full sync: OK, zero items, across the default streams
    clean = _run(conn, sandbox, period).reports[-1]
    assert clean.status == "OK", clean.message
    assert sum(clean.item_counts.values()) == 0
    report = drift.get_report(conn, clean.report_id)
    assert report["item_count"] == 0 and set(report["streams"]) == {"charges", "credit_notes", "invoices"}
    saas_counts = {s.stream: s.saas_records for s in clean.result.streams}
    assert saas_counts["invoices"] > 200 and saas_counts["charges"] > 0
    conn.commit()

    # 2. tamper with staging directly, and create invoices in the SaaS that are not synced
    taken: set[str] = set()
    deleted = [_pick(conn, c, 1, taken)[0] for c in ("USD", "JPY", "KWD")]
    taken |= {r[0] for r in deleted}
    bumped = [_pick(conn, c, 1, taken)[0] for c in ("JPY", "KWD")]
    taken |= {r[0] for r in bumped}
    restatused = _pick(conn, "USD", 1, taken, status="open")[0]
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM erp_staging.ar_invoices WHERE source_id = ANY(%s)", ([r[0] for r in deleted],)
        )
        cur.execute(
            "UPDATE erp_staging.ar_invoices SET total_amount = total_amount + 1 WHERE source_id = %s",
            (bumped[0][0],),
        )  # JPY: one yen
        cur.execute(
            "UPDATE erp_staging.ar_invoices SET total_amount = total_amount + 0.001 WHERE source_id = %s",
            (bumped[1][0],),
        )  # KWD: one fils
        cur.execute(
            "UPDATE erp_staging.ar_invoices SET status = 'paid' WHERE source_id = %s", (restatused[0],)
        )
        cur.execute(
            """INSERT INTO erp_staging.ar_invoices (source_system, source_id, status, currency_code,
                   total_amount, amount_paid, amount_due, issued_at, row_sha256, source_version,
                   sync_batch_id)
               VALUES ('stripe', 'in_never_in_saas', 'open', 'USD', 12.34, 0, 12.34, now() - interval '1 day',
                       repeat('f', 64), 1, 999999)"""
        )
    conn.commit()
    created = sandbox.admin.mutate(2, kinds=["new_invoice"])
    new_ids = sorted(c["id"] for c in created["applied"] if c["kind"] == "new_invoice")
    assert len(new_ids) == 2, f"sandbox mutate answered {created!r}"

    # 3. the report is DRIFT and lists exactly those records
    invoices_only = {**period, "streams": ["invoices"]}
    found = _run(conn, sandbox, invoices_only).reports[-1]
    assert found.status == "DRIFT"
    items = drift.get_items(conn, found.report_id, limit=1000)
    listed = sorted((i["kind"], i["source_id"]) for i in items)
    expected = sorted(
        [("missing_in_erp", r[0]) for r in deleted]
        + [("missing_in_erp", i) for i in new_ids]
        + [("amount_mismatch", r[0]) for r in bumped]
        + [("status_mismatch", restatused[0])]
        + [("missing_in_saas", "in_never_in_saas")]
    )
    assert listed == expected
    by_id = {i["source_id"]: i for i in items}
    assert by_id[bumped[0][0]]["difference"] == "1.000" and by_id[bumped[1][0]]["difference"] == "0.001"
    assert by_id["in_never_in_saas"]["erp_batch_id"] == 999999
    assert (by_id[restatused[0]]["saas_status"], by_id[restatused[0]]["erp_status"]) == ("open", "paid")

    # per-currency differences, exact to the minor unit
    truth = sandbox.admin.truth(objects=True)
    new_objs = {o["id"]: o for o in truth["objects"]["invoices"] if o["id"] in new_ids}
    expected_diff: dict[str, Decimal] = {"USD": Decimal("12.34"), "JPY": Decimal(1), "KWD": Decimal("0.001")}
    for (_, amount, _), cur_code in zip(deleted, ("USD", "JPY", "KWD"), strict=True):
        expected_diff[cur_code] -= amount
    for obj in new_objs.values():
        code = obj["currency"].upper()
        expected_diff[code] = expected_diff.get(code, Decimal(0)) - Decimal(obj["total"]).scaleb(
            -currency_exponent(code)
        )
    stored = drift.get_report(conn, found.report_id)
    assert _currency_diffs(stored) == {c: d for c, d in expected_diff.items() if d != 0}
    conn.commit()

    # 4. repair: exactly the deleted, changed and unsynced records are (re)written, and the record the
    # SaaS answers as gone (404 resource_missing) is staged as a tombstone (ADR 0020); nothing else
    before_inv = _snapshot(conn, "ar_invoices")
    before_lines = _snapshot(conn, "ar_invoice_lines")
    repaired = _run(conn, sandbox, {**invoices_only, "repair": True}, redis_client=redis_client, ns=ns)
    after_inv = _snapshot(conn, "ar_invoices")
    after_lines = _snapshot(conn, "ar_invoice_lines")
    rewritten = {k for k, v in after_inv.items() if before_inv.get(k) != v}
    assert rewritten == {r[0] for r in deleted} | set(new_ids) | {r[0] for r in bumped} | {
        restatused[0],
        "in_never_in_saas",
    }
    changed_lines = {k for k, v in after_lines.items() if before_lines.get(k) != v}
    line_parents = _rows(
        conn,
        "SELECT DISTINCT invoice_source_id FROM erp_staging.ar_invoice_lines WHERE source_id = ANY(%s)",
        (list(changed_lines),),
    )
    assert {r[0] for r in line_parents} == set(new_ids)  # only the new invoices' lines were written
    # the loader cannot delete: the row stays, as a tombstone
    assert _rows(
        conn, "SELECT interface_status FROM erp_staging.ar_invoices WHERE source_id = 'in_never_in_saas'"
    ) == [("DELETED",)]

    final = repaired.reports[-1]
    assert final.status == "OK", final.message
    assert drift.get_items(conn, final.report_id) == []
    assert drift.get_report(conn, final.report_id)["repair_of_report_id"] == found.report_id
    assert repaired.repair is not None and repaired.repair.loaded_new == len(deleted) + len(new_ids)
    assert repaired.repair.tombstones["invoices"].tombstoned == ["in_never_in_saas"]
    assert drift.verify_report(conn, final.report_id)


def test_the_report_names_the_invoices_whose_lines_do_not_add_up(
    sandbox, conn, redis_client, redis_namespace
):
    """An invoice left without its lines: the stored report's invariants say which (ADR 0024), in the
    JSON the UI and the backup show, while its figures still agree with the SaaS."""
    end = _full_sync(sandbox, conn, redis_client, redis_namespace)
    [(invoice,)] = _rows(conn, "SELECT min(invoice_source_id) FROM erp_staging.ar_invoice_lines")
    _rows(
        conn, "DELETE FROM erp_staging.ar_invoice_lines WHERE invoice_source_id = %s RETURNING 1", (invoice,)
    )
    conf = {"period_start": "2020-01-01T00:00:00Z", "period_end": end.isoformat(), "streams": ["invoices"]}
    report = _run(conn, sandbox, conf).reports[-1]
    stored = drift.get_report(conn, report.report_id)
    conn.rollback()
    assert report.status == "OK" and stored["invariants"]["invoice_lines_sum_to_subtotal"] is False
    assert stored["invariants"]["violations"] == {
        "invoice_lines_sum_to_subtotal": {"count": 1, "first": [invoice]}
    }
    assert drift.verify_report(conn, report.report_id)


def test_empty_period_is_ok_with_zero_counts(sandbox, conn):
    outcome = _run(
        conn, sandbox, {"period_start": "2001-01-01T00:00:00Z", "period_end": "2001-02-01T00:00:00Z"}
    )
    report = outcome.reports[-1]
    assert report.status == "OK"
    assert report.result.totals == [] and sum(report.item_counts.values()) == 0
    assert all(s.saas_records == 0 and s.erp_records == 0 for s in report.result.streams)
    assert drift.get_report(conn, report.report_id)["item_count"] == 0


def test_impossible_period_fails_before_any_read(sandbox, conn):
    sandbox.admin.reset_counts()
    with pytest.raises(InvalidParamError, match=r"period_end .* is before period_start"):
        _run(conn, sandbox, {"period_start": "2026-11-10T00:00:00Z", "period_end": "2026-11-01T00:00:00Z"})
    assert sandbox.admin.request_counts()["total"] == 0
    assert _rows(conn, "SELECT count(*) FROM erp_sync.drift_reports") == [(0,)]


POSTED_SQL = """
SELECT doc_ref AS source_id, ccy AS currency_code, doc_status AS status, gross AS total_amount,
       NULL::bigint AS sync_batch_id
  FROM erp_posted.ar_documents
 WHERE doc_date >= %(period_start)s AND doc_date < %(period_end)s
"""


def test_configured_sql_over_posted_tables_is_the_erp_side(sandbox, conn, redis_client, redis_namespace):
    end = _full_sync(sandbox, conn, redis_client, redis_namespace)
    with conn.cursor() as cur:  # the ERP's importer posted every staged invoice under its own names
        cur.execute(
            """CREATE SCHEMA erp_posted;
               CREATE TABLE erp_posted.ar_documents AS
               SELECT source_id AS doc_ref, currency_code AS ccy, status AS doc_status,
                      total_amount AS gross, issued_at AS doc_date FROM erp_staging.ar_invoices"""
        )
    conn.commit()
    conf = {
        "period_start": "2020-01-01T00:00:00Z",
        "period_end": end.isoformat(),
        "streams": ["invoices"],
        "erp_sql": {"invoices": POSTED_SQL},
    }
    assert _run(conn, sandbox, conf).reports[-1].status == "OK"

    with conn.cursor() as cur:  # the importer lost one document: staging is intact, the ERP is not
        cur.execute(
            "DELETE FROM erp_posted.ar_documents WHERE doc_ref = (SELECT min(doc_ref) FROM erp_posted.ar_documents)"
        )
        cur.execute("SELECT min(source_id) FROM erp_staging.ar_invoices")
        lost = cur.fetchone()[0]
    conn.commit()
    outcome = _run(conn, sandbox, conf).reports[-1]
    assert outcome.status == "DRIFT"
    assert [(i["kind"], i["source_id"]) for i in drift.get_items(conn, outcome.report_id)] == [
        ("missing_in_erp", lost)
    ]
    assert drift.get_report(conn, outcome.report_id)["sources"]["erp"]["invoices"]["sql"] == "configured"
    assert _run(conn, sandbox, {**conf, "erp_sql": {}}).reports[-1].status == "OK"  # staging still agrees


def test_sync_window_of_the_triggering_runs_comes_from_their_batches(conn):
    from erp_sync.reconcile_run import sync_window_for_runs

    with conn.cursor() as cur:
        for batch_id, run_id, start, end in (
            (1, "scheduled__a", "2026-11-25T01:50:00Z", "2026-11-26T02:00:00Z"),
            (2, "scheduled__a", "2026-11-25T01:55:00Z", "2026-11-26T02:00:00Z"),
            (3, "other", "2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z"),
        ):
            cur.execute(
                """INSERT INTO erp_sync.sync_batches (batch_id, run_id, source_system, stream, window_start,
                       window_end, input_sha256, extracted, loaded_new, loaded_changed, skipped_unchanged,
                       rejected) VALUES (%s, %s, 'stripe', 'invoices', %s, %s, repeat('a', 64), 0, 0, 0, 0, 0)""",
                (batch_id, run_id, start, end),
            )
    conn.commit()
    window = sync_window_for_runs(conn, ["scheduled__a"])
    assert window == (datetime(2026, 11, 25, 1, 50, tzinfo=UTC), datetime(2026, 11, 26, 2, tzinfo=UTC))
    assert sync_window_for_runs(conn, ["never-ran"]) is None


def test_a_failed_read_is_stored_as_an_error_report_and_raised(sandbox, conn):
    from erp_sync.clients.errors import AuthenticationError

    wrong_key = SaaSClient(sandbox.base_url, BearerSecretKey("sk_test_wrong"), page_size=50)
    request = parse_request({"streams": ["invoices"]}, now=datetime.now(UTC))
    with pytest.raises(AuthenticationError):
        run_request(
            conn=conn, clients=SourceClients({"stripe": wrong_key}), request=request, run_id="reconcile-error"
        )
    report = drift.list_reports(conn)[0]
    assert report["status"] == "ERROR" and report["item_count"] == 0
    assert "AuthenticationError" in report["error_message"] and "401" in report["error_message"]
    assert "sk_test_wrong" not in report["error_message"]


def test_a_period_spilled_to_disk_gives_the_same_report(
    sandbox, conn, redis_client, redis_namespace, monkeypatch, tmp_path
):
    import tempfile

    from erp_sync.core import reconcile as core

    end = _full_sync(sandbox, conn, redis_client, redis_namespace)
    with conn.cursor() as cur:  # drift of every kind: missing, amount, status
        cur.execute(
            "DELETE FROM erp_staging.ar_invoice_lines WHERE invoice_source_id IN "
            "(SELECT source_id FROM erp_staging.ar_invoices ORDER BY source_id LIMIT 2)"
        )
        cur.execute(
            "DELETE FROM erp_staging.ar_invoices WHERE source_id IN "
            "(SELECT source_id FROM erp_staging.ar_invoices ORDER BY source_id LIMIT 2)"
        )
        cur.execute(
            "UPDATE erp_staging.ar_invoices SET total_amount = total_amount + 1 WHERE source_id = "
            "(SELECT max(source_id) FROM erp_staging.ar_invoices)"
        )
        cur.execute(
            "UPDATE erp_staging.ar_receipts SET status = 'failed' WHERE source_id = "
            "(SELECT min(source_id) FROM erp_staging.ar_receipts)"
        )
    conn.commit()  # fmt: skip
    period = {"period_start": "2020-01-01T00:00:00Z", "period_end": end.isoformat()}
    in_memory = _run(conn, sandbox, period).reports[-1]
    assert in_memory.status == "DRIFT" and sum(in_memory.item_counts.values()) >= 4

    monkeypatch.setattr(core, "SPILL_ROWS", 40)  # every side spills; compared 40 rows at a time
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spilled = _run(conn, sandbox, period).reports[-1]
    assert any(s.saas_records > 80 for s in spilled.result.streams)
    assert spilled.content_sha256 == in_memory.content_sha256
    items = [drift.get_items(conn, r.report_id) for r in (spilled, in_memory)]
    assert [[dict(i, report_id=0) for i in found] for found in items] == [
        [dict(i, report_id=0) for i in items[1]]
    ] * 2
    assert list(tmp_path.iterdir()) == [], "the spilled sides' directories must be removed"

    wrong_key = SaaSClient(sandbox.base_url, BearerSecretKey("sk_test_wrong"), page_size=50)
    with pytest.raises(Exception, match="401"):  # the ERP side spilled, then the SaaS read failed
        run_request(
            conn=conn,
            clients=SourceClients({"stripe": wrong_key}),
            request=parse_request(period, now=datetime.now(UTC)),
        )
    assert list(tmp_path.iterdir()) == []


def _hold_invoices_lock_with_drift(dsn: str, held: threading.Event, release: threading.Event) -> None:
    """What a sync in the middle of a window looks like from outside: the invoices load lock held and
    three invoices already rewritten (here: one minor unit more), put back before the lock is let go."""
    other = psycopg2.connect(dsn)
    try:
        with stream_lock(other, "stripe", "invoices", timeout_s=30), other.cursor() as cur:
            cur.execute(
                "UPDATE erp_staging.ar_invoices SET total_amount = total_amount + 1 WHERE source_id IN"
                " (SELECT source_id FROM erp_staging.ar_invoices ORDER BY source_id LIMIT 3)"
            )
            other.commit()
            held.set()
            release.wait(30)
            cur.execute(
                "UPDATE erp_staging.ar_invoices SET total_amount = total_amount - 1 WHERE source_id IN"
                " (SELECT source_id FROM erp_staging.ar_invoices ORDER BY source_id LIMIT 3)"
            )
            other.commit()
    finally:
        other.close()


@contextmanager
def _sync_in_progress(dsn: str) -> Iterator[threading.Event]:
    """A sync of invoices caught mid-window (`_hold_invoices_lock_with_drift`) until the event is set."""
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_invoices_lock_with_drift, args=(dsn, held, release))
    holder.start()
    try:
        assert held.wait(30)
        yield release
    finally:
        release.set()
        holder.join(30)


def _synced_period(sandbox: SandboxHandle, conn: Any, redis_client: redis.Redis, ns: str) -> Any:
    end = _full_sync(sandbox, conn, redis_client, ns)
    return parse_request({"period_start": "2020-01-01T00:00:00Z", "period_end": end.isoformat()}, now=end)


def test_a_reconciliation_waits_for_a_running_sync_of_its_streams(
    sandbox, conn, redis_client, redis_namespace, migrated_pg_dsn
):
    request = _synced_period(sandbox, conn, redis_client, redis_namespace)
    with _sync_in_progress(migrated_pg_dsn) as release, ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(reconcile_period, conn=conn, clients=_clients(sandbox), request=request)
        time.sleep(1.5)
        assert not outcome.done()  # waiting for the lock, not reading a half-loaded window
        release.set()
        report = outcome.result(timeout=120)
    assert report.status == "OK", report.message


def test_a_reconciliation_that_cannot_get_the_lock_stores_an_error_naming_it(
    sandbox, conn, redis_client, redis_namespace, migrated_pg_dsn
):
    request = _synced_period(sandbox, conn, redis_client, redis_namespace)
    with _sync_in_progress(migrated_pg_dsn):
        sandbox.admin.reset_counts()
        with pytest.raises(StreamLockedError, match="stream stripe/invoices is being loaded by another run"):
            reconcile_period(conn=conn, clients=_clients(sandbox), request=request, lock_timeout_s=0.5)
    latest = _rows(
        conn, "SELECT status, error_message FROM erp_sync.drift_reports ORDER BY report_id DESC LIMIT 1"
    )
    assert latest[0][0] == "ERROR" and "stripe/invoices" in latest[0][1]
    assert sandbox.admin.request_counts()["total"] == 0  # nothing was read


def test_an_invoice_created_before_the_period_and_finalized_in_it_is_on_both_sides(
    sandbox, conn, redis_client, redis_namespace
):
    """The SaaS side lists by `created`; an invoice counts in the period it was issued (finalized).
    Stripe finalizes a draft about an hour after creating it, so a period starting between the two
    has the invoice on the ERP side: the default lookback lists it on the SaaS side too."""
    end = _full_sync(sandbox, conn, redis_client, redis_namespace)
    straddling = [
        inv
        for inv in sandbox.admin.truth()["objects"]["invoices"]
        if inv["effective_at"] is not None and inv["created"] < inv["effective_at"]
    ]
    assert straddling, "the seeded data has invoices finalized after they were created"
    invoice = straddling[0]
    start = datetime.fromtimestamp(invoice["effective_at"], UTC)
    period = {"period_start": start.isoformat(), "period_end": end.isoformat(), "streams": ["invoices"]}

    listed_only = {**period, "saas_lookback_days": 0, "lookup_missing_limit": 0}
    listed_by_created_only = _run(conn, sandbox, listed_only).reports[-1]
    assert listed_by_created_only.status != "OK"
    missing = drift.get_items(conn, listed_by_created_only.report_id, kind="missing_in_saas", limit=1000)
    assert invoice["id"] in {item["source_id"] for item in missing}

    default = _run(conn, sandbox, period).reports[-1]
    assert default.status == "OK", default.message
    assert parse_request(period, now=datetime.now(UTC)).saas_lookback == timedelta(days=1)


def test_an_invoice_finalized_long_after_its_creation_is_looked_up_by_id_and_compared(
    sandbox, conn, redis_client, redis_namespace
):
    """No lookback covers every draft: one finalized days after it was created is dated in the period
    but listed before it. Asked for by id, it is compared like a listed record (an ERP amount that
    differs is an amount_mismatch, not a record missing in the SaaS); with lookups off it is missing."""
    now = int(time.time())
    sandbox.admin.mutate(1, at=now - 5 * 86_400, kinds=["new_draft_invoice"])
    change = sandbox.admin.mutate(1, at=now - 3_600, kinds=["finalize_draft_invoice"])["applied"][0]
    assert change["kind"] == "finalize_draft_invoice", change
    end = _full_sync(sandbox, conn, redis_client, redis_namespace)
    truth = {inv["id"]: inv for inv in sandbox.admin.truth()["objects"]["invoices"]}
    invoice = truth[change["id"]]
    assert invoice["effective_at"] == now - 3_600 and invoice["created"] < invoice["effective_at"]
    start = datetime.fromtimestamp(invoice["effective_at"], UTC)
    period = {
        "period_start": start.isoformat(), "period_end": end.isoformat(), "streams": ["invoices"],
        "saas_lookback_days": 0,
    }  # fmt: skip

    looked_up = _run(conn, sandbox, period).reports[-1]
    assert looked_up.status == "OK", looked_up.message
    account = drift.get_report(conn, looked_up.report_id)["sources"]["saas"]["invoices"]["looked_up_by_id"]
    assert account["asked"] >= 1 and account["found_in_period"] == account["asked"], account

    _rows(
        conn,
        "UPDATE erp_staging.ar_invoices SET total_amount = total_amount + 1 WHERE source_id = %s"
        " RETURNING source_id",
        (invoice["id"],),
    )
    tampered = _run(conn, sandbox, period).reports[-1]
    items = drift.get_items(conn, tampered.report_id, limit=1000)
    assert {(i["source_id"], i["kind"]) for i in items} == {(invoice["id"], "amount_mismatch")}

    not_looked_up = _run(conn, sandbox, {**period, "lookup_missing_limit": 0}).reports[-1]
    missing = drift.get_items(conn, not_looked_up.report_id, kind="missing_in_saas", limit=1000)
    assert invoice["id"] in {item["source_id"] for item in missing}
    account = drift.get_report(conn, not_looked_up.report_id)["sources"]["saas"]["invoices"][
        "looked_up_by_id"
    ]
    assert account["asked"] == 0 and account["over_limit"] >= 1, account
