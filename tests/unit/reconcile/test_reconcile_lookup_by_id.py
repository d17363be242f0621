"""ADR 0017's lookups through the real client: a 404 `resource_missing` counts the record not found; a
404 that does not say the record is missing (an API without Stripe's code, or no by-id path, as the
orders example) leaves the records `missing_in_saas`, counted `unconfirmed`, without failing the report."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from erp_sync.clients import BearerSecretKey, SaaSClient
from erp_sync.reconcile_run import LookupStats, lookup_by_id
from erp_sync.streams import get_stream
from tests.unit.clients.client_fakes import BASE, FakeTransport, json_response

PERIOD = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def _find(answer: object, stream: str, ids: list[str]) -> tuple[int, LookupStats, FakeTransport]:
    transport = FakeTransport(handler=lambda call: answer)  # type: ignore[arg-type,return-value]
    client = SaaSClient(BASE, BearerSecretKey("sk_test_secret"), transport=transport, child_concurrency=1)
    stats = LookupStats()
    found = lookup_by_id(client, get_stream(stream), *PERIOD, limit=10, stats=stats).find(ids)
    return len(found), stats, transport


def test_a_404_resource_missing_is_not_found() -> None:
    missing = json_response({"error": {"message": "No such invoice", "code": "resource_missing"}}, status=404)
    found, stats, _ = _find(missing, "invoices", ["in_1", "in_2"])
    assert (found, stats.not_found, stats.unconfirmed) == (0, 2, 0)


def test_a_404_without_the_code_is_unconfirmed_and_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """What the sandbox's orders API answers for `/api/v2/orders/{id}` (it has no such path)."""
    no_route = {"error": "not_found", "error_description": "no route for GET /api/v2/orders/ord_1"}
    with caplog.at_level(logging.WARNING, logger="erp_sync.reconcile_run"):
        found, stats, transport = _find(json_response(no_route, status=404), "orders", ["ord_1", "ord_2"])
    assert (found, stats.not_found, stats.unconfirmed) == (0, 0, 2)
    assert len(transport.calls) == 1  # the first such answer ends the stream's lookups
    warning = caplog.records[-1].getMessage()
    assert f"GET {BASE}/api/v2/orders/ord_1" in warning and "does not say the record is missing" in warning
