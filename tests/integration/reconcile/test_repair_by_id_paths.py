"""The repair and each stream's by-id path (ADR 0023), against real Postgres, Redis and the sandbox,
reconciling a Stripe stream (invoices) and the orders API (which has no route for one order) through
one OAuth2 connection. Streams are repaired in name order, so invoices is written before orders: a
by-id path that does not answer fails the repair before invoices is written, and a stream that
declares none is re-sent from a re-listing of the period (ADR 0024) while invoices is repaired by id."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from erp_sync.clients.auth import OAuth2ClientCredentials
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.errors import UnconfirmedNotFoundError
from erp_sync.clients.sources import SourceClients
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.reconcile_run import parse_request, run_request
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store import drift
from erp_sync.streams import STREAMS
from erp_sync.streams.spec import DEFAULT_RECORD_PATH
from tests.integration.reconcile.repair_checks import (
    control_rows,
    ledger_entries,
    sql_rows,
    staging,
    tamper_an_open_invoice,
    unsync_a_paid_invoice,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM_NAMES = ("invoices", "orders")
TABLES = ("ar_invoices", "ar_invoice_lines", "sales_orders")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=80, seed=12, oauth=True) as handle:
        yield handle


def _client(sandbox: SandboxHandle) -> SaaSClient:
    auth = OAuth2ClientCredentials(sandbox.token_url, sandbox.client_id, sandbox.client_secret)
    return SaaSClient(sandbox.base_url, auth, page_size=50)


def _clients(sandbox: SandboxHandle) -> SourceClients:
    """One OAuth2 sandbox serves both source systems here (the routing is tested in test_source_connections)."""
    client = _client(sandbox)
    return SourceClients({"stripe": client, "orders_api": client})


def _synced(sandbox: SandboxHandle, conn: Any, redis_client: redis.Redis, ns: str) -> dict[str, Any]:
    """Both streams fully synced; the whole history as the period to reconcile."""
    end = datetime.now(UTC) + timedelta(days=1)
    for name in STREAM_NAMES:
        sync_stream(
            spec=STREAMS[name], client=_client(sandbox), conn=conn, redis_client=redis_client,
            run_id=f"sync-{time.monotonic_ns()}", namespace=ns, batch_records=100,
            window=WindowRequest(full_refresh=True, window_end=end),
        )  # fmt: skip
    return {
        "period_start": "2020-01-01T00:00:00Z",
        "period_end": end.isoformat(),
        "streams": list(STREAM_NAMES),
    }


def _run(
    conn: Any, sandbox: SandboxHandle, conf: dict[str, Any], redis_client: Any = None, ns: str = "erpsync"
) -> Any:
    return run_request(
        conn=conn, clients=_clients(sandbox), request=parse_request(conf, now=datetime.now(UTC)),
        redis_client=redis_client, namespace=ns, run_id="reconcile-test",
    )  # fmt: skip


def _unsync_an_order(conn: Any) -> str:
    """Delete an order's staging row: the next report finds it `missing_in_erp`."""
    [(source_id,)] = sql_rows(
        conn,
        "DELETE FROM erp_staging.sales_orders WHERE source_id = (SELECT max(source_id)"
        " FROM erp_staging.sales_orders) RETURNING source_id",
    )
    return str(source_id)


def _items(conn: Any, report_id: int) -> set[tuple[str, str, str]]:
    items = drift.get_items(conn, report_id, limit=10_000)
    conn.rollback()
    return {(i["stream"], i["kind"], i["source_id"]) for i in items}


def _order_the_saas_never_had(conn: Any) -> str:
    """A staging order the orders API never listed: the next report finds it `missing_in_saas`."""
    [(source_id,)] = sql_rows(
        conn,
        "INSERT INTO erp_staging.sales_orders (source_system, source_id, customer_ref, status, currency_code,"
        " total_amount, ordered_at, row_sha256, source_version, sync_batch_id) SELECT source_system,"
        " 'ord_never_in_saas', customer_ref, status, currency_code, total_amount, ordered_at, row_sha256,"
        " source_version, sync_batch_id FROM erp_staging.sales_orders ORDER BY source_id LIMIT 1"
        " RETURNING source_id",
    )
    return str(source_id)


def _orders_asked_by_id(sandbox: SandboxHandle) -> dict[str, int]:
    routes = sandbox.admin.request_counts()["by_route"]
    return {route: n for route, n in routes.items() if route.startswith("GET /api/v2/orders/")}


