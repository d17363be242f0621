"""ADR 0017's lookups through the real client: a 404 `resource_missing` counts the record not found; a
404 that does not say the record is missing (an API without Stripe's code, or a wrong by-id path)
leaves the records `missing_in_saas`, counted `unconfirmed`, without failing the report; a stream that
declares no by-id path (the orders example) is not asked at all (ADR 0023)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from erp_sync.clients import BearerSecretKey, SaaSClient
from erp_sync.core.reconcile import LookedUp
from erp_sync.reconcile_run import LookupStats, _looked_up_source, lookup_by_id, parse_request
from erp_sync.streams import get_stream
from erp_sync.streams.spec import DEFAULT_RECORD_PATH, StreamSpec
from tests.unit.clients.client_fakes import BASE, FakeTransport, json_response

PERIOD = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def _find(answer: object, spec: StreamSpec, ids: list[str]) -> tuple[int, LookupStats, FakeTransport]:
    transport = FakeTransport(handler=lambda call: answer)  # type: ignore[arg-type,return-value]
    client = SaaSClient(BASE, BearerSecretKey("sk_test_secret"), transport=transport, child_concurrency=1)
    stats = LookupStats()
    found = lookup_by_id(client, spec, *PERIOD, limit=10, stats=stats).find(ids)
    return len(found), stats, transport


def test_a_404_resource_missing_is_not_found() -> None:
    missing = json_response({"error": {"message": "No such invoice", "code": "resource_missing"}}, status=404)
    found, stats, _ = _find(missing, get_stream("invoices"), ["in_1", "in_2"])
    assert (found, stats.not_found, stats.unconfirmed) == (0, 2, 0)


def test_a_404_without_the_code_is_unconfirmed_and_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """What the sandbox's orders API answers for `/api/v2/orders/{id}` (it has no such path), were the
    stream declared with Stripe's by-id path."""
    no_route = {"error": "not_found", "error_description": "no route for GET /api/v2/orders/ord_1"}
    misdeclared = replace(get_stream("orders"), record_path=DEFAULT_RECORD_PATH)
    with caplog.at_level(logging.WARNING, logger="erp_sync.reconcile_run"):
        found, stats, transport = _find(json_response(no_route, status=404), misdeclared, ["ord_1", "ord_2"])
    assert (found, stats.not_found, stats.unconfirmed) == (0, 0, 2)
    assert len(transport.calls) == 1  # the first such answer ends the stream's lookups
    warning = caplog.records[-1].getMessage()
    assert f"GET {BASE}/api/v2/orders/ord_1" in warning and "does not say the record is missing" in warning


def test_a_stream_without_a_by_id_path_is_not_asked_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="erp_sync.reconcile_run"):
        found, stats, transport = _find(None, get_stream("orders"), ["ord_1", "ord_2"])
    assert (found, stats.not_looked_up, stats.unconfirmed, stats.not_found) == (0, 2, 0, 0)
    assert transport.calls == []
    warning = caplog.records[-1].getMessage()
    assert warning.startswith("reconcile orders: 2 records missing in the SaaS not looked up by id")
    assert "declares no by-id path (record_path=None)" in warning


def test_the_report_counts_them_not_looked_up_with_the_reason() -> None:
    request = parse_request({"streams": ["orders"]}, now=PERIOD[1])
    stats = LookupStats(not_looked_up=3)
    account = _looked_up_source(LookedUp(asked=3, unasked=2), stats, request)
    assert account == {
        "limit": 1_000, "asked": 0, "found_in_period": 0, "not_found": 0, "outside_period": 0,
        "rejected": 0, "unconfirmed": 0, "over_limit": 2, "not_looked_up": 3, "reason": "no_by_id_lookup",
    }  # fmt: skip
    asked = _looked_up_source(LookedUp(asked=3, found=1), LookupStats(not_found=2), request)
    assert "not_looked_up" not in asked and "reason" not in asked and asked["asked"] == 3