def test_a_later_stream_whose_by_id_path_does_not_answer_fails_the_repair_before_any_write(
    sandbox, conn, redis_client, redis_namespace, monkeypatch
):
    """Orders declared with Stripe's by-id path, which the orders API lacks: its 404 says nothing about
    the record. The repair fails naming that URL before invoices, repaired first, is written: no batch,
    no ledger eviction, no invalidated row, no report."""
    ns = redis_namespace
    period = _synced(sandbox, conn, redis_client, ns)
    invoice, tampered = unsync_a_paid_invoice(conn), tamper_an_open_invoice(conn)
    order = _unsync_an_order(conn)
    found = _run(conn, sandbox, period).reports[-1]
    assert {
        ("invoices", "missing_in_erp", invoice), ("invoices", "amount_mismatch", tampered),
        ("orders", "missing_in_erp", order),
    } <= _items(conn, found.report_id)  # fmt: skip
    monkeypatch.setitem(STREAMS, "orders", replace(STREAMS["orders"], record_path=DEFAULT_RECORD_PATH))
    before, controls, ledger = staging(conn, TABLES), control_rows(conn), ledger_entries(redis_client, ns)
    assert ledger
    sandbox.admin.reset_counts()

    with pytest.raises(UnconfirmedNotFoundError) as failed:
        _run(conn, sandbox, {**period, "repair": True}, redis_client, ns)

    assert _orders_asked_by_id(sandbox) == {f"GET /api/v2/orders/{order}": 1}
    text = str(failed.value)
    assert f"GET {sandbox.base_url}/api/v2/orders/{order}: HTTP 404: " in text, text
    assert "does not say the record is missing" in text
    assert staging(conn, TABLES) == before and control_rows(conn) == controls  # the hashes too
    assert ledger_entries(redis_client, ns) == ledger
    assert not sql_rows(conn, "SELECT 1 FROM erp_staging.ar_invoices WHERE source_id = %s", (invoice,))


def _tamper_an_order(conn: Any) -> str:
    """Change an order's total in staging: the next report finds it `amount_mismatch`."""
    [(source_id,)] = sql_rows(
        conn,
        "UPDATE erp_staging.sales_orders SET total_amount = total_amount + 1 WHERE source_id = (SELECT"
        " min(source_id) FROM erp_staging.sales_orders) RETURNING source_id",
    )
    return str(source_id)


def _order_totals(conn: Any) -> dict[str, Any]:
    return dict(sql_rows(conn, "SELECT source_id, total_amount FROM erp_staging.sales_orders"))


def test_a_stream_without_a_by_id_path_is_re_sent_from_a_re_listing_and_its_gone_records_are_left_saying_why(
    sandbox, conn, redis_client, redis_namespace, caplog
):
    """Orders as declared (no by-id path): no request by id, from the report's lookups, the repair's
    tombstone lookups or its re-sends. Its records missing in the ERP or mismatched are re-sent from a
    re-listing of the period (ADR 0024), through the same load as invoices' by-id re-sends; its record
    missing in the SaaS is left, counted, with the reason: a listing cannot tell it gone."""
    ns = redis_namespace
    period = _synced(sandbox, conn, redis_client, ns)
    synced_totals = _order_totals(conn)
    invoice, order, tampered, phantom = (
        unsync_a_paid_invoice(conn),
        _unsync_an_order(conn),
        _tamper_an_order(conn),
        _order_the_saas_never_had(conn),
    )
    sandbox.admin.reset_counts()

    with caplog.at_level(logging.WARNING, logger="erp_sync.reconcile_run"):
        found = _run(conn, sandbox, period).reports[-1]
        assert _items(conn, found.report_id) == {
            ("invoices", "missing_in_erp", invoice), ("orders", "missing_in_erp", order),
            ("orders", "amount_mismatch", tampered), ("orders", "missing_in_saas", phantom),
        }  # fmt: skip
        account = drift.get_report(conn, found.report_id)["sources"]["saas"]["orders"]["looked_up_by_id"]
        conn.rollback()
        repaired = _run(conn, sandbox, {**period, "repair": True}, redis_client, ns)

    assert _orders_asked_by_id(sandbox) == {}
    assert (account["asked"], account["unconfirmed"]) == (0, 0)
    assert (account["not_looked_up"], account["reason"]) == (1, "no_by_id_lookup")
    skipped = {"orders": {"reason": "no_by_id_lookup", "not_resent": 0, "not_looked_up": 1}}
    assert repaired.repair.summary()["skipped"] == skipped
    assert repaired.xcom()["repair"]["skipped"] == skipped
    assert "orders" not in repaired.repair.tombstones
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        w.startswith("reconcile orders: 1 records missing in the SaaS not looked up by id") for w in warnings
    )
    [left_warning] = [w for w in warnings if w.startswith("repair orders:")]
    assert (
        "1 records missing in the SaaS not looked up" in left_warning
        and "stay missing_in_saas" in left_warning
    )

    # Both streams are re-sent: the missing invoice and order staged again, the tampered order rewritten.
    assert repaired.repair.requested == {"invoices": 1, "orders": 2}
    assert (repaired.repair.loaded_new, repaired.repair.loaded_changed) == (2, 1)
    assert sql_rows(conn, "SELECT 1 FROM erp_staging.ar_invoices WHERE source_id = %s", (invoice,)) == [(1,)]
    assert {k: v for k, v in _order_totals(conn).items() if k != phantom} == synced_totals
    recheck = repaired.reports[-1]
    assert _items(conn, recheck.report_id) == {("orders", "missing_in_saas", phantom)}
    stored = drift.get_report(conn, recheck.report_id)
    conn.rollback()
    assert stored["summary"]["repair"]["skipped"] == skipped and drift.verify_report(conn, recheck.report_id)


def _line_hashes(conn: Any, invoice: str) -> dict[str, str]:
    return dict(
        sql_rows(
            conn,
            "SELECT source_id, row_sha256 FROM erp_staging.ar_invoice_lines WHERE invoice_source_id = %s",
            (invoice,),
        )
    )


def _header_hashes(conn: Any) -> dict[str, str]:
    return dict(sql_rows(conn, "SELECT source_id, row_sha256 FROM erp_staging.ar_invoices"))


@pytest.mark.parametrize("by_id", [True, False], ids=["by-id", "re-listing"])
def test_an_invoice_deleted_from_staging_with_its_lines_is_re_sent_with_every_line(
    sandbox, conn, redis_client, redis_namespace, monkeypatch, by_id
):
    """The invoice with the most lines, deleted from staging with its lines, and a tampered invoice.
    Its lines' ledger entries outlive the rows: the repair evicts every row of what it re-sends, so
    they are staged again, not skipped as unchanged. `re-listing`: invoices as if declared without a
    by-id path (ADR 0024's amendment): the re-listing completes the truncated line list at
    `/v1/invoices/{id}/lines`, as the sync's listing does, and nothing is asked for by id."""
    ns = redis_namespace
    period = {**_synced(sandbox, conn, redis_client, ns), "streams": ["invoices"]}
    [(longest, lines)] = sql_rows(
        conn,
        "SELECT invoice_source_id, count(*) FROM erp_staging.ar_invoice_lines"
        " GROUP BY invoice_source_id ORDER BY count(*) DESC, invoice_source_id LIMIT 1",
    )
    assert lines > 10, "the seed has an invoice whose line list a listing truncates (10 embedded)"
    synced_lines, synced_headers = _line_hashes(conn, longest), _header_hashes(conn)
    sql_rows(conn, "DELETE FROM erp_staging.ar_invoice_lines WHERE invoice_source_id = %s", (longest,))
    sql_rows(conn, "DELETE FROM erp_staging.ar_invoices WHERE source_id = %s", (longest,))
    tampered = tamper_an_open_invoice(conn)
    assert tampered != longest
    if not by_id:
        monkeypatch.setitem(STREAMS, "invoices", replace(STREAMS["invoices"], record_path=None))
    found = _run(conn, sandbox, period).reports[-1]
    assert _items(conn, found.report_id) == {
        ("invoices", "missing_in_erp", longest),
        ("invoices", "amount_mismatch", tampered),
    }
    sandbox.admin.reset_counts()

    repaired = _run(conn, sandbox, {**period, "repair": True}, redis_client, ns)

    routes = sandbox.admin.request_counts()["by_route"]
    assert routes.get("GET /v1/invoices/{id}", 0) == (2 if by_id else 0)
    assert routes.get("GET /v1/invoices/{id}/lines", 0) >= 1  # the truncated list completed
    assert repaired.repair.requested == {"invoices": 2} and repaired.repair.not_found == {}
    assert (repaired.repair.loaded_new, repaired.repair.loaded_changed) == (1, 1)
    assert repaired.repair.summary()["skipped"] == {}
    assert _line_hashes(conn, longest) == synced_lines  # every line, as the sync staged it
    assert _header_hashes(conn) == synced_headers
    recheck = repaired.reports[-1]
    assert recheck.status == "OK" and _items(conn, recheck.report_id) == set(), recheck.message
